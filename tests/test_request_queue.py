"""The durable request queue on real SQLite, and the dispatcher over it with stub instances.

RequestsRepo: accept is committed before it returns, FIFO per version, lease / requeue / ack,
lease expiry (and failing after too many attempts), purge, expiry of uncollected results.
Dispatcher (stub capacity and forwarder, the real store): FIFO per version within the
instances' slots, retry of a request that never reached its container on another instance,
recovery after a crash, refusal for undeployed versions, the "why it waits" note, and the
cancellation of abandoned requests (queued or in flight).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from capacity_support import StubCapacity

from nvcf_lite.domain.invocation_rules import client_path
from nvcf_lite.domain.invocations import Invocations, Pending, Ticket, VersionInfo
from nvcf_lite.errors import NotFound, Unavailable
from nvcf_lite.models import (
    SCOPES,
    FunctionStatus,
    InstanceState,
    KeyResource,
    Outcome,
    Principal,
    RequestRecord,
    RequestState,
    new_id,
)
from nvcf_lite.store.requests import RequestsRepo
from nvcf_lite.store.sqlite import Database
from nvcf_lite.workers.backlog import Backlog
from nvcf_lite.workers.dispatcher import Dispatcher
from nvcf_lite.workers.forwarding import NeverReached
from nvcf_lite.workers.instances import Instance
from nvcf_lite.workers.tasks import TaskSet

FID = new_id()
V1, V2 = new_id(), new_id()


def record(version_id: str = V1, **overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": new_id(),
        "function_id": FID,
        "version_id": version_id,
        "nca_id": "acct",
        "key_id": "k1",
        "method": "POST",
        "path": "/echo",
        "headers": [("x-a", "1")],
        "body": b'{"n": 1}',
        "poll_seconds": 5,
        "mode": "pexec",
        "accepted_at": time.time(),
        **overrides,
    }
    return RequestRecord(**values)


@pytest.fixture
async def store(db: Database) -> AsyncIterator[RequestsRepo]:
    s = RequestsRepo(db)
    s.start()
    yield s
    await s.close()


def raw_rows(db: Database) -> dict[str, dict[str, Any]]:
    """The rows as another process sees them (a fresh stdlib connection)."""
    conn = sqlite3.connect(db.path)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM requests ORDER BY seq").fetchall()
        return {r["request_id"]: dict(r) for r in rows}
    finally:
        conn.close()


# -- the store -----------------------------------------------------------------------------------


async def test_accept_is_committed_before_it_returns(db: Database, store: RequestsRepo) -> None:
    rec = record()
    await store.accept(rec)
    row = raw_rows(db)[rec.request_id]
    assert row["state"] == "queued" and row["attempts"] == 0
    assert bytes(row["body"]) == b'{"n": 1}'
    stored = await store.get(rec.request_id)
    assert stored is not None
    got, outcome = stored
    assert outcome is None
    assert got.headers == [("x-a", "1")] and got.body == rec.body and got.mode == "pexec"


async def test_many_concurrent_accepts_share_commits_and_all_land(
    db: Database, store: RequestsRepo
) -> None:
    recs = [record(V1 if i % 2 else V2) for i in range(300)]
    await asyncio.gather(*(store.accept(r) for r in recs))
    assert len(raw_rows(db)) == 300


async def test_an_accept_waits_off_the_loop_while_another_process_holds_the_write_lock(
    db: Database, store: RequestsRepo
) -> None:
    """Batches commit on the event loop's thread; when an admin command (another process)
    holds the write lock, the batch waits for it on the writer's thread instead: the loop
    keeps running and the accept lands once the lock is free."""
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    rec = record()
    accepted = asyncio.ensure_future(store.accept(rec))
    started = time.monotonic()
    for _ in range(20):  # the loop is free while the accept waits for the lock
        await asyncio.sleep(0.01)
    assert time.monotonic() - started < 1.0 and not accepted.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(accepted, 10)
    assert raw_rows(db)[rec.request_id]["state"] == "queued"


async def test_the_wal_is_checkpointed_off_the_commits(
    db: Database, store: RequestsRepo, tmp_path: Path
) -> None:
    """The server's writer never checkpoints inside a commit (a checkpoint writes and fsyncs
    the database file); the checkpoint loop copies the WAL into the main file soon after."""
    rec = record()
    await store.accept(rec)
    found = 0
    deadline = time.monotonic() + 5
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        main_only = tmp_path / f"main-only-{time.monotonic_ns()}.db"
        shutil.copyfile(db.path, main_only)  # without its -wal: what was checkpointed
        copy = sqlite3.connect(main_only)
        try:
            found = copy.execute(
                "SELECT count(*) FROM requests WHERE request_id = ?", (rec.request_id,)
            ).fetchone()[0]
        except sqlite3.OperationalError:  # not even the schema is in the main file yet
            found = 0
        finally:
            copy.close()
    assert found == 1


async def test_pending_is_fifo_per_version(store: RequestsRepo) -> None:
    a1, b1, a2, b2, a3 = record(V1), record(V2), record(V1), record(V2), record(V1)
    for rec in (a1, b1, a2, b2, a3):
        await store.accept(rec)
    ids = [r.request_id for r in await store.pending(V1)]
    assert ids == [a1.request_id, a2.request_id, a3.request_id]
    assert [r.request_id for r in await store.pending(V2)] == [b1.request_id, b2.request_id]
    everything = [r.request_id for r in await store.pending()]
    assert everything == [r.request_id for r in (a1, b1, a2, b2, a3)]
    assert await store.depth() == {V1: 3, V2: 2}


async def test_lease_requeue_keeps_the_place_in_line(db: Database, store: RequestsRepo) -> None:
    first, second = record(), record()
    await store.accept(first)
    await store.accept(second)
    store.lease(first.request_id, time.time() + 60)
    await store.flush()
    row = raw_rows(db)[first.request_id]
    assert row["state"] == "leased" and row["attempts"] == 1 and row["lease_until"] > time.time()
    store.requeue(first.request_id)
    await store.flush()
    row = raw_rows(db)[first.request_id]
    assert row["state"] == "queued" and row["lease_until"] is None and row["attempts"] == 1
    assert [r.request_id for r in await store.pending(V1)] == [
        first.request_id,
        second.request_id,
    ]


async def test_ack_keeps_the_result_only_when_asked(db: Database, store: RequestsRepo) -> None:
    kept, delivered, failed = record(), record(), record()
    for rec in (kept, delivered, failed):
        await store.accept(rec)
        store.lease(rec.request_id, time.time() + 60)
    outcome = Outcome(status=200, headers=[("content-type", "text/plain")], body=b"done")
    await store.finish(kept.request_id, outcome, keep=True)
    await store.finish(delivered.request_id, outcome, keep=False)
    await store.finish(failed.request_id, Outcome(status=500, error=True), keep=True, failed=True)
    rows = raw_rows(db)
    assert rows[kept.request_id]["state"] == "done"
    assert rows[failed.request_id]["state"] == "failed"
    assert bytes(rows[kept.request_id]["body"]) == b""  # the input is not kept after the end
    assert delivered.request_id not in rows  # delivered on its connection: acked by deletion
    stored = await store.get(kept.request_id)
    assert stored is not None and stored[1] == outcome
    assert stored[0].state == RequestState.DONE
    assert await store.pending() == []
    store.purge(kept.request_id)
    await store.flush()
    assert await store.get(kept.request_id) is None


async def test_expired_leases_return_to_the_queue_or_fail_after_max_attempts(
    db: Database, store: RequestsRepo
) -> None:
    stale, fresh, tired = record(), record(), record()
    for rec in (stale, fresh, tired):
        await store.accept(rec)
    now = time.time()
    store.lease(stale.request_id, now - 1)
    store.lease(fresh.request_id, now + 600)
    for _ in range(3):
        store.lease(tired.request_id, now - 1)
    await store.flush()
    requeued, failed = await store.expire_leases(now, max_attempts=3)
    assert (requeued, failed) == (1, [tired.request_id])
    rows = raw_rows(db)
    assert rows[stale.request_id]["state"] == "queued"
    assert rows[fresh.request_id]["state"] == "leased"
    # at start-up every lease is stale: its holder is gone
    requeued, failed = await store.expire_leases(math.inf, max_attempts=3)
    assert requeued == 1 and failed == [tired.request_id]
    assert raw_rows(db)[fresh.request_id]["state"] == "queued"


async def test_uncollected_results_expire(db: Database, store: RequestsRepo) -> None:
    old, new, running = record(), record(), record()
    for rec in (old, new, running):
        await store.accept(rec)
    await store.finish(old.request_id, Outcome(status=200), keep=True)
    await store.finish(new.request_id, Outcome(status=200), keep=True)
    conn = sqlite3.connect(db.path)
    conn.execute(
        "UPDATE requests SET finished_at = ? WHERE request_id = ?",
        (time.time() - 3700, old.request_id),
    )
    conn.commit()
    conn.close()
    assert await store.expire_finished(time.time() - 3600) == [old.request_id]
    assert set(raw_rows(db)) == {new.request_id, running.request_id}


# -- the dispatcher over the store, with stub instances -------------------------------------------


class StubForwarder:
    """Records (request, instance) in arrival order; each call waits until released."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, str]] = []
        self.refuse: set[str] = set()  # instance ids that are never reached
        self.gate = asyncio.Event()
        self.cancelled: list[str] = []

    def dirs(self, request_id: str) -> tuple[Path, Path]:
        return self.root / "response" / request_id, self.root / "inputAssets" / request_id

    async def forward(self, ticket: Ticket, inst: Instance) -> Outcome:
        if inst.instance_id in self.refuse:
            raise NeverReached("connection refused")
        self.calls.append((ticket.request_id, inst.instance_id))
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(ticket.request_id)
            raise
        return Outcome(status=200, body=ticket.request_id.encode())

    def cleanup(self, request_id: str, assets: bool = True) -> None:
        pass

    def progress_by_events(self, request_id: str) -> bool:
        return False

    async def close(self) -> None:
        pass


