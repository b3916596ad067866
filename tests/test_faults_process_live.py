"""Faults of the nvcf-lite process and its database, on a live `nvcf-lite serve` and the echo
container; each test counts the accepted requests before and after and prints a summary line
`FAULT <name>: accepted=N terminal=N lost=0 duplicated=0 ...` (visible with `pytest -s`).

* SIGKILL with 1000 requests queued and in flight, then a restart: every one ends, none is
  lost, none that completed before the kill runs again (only the in-flight ones may).
* Power loss: a loop of SIGKILLs at random points while invocations are being accepted and
  group-committed; after each, the database (opened read-only) passes `integrity_check` and
  every request answered 202 has its row, once, in a legal state; the restart leaves no lease.
* SQLite locked by another process (BEGIN EXCLUSIVE) for seconds: requests wait and complete,
  or get 503 with Retry-After; nothing crashes, nothing is lost.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from fault_support import (
    RECORDS,
    Answer,
    check_queue,
    collect,
    invoke_all,
    read_queue,
    runs,
    summary,
)
from invocation_support import docker_env, live_echo
from server_support import ServerProcess, serving

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    with serving(ServerProcess(tmp_path / "srv", env=docker_env(ns))) as proc:
        yield proc


def answers_of(results: list[Answer | BaseException]) -> list[Answer]:
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    return [r for r in results if isinstance(r, Answer)]


def test_sigkill_with_1000_requests_accepted_then_restart_loses_none(
    server: ServerProcess,
) -> None:
    fid, _ = live_echo(server.json, maxRequestConcurrency=4)
    path = f"/v2/nvcf/pexec/functions/{fid}"
    # 50 that complete before the kill, 4 that hold every slot, then 1000 that queue behind them
    done_first = answers_of(
        invoke_all(server, path, [{"n": i, "recordTo": RECORDS} for i in range(50)])
    )
    assert Counter(a.status for a in done_first) == {200: 50}
    blockers = answers_of(
        invoke_all(
            server, path, [{"n": f"b{i}", "delay": 8, "recordTo": RECORDS} for i in range(4)]
        )
    )
    assert Counter(a.status for a in blockers) == {202: 4}
    bodies = [{"n": i, "recordTo": RECORDS} for i in range(1000)]
    queued = answers_of(invoke_all(server, path, bodies, concurrency=250))
    statuses = Counter(a.status for a in queued)
    server.kill()
    assert statuses == {202: 1000}, statuses
    waiting = {a.request_id: a for a in [*blockers, *queued]}
    assert len(waiting) == 1004
    before = read_queue(server.data_dir / "nvcf-lite.db")
    check_queue(server.data_dir / "nvcf-lite.db", waiting)
    in_db = Counter(before.states[rid] for rid in waiting)

    server.start()
    ended = collect(server, waiting, deadline_s=120)
    final = Counter(a.status for a in ended.values())
    assert final == {200: 1004}, final
    want = {a.request_id: b["n"] for a, b in zip(queued, bodies, strict=True)}
    got = {rid: ended[rid].json()["body"]["n"] for rid in want}
    assert got == want  # each its own result
    everyone = {a.request_id for a in done_first} | set(waiting)
    counts = wait_for(
        lambda: runs(server) if set(runs(server)) >= everyone else None, 20, "every run recorded"
    )
    assert set(counts) == everyone
    twice = sorted(rid for rid, c in counts.items() if c > 1)
    assert all(counts[a.request_id] == 1 for a in done_first)  # completed: never again
    assert set(twice) <= {a.request_id for a in blockers}, twice  # only the 4 in flight
    summary(
        "sigkill-1000",
        accepted=len(everyone),
        at_kill_queued=in_db["queued"],
        at_kill_leased=in_db["leased"],
        completed_before=len(done_first),
        terminal=len(done_first) + len(ended),
        lost=len(everyone - set(counts)),
        duplicated=sum(1 for a in done_first if counts[a.request_id] > 1),
        rerun_in_flight=len(twice),
    )


def test_power_loss_during_group_commits_keeps_the_queue_sound(
    server: ServerProcess,
) -> None:
    fid, _ = live_echo(server.json, maxRequestConcurrency=2)
    path = f"/v2/nvcf/pexec/functions/{fid}"
    db = server.data_dir / "nvcf-lite.db"
    rng = random.Random(14)
    accepted: set[str] = set()
    final: Counter[int] = Counter()
    rounds, delivered, cut, rows_checked, max_leased = 12, 0, 0, 0, 0
    for round_no in range(rounds):
        bodies: list[dict[str, Any]] = [{"n": f"{round_no}-{i}", "delay": 0.02} for i in range(300)]
        timer = threading.Timer(rng.uniform(0.3, 2.0), server.kill)  # mid-accept, mid-commit
        timer.start()
        results = invoke_all(server, path, bodies, concurrency=100)
        timer.join()
        promised: dict[str, str] = {}
        for r, body in zip(results, bodies, strict=True):
            if isinstance(r, BaseException):
                cut += 1  # cut by the kill before an answer: never promised anything
            elif r.status == 202:
                promised[r.request_id] = body["n"]
            elif r.status == 200:
                delivered += 1
            else:
                raise AssertionError((r.status, r.body[:300]))
        rows_checked += len(check_queue(db, promised).states)
        accepted |= set(promised)
        server.start()
        # recovery runs before /health answers: no lease of the dead process is left (the
        # new one holds at most its 2 slots)
        leased = read_queue(db).leased_alive
        assert leased <= 2, leased
        max_leased = max(max_leased, leased)
        # the client polls its 202s (one it stops polling is cancelled, spec §2.3.4)
        ended = collect(server, promised, deadline_s=60)
        assert set(ended) == set(promised)
        final.update(a.status for a in ended.values())
        # a 202 is a promise: each ends with its own result
        assert {a.status for a in ended.values()} <= {200}, Counter(
            (a.status, a.body[:120]) for a in ended.values()
        )
        assert {rid: a.json()["body"]["n"] for rid, a in ended.items()} == promised
    # rows committed for clients the kill cut off (never answered) end too: run, or cancelled
    # once nobody polls them
    open_rows = {"queued", "leased"}
    wait_for(lambda: not open_rows & set(read_queue(db).states.values()), 60, "the queue drained")
    server.stop()
    queue = check_queue(db, [])
    assert not open_rows & set(queue.states.values())
    summary(
        "power-loss",
        rounds=rounds,
        accepted_202=len(accepted),
        delivered_200_before_kill=delivered,
        cut_by_kill=cut,
        rows_checked_at_kills=rows_checked,
        terminal=sum(final.values()),
        lost=len(accepted) - sum(final.values()),
        ok=final[200],
        integrity_ok=rounds + 1,
        leases_after_restart_max=max_leased,
    )


def hold_exclusive(db: Path, seconds: float, held: threading.Event) -> None:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def locked_phase(
    server: ServerProcess, path: str, lock_s: float, bodies: list[dict[str, Any]], poll: int
) -> list[Answer]:
    """The invocations `bodies`, sent while another process holds the database's write lock
    (each with a poll window of `poll` s: a request is written only before its 202)."""
    held = threading.Event()
    db = server.data_dir / "nvcf-lite.db"
    locker = threading.Thread(target=hold_exclusive, args=(db, lock_s, held))
    locker.start()
    try:
        assert held.wait(10)
        return answers_of(invoke_all(server, path, bodies, poll=poll, concurrency=50))
    finally:
        locker.join()


def test_sqlite_locked_by_another_process_for_seconds(server: ServerProcess) -> None:
    fid, _ = live_echo(server.json, maxRequestConcurrency=4)
    path = f"/v2/nvcf/pexec/functions/{fid}"
    # A request answered within its window writes nothing: the lock does not touch it.
    quick = locked_phase(server, path, 3.0, [{"n": i} for i in range(100)], poll=30)
    assert [(a.status, a.json()["body"]["n"]) for a in quick] == [(200, i) for i in range(100)]
    # A lock shorter than the busy timeout (10 s): the rows written before the 202s of
    # requests still running at the end of their 1 s window wait for it, then land.
    bodies = [{"n": i, "delay": 2} for i in range(12)]
    short = locked_phase(server, path, 4.0, bodies, poll=1)
    # (one that ended while its row waited is answered on its connection instead)
    assert Counter(a.status for a in short).keys() <= {200, 202}
    promised = {a.request_id: a for a in short if a.status == 202}
    assert promised
    ended = collect(server, promised, deadline_s=60)
    assert {a.status for a in ended.values()} == {200}
    got = [a.json()["body"]["n"] for a in [*short, *ended.values()] if a.status == 200]
    assert sorted(got) == list(range(12))  # each its own result, once
    # Longer, with every slot taken (so the requests queue): a 202 whose row cannot be
    # written is 503 with Retry-After instead, and that request never runs.
    with ThreadPoolExecutor(1) as pool:
        held_slots = pool.submit(
            invoke_all,
            server,
            path,
            [{"n": f"b{i}", "delay": 16, "recordTo": RECORDS} for i in range(4)],
            30,
        )
        wait_for(lambda: len(runs(server)) == 4, 10, "4 slow requests running")
        bodies = [{"n": i, "recordTo": RECORDS} for i in range(10)]
        long = locked_phase(server, path, 14.0, bodies, poll=1)
        blockers = answers_of(held_slots.result())
    statuses = Counter(a.status for a in long)
    # (a row queued behind the refused batch waits for the lock afresh and may land: 202)
    assert statuses.keys() <= {202, 503}, statuses
    assert statuses[503] >= 1, statuses
    late = {a.request_id: a for a in long if a.status == 202}
    late_ended = collect(server, late, deadline_s=60)
    assert {a.status for a in late_ended.values()} <= {200}
    for a in long:
        if a.status == 503:
            assert a.headers.get("retry-after") == "5", a.headers
            problem = a.json()
            assert "locked by another process" in problem["detail"], problem
            assert a.request_id == "", a.headers  # never accepted: no id to poll
    assert Counter(a.status for a in blockers) == {200: 4}
    ran = runs(server)
    assert sum(ran.values()) == len(ran) == 4 + len(late)  # a 503 never ran
    assert server.process is not None and server.process.poll() is None  # no crash
    status, _, _ = server.call("GET", "/health")
    assert status == 200
    after = answers_of(invoke_all(server, path, [{"n": i} for i in range(20)]))
    assert Counter(a.status for a in after) == {200: 20}
    queue = check_queue(server.data_dir / "nvcf-lite.db", [])
    assert not {"queued", "leased"} & set(queue.states.values())
    summary(
        "sqlite-locked",
        quick_lock_s=3,
        quick_ok=len(quick),
        short_lock_s=4,
        short_accepted_202=len(promised),
        short_terminal=len(ended),
        long_lock_s=14,
        long_in_flight=len(blockers),
        long_sent=len(long),
        long_202_ok=len(late_ended),
        long_503_retry_after=statuses[503],
        long_503_ran=0,
        lost=0,
        after_ok=len(after),
    )