class DispatcherBench:
    """The real Dispatcher over the real store, between a StubCapacity and a StubForwarder."""

    def __init__(self, store: RequestsRepo, root: Path, ttl: float = 3600.0) -> None:
        self.store = store
        self.capacity = StubCapacity(FID)
        self.forwarder = StubForwarder(root)
        self.dispatcher = Dispatcher(
            store,
            Backlog(),
            self.capacity,
            self.forwarder,  # type: ignore[arg-type]
            ttl,
        )

    async def submit(self, version_id: str = V1, **overrides: Any) -> Ticket:
        rec = record(version_id, **overrides)
        await self.store.accept(rec)
        loop = asyncio.get_running_loop()
        ticket = Ticket(record=rec, subject="apikey:k1", done=loop.create_future())
        ticket.recorded = loop.create_future()  # written above, as a keyed accept is
        ticket.recorded.set_result(None)
        self.dispatcher.submit(ticket)
        return ticket


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def dispatch(store: RequestsRepo, tmp_path: Path) -> AsyncIterator[DispatcherBench]:
    w = DispatcherBench(store, tmp_path / "inf")
    yield w
    w.forwarder.gate.set()
    await w.dispatcher.close(grace_s=2)


async def test_fifo_per_version_within_the_slots(dispatch: DispatcherBench) -> None:
    spec = dispatch.capacity.deploy(V1, concurrency=2)
    dispatch.capacity.deploy(V2)
    inst = dispatch.capacity.add_instance(V1, spec)
    tickets = [await dispatch.submit(V1) for _ in range(5)]
    other = await dispatch.submit(V2)  # no instance for V2: it waits, with a reason
    await settle()
    assert [c[0] for c in dispatch.forwarder.calls] == [t.request_id for t in tickets[:2]]
    assert inst.in_flight == 2  # maxRequestConcurrency of the spec, not the instance's default
    assert dispatch.dispatcher.depth(V1) == 3
    assert [dispatch.dispatcher.position(t.request_id) for t in tickets] == [0, 0, 1, 2, 3]
    assert (
        tickets[2].nvcf_status == "pending-evaluation" and tickets[0].nvcf_status == "in-progress"
    )
    assert tickets[2].note == "waiting for a free instance slot"
    assert other.note == "waiting for an instance (none is running)"
    assert dispatch.dispatcher.queued_for_function(FID) == 6
    dispatch.forwarder.gate.set()
    results = await asyncio.gather(*(t.done for t in tickets))
    assert [r.body for r in results] == [t.request_id.encode() for t in tickets]
    assert [c[0] for c in dispatch.forwarder.calls] == [t.request_id for t in tickets]
    assert not other.done.done() and dispatch.dispatcher.depth(V2) == 1
    rows = {r.request_id: r.state for r in await dispatch.store.pending()}
    assert rows == {other.request_id: RequestState.QUEUED}


async def test_never_reached_is_retried_on_another_instance(dispatch: DispatcherBench) -> None:
    spec = dispatch.capacity.deploy(V1)
    dead = dispatch.capacity.add_instance(V1, spec)
    alive = dispatch.capacity.add_instance(V1, spec)
    dispatch.forwarder.refuse.add(dead.instance_id)
    dispatch.forwarder.gate.set()
    ticket = await dispatch.submit(V1)
    outcome = await asyncio.wait_for(ticket.done, 5)
    assert outcome.status == 200
    assert dispatch.forwarder.calls == [(ticket.request_id, alive.instance_id)]
    assert ticket.tried == {dead.instance_id}
    assert dead.in_flight == alive.in_flight == 0


async def test_never_reached_anywhere_fails_after_max_attempts(dispatch: DispatcherBench) -> None:
    spec = dispatch.capacity.deploy(V1)
    dead = dispatch.capacity.add_instance(V1, spec)
    dispatch.forwarder.refuse.add(dead.instance_id)
    ticket = await dispatch.submit(V1)
    ticket.detach()  # its client left with a 202: the outcome waits for a poll
    for attempt in range(1, 3):
        await settle()
        # refused: out of the ready ones, the request waits (not tried again at once)
        assert dead.state == InstanceState.UNHEALTHY and not ticket.done.done(), attempt
        assert dispatch.capacity.ready(V1) == []
        dead.set_state(InstanceState.READY)  # its health check answered again
        dispatch.dispatcher.pump_all()
    outcome = await asyncio.wait_for(ticket.done, 5)
    assert outcome.status == 500 and outcome.error
    assert b"Inference connection error" in outcome.body
    stored = await dispatch.store.get(ticket.request_id)
    assert stored is not None and stored[0].state == RequestState.DONE


async def test_undeployed_version_fails_its_queued_requests(dispatch: DispatcherBench) -> None:
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)
    running = await dispatch.submit(V1)
    queued = await dispatch.submit(V1)
    await settle()
    assert not queued.done.done()
    dispatch.capacity.deployed.clear()
    dispatch.dispatcher.pump_all()
    outcome = await asyncio.wait_for(queued.done, 5)
    assert outcome.status == 404 and outcome.error
    assert b"is not deployed" in outcome.body
    assert not running.done.done()  # in flight: it finishes on its instance
    dispatch.forwarder.gate.set()
    assert (await asyncio.wait_for(running.done, 5)).status == 200
    assert dispatch.dispatcher.queued_for_function(FID) == 0


async def test_a_request_for_a_version_not_deployed_fails_at_once(
    dispatch: DispatcherBench,
) -> None:
    ticket = await dispatch.submit(V2)
    outcome = await asyncio.wait_for(ticket.done, 5)
    assert outcome.status == 404
    assert client_path(ticket.record) in outcome.body.decode()


async def test_recovery_after_a_crash_requeues_in_order_and_never_reruns_finished(
    store: RequestsRepo, tmp_path: Path
) -> None:
    before = DispatcherBench(store, tmp_path / "inf")
    spec = before.capacity.deploy(V1)
    before.capacity.add_instance(V1, spec)
    finished = await before.submit(V1)
    before.forwarder.gate.set()
    await asyncio.wait_for(finished.done, 5)
    before.forwarder.gate.clear()
    in_flight = await before.submit(V1)
    queued = [await before.submit(V1) for _ in range(3)]
    streamed = await before.submit(V1, mode="stream")
    await settle()
    await store.flush()
    # the process dies here: nothing of `before` runs any more (its tasks are dropped)
    await before.dispatcher._tasks.cancel()

    after = DispatcherBench(store, tmp_path / "inf")
    spec = after.capacity.deploy(V1)
    after.capacity.add_instance(V1, spec)
    after.forwarder.gate.set()

    async def subject_of(rec: RequestRecord) -> str:
        return f"apikey:{rec.key_id}"

    assert await after.dispatcher.recover(subject_of) == 4
    expected = [in_flight.request_id, *(t.request_id for t in queued)]
    for rid in expected:
        ticket = after.dispatcher.ticket(rid)
        assert ticket is not None and ticket.detached
        assert (await asyncio.wait_for(ticket.done, 5)).status == 200
    assert [c[0] for c in after.forwarder.calls] == expected
    assert finished.request_id not in [c[0] for c in after.forwarder.calls]
    stored = await store.get(streamed.request_id)
    assert stored is not None and stored[1] is not None and stored[1].status == 503
    assert stored[0].state == RequestState.FAILED
    await after.dispatcher.close(grace_s=1)


async def test_abandoned_requests_are_cancelled_queued_or_in_flight(
    dispatch: DispatcherBench,
) -> None:
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)
    running = await dispatch.submit(V1, poll_seconds=1)
    queued = await dispatch.submit(V1, poll_seconds=1)
    polled = await dispatch.submit(V1, poll_seconds=1)
    await settle()
    long_ago = time.monotonic() - 11
    for ticket in (running, queued, polled):
        ticket.detach()
        ticket.last_poll = long_ago
    polled.waiters = 1  # a status long-poll is waiting on it right now
    dispatch.dispatcher.sweep()
    for ticket in (running, queued):
        outcome = await asyncio.wait_for(ticket.done, 5)
        assert outcome.status == 410 and b"no status poll" in outcome.body
    assert dispatch.forwarder.cancelled == [running.request_id]
    assert not polled.done.done()
    stored = await dispatch.store.get(queued.request_id)
    assert stored is not None and stored[0].state == RequestState.FAILED
    # the freed slot goes to the request still wanted
    await settle()
    assert dispatch.forwarder.calls[-1][0] == polled.request_id


async def test_done_tickets_are_forgotten_after_the_ttl(
    store: RequestsRepo, tmp_path: Path
) -> None:
    w = DispatcherBench(store, tmp_path / "inf", ttl=0.2)
    spec = w.capacity.deploy(V1)
    w.capacity.add_instance(V1, spec)
    w.forwarder.gate.set()
    ticket = await w.submit(V1)
    ticket.detach()  # its client left with a 202: the outcome is kept for a poll
    await asyncio.wait_for(ticket.done, 5)
    w.dispatcher.sweep()
    assert w.dispatcher.ticket(ticket.request_id) is ticket
    await asyncio.sleep(0.3)
    w.dispatcher.sweep()
    assert w.dispatcher.ticket(ticket.request_id) is None
    await w.dispatcher.close(grace_s=1)


async def test_client_cancel_of_a_queued_request(dispatch: DispatcherBench) -> None:
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)
    first = await dispatch.submit(V1)
    second = await dispatch.submit(V1)
    await settle()
    dispatch.dispatcher.cancel(second.request_id, "the client disconnected")
    outcome = await asyncio.wait_for(second.done, 5)
    assert outcome.status == 410 and b"the client disconnected" in outcome.body
    assert dispatch.dispatcher.depth(V1) == 0
    dispatch.dispatcher.cancel(first.request_id, "the client disconnected")
    assert (await asyncio.wait_for(first.done, 5)).status == 410
    assert dispatch.forwarder.cancelled == [first.request_id]
    assert dispatch.dispatcher.queued_for_function(FID) == 0


async def test_queue_position_is_capped_at_1000(dispatch: DispatcherBench) -> None:
    dispatch.capacity.deploy(V1)  # no instance: everything waits
    loop = asyncio.get_running_loop()
    tickets = []
    for _ in range(1003):
        ticket = Ticket(record=record(V1), subject="s", done=loop.create_future())
        dispatch.dispatcher.submit(ticket)
        tickets.append(ticket)
    assert dispatch.dispatcher.depth(V1) == 1003
    positions = [dispatch.dispatcher.position(t.request_id) for t in tickets]
    assert positions[:3] == [1, 2, 3] and positions[998:] == [999, 1000, 1000, 1000, 1000]
    assert {t.nvcf_status for t in tickets} == {"pending-evaluation"}
    assert tickets[0].note == "waiting for an instance (none is running)"


async def test_a_stored_result_is_served_once(store: RequestsRepo) -> None:
    """After a restart results come from SQLite: a second poll right after the first is 404."""
    rec = record()
    await store.accept(rec)
    await store.finish(rec.request_id, Outcome(status=200, body=b"result"), keep=True)
    inv = Invocations(
        store,
        versions_of=None,  # type: ignore[arg-type]
        dispatch=DispatcherBench(store, Path("/nonexistent")).dispatcher,
        default_poll=1,
        max_poll=10,
        max_queue=10,
        new_request_id=new_id,
        release_request_id=lambda request_id: None,
    )
    principal = Principal(
        key_id="k1",
        nca_id="acct",
        scopes=frozenset(SCOPES),
        resources=(KeyResource(type="account-functions", id="*"),),
    )
    outcome = await inv.poll(principal, rec.request_id, 1)
    assert isinstance(outcome, Outcome) and outcome.body == b"result"
    with pytest.raises(NotFound):
        await inv.poll(principal, rec.request_id, 1)


async def test_a_failed_write_of_the_end_still_answers_the_client(
    dispatch: DispatcherBench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error while recording the end must not leave the waiting client hanging."""
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(dispatch.store, "finish", broken)
    ticket = await dispatch.submit(V1)
    dispatch.forwarder.gate.set()
    outcome = await asyncio.wait_for(ticket.done, 5)
    assert outcome.status == 200


async def test_a_cancel_while_the_end_is_being_recorded_leaves_the_end_standing(
    dispatch: DispatcherBench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep (or a client leaving) cancelling a request whose answer is being written
    must not cut that write short: the ticket stayed FINISHING for ever, its client got 202
    'in-progress' on every poll (found by bench_invoke's async mode: 220 of 15793)."""
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)
    writing, release = asyncio.Event(), asyncio.Event()
    real_finish = dispatch.store.finish

    async def slow_finish(*args: Any, **kwargs: Any) -> None:
        writing.set()
        await release.wait()
        await real_finish(*args, **kwargs)

    monkeypatch.setattr(dispatch.store, "finish", slow_finish)
    ticket = await dispatch.submit(V1, poll_seconds=1)
    ticket.detach()
    dispatch.forwarder.gate.set()
    await asyncio.wait_for(writing.wait(), 5)
    ticket.last_poll = time.monotonic() - 11
    dispatch.dispatcher.sweep()
    dispatch.dispatcher.cancel(ticket.request_id, "the client disconnected")
    release.set()
    outcome = await asyncio.wait_for(ticket.done, 5)
    assert outcome.status == 200 and outcome.body == ticket.request_id.encode()
    assert ticket.cancelled is None
    stored = await dispatch.store.get(ticket.request_id)
    assert stored is not None and stored[0].state == RequestState.DONE


async def test_closing_cancels_what_a_cancelled_task_spawns_on_its_way_out(
    store: RequestsRepo, tmp_path: Path
) -> None:
    """A request cancelled at close frees its slot; nothing new may start in it, and a task
    spawned by a cancelled one's clean-up is cancelled too (none is left pending when the
    loop ends: it would be collected later, on any thread)."""
    w = DispatcherBench(store, tmp_path / "inf")
    spec = w.capacity.deploy(V1)
    w.capacity.add_instance(V1, spec)
    running = await w.submit(V1, poll_seconds=1)
    queued = await w.submit(V1, poll_seconds=1)
    await settle()
    assert [c[0] for c in w.forwarder.calls] == [running.request_id]
    await w.dispatcher.close(grace_s=0.05)
    assert [c[0] for c in w.forwarder.calls] == [running.request_id]  # the queued one waits
    assert not queued.done.done()
    stored = await w.store.get(queued.request_id)
    assert stored is not None and stored[0].state == RequestState.QUEUED  # runs after restart

    tasks = TaskSet(logging.getLogger("test"), "test")
    spawned: list[asyncio.Task[None]] = []

    async def parent() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            spawned.append(tasks.spawn(asyncio.sleep(60)))

    tasks.spawn(parent())
    await asyncio.sleep(0)
    await tasks.cancel()
    assert spawned and spawned[0].cancelled()


def invocations_over(dispatch: DispatcherBench) -> Invocations:
    async def versions(fid: str) -> list[VersionInfo]:
        return [VersionInfo(fid, V1, "echo", FunctionStatus.ACTIVE, nca_id="acct")]

    return Invocations(
        dispatch.store,
        versions_of=versions,
        dispatch=dispatch.dispatcher,
        default_poll=1,
        max_poll=10,
        max_queue=10,
        new_request_id=new_id,
        release_request_id=lambda request_id: None,
    )


async def test_a_request_answered_on_its_connection_writes_nothing(
    db: Database, dispatch: DispatcherBench
) -> None:
    """A plain pexec request that ends within its poll window has no row, ever: its client
    holds no request id until the answer, so there is nothing to recover for it; one whose
    window ends first has its row committed before its 202 (and it goes once collected)."""
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)
    inv = invocations_over(dispatch)
    dispatch.forwarder.gate.set()
    quick = await _submit_plain(inv)
    assert raw_rows(db) == {}  # not even while it runs
    result = await inv.wait(quick, 5)
    assert isinstance(result, Outcome) and result.status == 200
    await dispatch.store.flush()
    assert raw_rows(db) == {} and quick.recorded is None
    dispatch.forwarder.gate.clear()
    slow = await _submit_plain(inv)
    pending = await inv.wait(slow, 0.05)
    assert isinstance(pending, Pending)
    assert raw_rows(db)[slow.request_id]["state"] == "queued"  # committed before the 202
    dispatch.forwarder.gate.set()
    assert (await asyncio.wait_for(slow.done, 5)).status == 200
    await dispatch.store.flush()
    assert raw_rows(db)[slow.request_id]["state"] == "done"  # kept for its status poll


def _principal() -> Principal:
    return Principal(
        key_id="k1",
        nca_id="acct",
        scopes=frozenset(SCOPES),
        resources=(KeyResource(type="account-functions", id="*"),),
    )


async def _submit_plain(inv: Invocations) -> Ticket:
    return await inv.submit(
        _principal(),
        FID,
        None,
        method="POST",
        path="/echo",
        headers=[],
        body=b"{}",
        mode="pexec",
        poll=1,
    )


async def test_a_202_that_cannot_be_recorded(
    dispatch: DispatcherBench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write of a request's row before its 202 is refused (a lock held too long;
    store/sqlite.py's 503): a request still waiting for a slot is dropped unrun and the
    refusal reaches the client; one that ran to its end while the write waited is answered
    with its result (an error would make its client send it again)."""
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)
    inv = invocations_over(dispatch)
    refused = Unavailable("locked", headers={"Retry-After": "5"})
    loop = asyncio.get_running_loop()

    def refuse_after(delay_s: float) -> Any:
        def accept_later(rec: RequestRecord) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = loop.create_future()
            loop.call_later(delay_s, fut.set_exception, refused)
            return fut

        return accept_later

    holder = await dispatch.submit(V1)  # takes the only slot: the next request queues
    await settle()
    monkeypatch.setattr(dispatch.store, "accept_later", refuse_after(0.05))
    queued = await _submit_plain(inv)
    with pytest.raises(Unavailable):
        await inv.wait(queued, 0.02)
    await settle()
    assert [c[0] for c in dispatch.forwarder.calls] == [holder.request_id]  # never ran
    assert queued.done.result().status == 410  # cancelled: it could not be recorded
    dispatch.forwarder.gate.set()  # the slot frees
    assert (await asyncio.wait_for(holder.done, 5)).status == 200
    dispatch.forwarder.gate.clear()
    ran = await _submit_plain(inv)
    await settle()  # running, held at the gate
    loop.call_later(0.03, dispatch.forwarder.gate.set)  # it ends while the write waits
    outcome = await inv.wait(ran, 0.02)
    assert isinstance(outcome, Outcome)
    assert outcome.status == 200 and outcome.body == ran.request_id.encode()


# -- keyed requests and webhooks (beyond NVCF; tests/test_webhooks.py has the rest) -----------


async def test_a_keyed_request_is_leased_durably_before_it_is_sent(
    db: Database, dispatch: DispatcherBench
) -> None:
    spec = dispatch.capacity.deploy(V1, concurrency=2)
    dispatch.capacity.add_instance(V1, spec)
    keyed = await dispatch.submit(V1, idempotency_key="k", fingerprint="f")
    plain = await dispatch.submit(V1)
    await settle()
    assert {c[0] for c in dispatch.forwarder.calls} == {keyed.request_id, plain.request_id}
    rows = raw_rows(db)  # while both are in their container
    assert (rows[keyed.request_id]["state"], rows[keyed.request_id]["attempts"]) == ("leased", 1)
    assert rows[plain.request_id]["state"] == "queued"  # leased only once it runs a while
    # a crash now: the keyed one is not sent again, the plain one is
    requeued, failed = await dispatch.store.expire_leases(math.inf, max_attempts=3)
    assert (requeued, failed) == (0, [keyed.request_id])


async def test_keyed_requests_are_never_swept_as_abandoned(dispatch: DispatcherBench) -> None:
    spec = dispatch.capacity.deploy(V1)
    dispatch.capacity.add_instance(V1, spec)
    keyed = await dispatch.submit(V1, poll_seconds=1, idempotency_key="k", fingerprint="f")
    await settle()
    keyed.detach()
    keyed.last_poll = time.monotonic() - 60
    dispatch.dispatcher.sweep()
    await settle()
    assert not keyed.done.done() and dispatch.forwarder.cancelled == []
    dispatch.forwarder.gate.set()
    assert (await asyncio.wait_for(keyed.done, 5)).status == 200


async def test_the_end_of_a_request_with_a_webhook_records_its_delivery_and_wakes_the_sender(
    db: Database, store: RequestsRepo, tmp_path: Path
) -> None:
    nudged: list[bool] = []
    w = DispatcherBench(store, tmp_path / "inf")
    w.dispatcher.webhook_due = lambda: nudged.append(True)
    spec = w.capacity.deploy(V1)
    w.capacity.add_instance(V1, spec)
    w.forwarder.gate.set()
    hooked = await w.submit(V1, webhook_url="http://127.0.0.1:9/h")
    await asyncio.wait_for(hooked.done, 5)
    plain = await w.submit(V1)
    await asyncio.wait_for(plain.done, 5)
    conn = sqlite3.connect(db.path)
    try:
        got = conn.execute("SELECT request_id, url, state FROM webhook_deliveries").fetchall()
    finally:
        conn.close()
    assert got == [(hooked.request_id, "http://127.0.0.1:9/h", "pending")]
    assert nudged == [True]
    await w.dispatcher.close(grace_s=1)
