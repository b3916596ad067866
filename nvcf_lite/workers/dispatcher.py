"""The Dispatcher: moves requests from their version's queue (the Backlog, in memory,
mirrored durably by the RequestsRepo) onto instances the Scheduler offers (`Capacity`).

Each ready instance has `slots` (maxRequestConcurrency); a request leaves its queue only for
an instance with a free slot. A request that never reached its container goes back to the
front of the queue; one whose version is undeployed or in ERROR fails with that reason. On
start, requests left queued or in flight by a previous process are queued again (requests
that already hit `MAX_ATTEMPTS` starts fail instead), so none is lost and none that finished
runs again. Detached requests nobody polls for max(2 x poll window, 10 s) are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable

from nvcf_lite import logs
from nvcf_lite.domain.invocation_rules import client_path, problem
from nvcf_lite.domain.invocations import Lent, StreamReply, Ticket
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.errors import WORKER_ERROR
from nvcf_lite.models import InstanceState, Outcome, RequestRecord
from nvcf_lite.store.requests import RequestsRepo
from nvcf_lite.workers.backlog import Backlog
from nvcf_lite.workers.capacity import Capacity, Refusal
from nvcf_lite.workers.forwarding import ConnectionLost, Forwarder, NeverReached, watch_progress
from nvcf_lite.workers.grpc_upstream import GrpcChannels, platform_metadata
from nvcf_lite.workers.instances import Instance
from nvcf_lite.workers.tasks import TaskSet

log = logging.getLogger("nvcf_lite.dispatcher")

MAX_ATTEMPTS = 3
LEASE_AFTER_S = 1.0
WATCH_AFTER_S = 0.1
SubjectOf = Callable[[RequestRecord], Awaitable[str]]


def cold_start(ticket: Ticket, inst: Instance) -> str | None:
    """The cold-start breakdown for a request that waited for its instance, else None."""
    if inst.ready_mono <= ticket.queued_at:
        return None
    ms = {
        "queueWaitMs": ticket.dispatched_at - ticket.queued_at,
        "imagePullMs": inst.pull_s,
        "containerStartMs": inst.start_s,
        "firstHealthyMs": inst.healthy_s,
        "firstByteMs": max(0.0, ticket.first_byte_at - ticket.dispatched_at),
    }
    parts = ", ".join(f"{name}={seconds * 1000:.1f}" for name, seconds in ms.items())
    return f"{inst.cold_kind} start: {parts}"


def enqueue(queue: deque[Ticket], ticket: Ticket) -> None:
    """Behind every queued ticket of its priority or higher (FIFO when none has one)."""
    if not queue or queue[-1].priority >= ticket.priority:
        queue.append(ticket)
        return
    at = next(i for i, queued in enumerate(queue) if queued.priority < ticket.priority)
    queue.insert(at, ticket)


# A keyed streamed answer (a gateway call with an Idempotency-Key) up to this size is kept
# for its retries; it is stored with the key's row in SQLite.
REPLAY_MAX_BYTES = 16 * 1024 * 1024
NUDGE_EVERY_S = 0.2  # a waiting queue nudges the scheduler at most this often


class Dispatcher:
    def __init__(
        self,
        store: RequestsRepo,
        backlog: Backlog,
        capacity: Capacity,
        forwarder: Forwarder,
        request_ttl_s: float,
        metrics: Metrics | None = None,
        webhook_due: Callable[[], None] | None = None,
        grpc_channels: GrpcChannels | None = None,
    ) -> None:
        self.store = store
        self.webhook_due = webhook_due  # a delivery was recorded: wake the webhook sender
        self.grpc_channels = grpc_channels or GrpcChannels()
        self.metrics = metrics or Metrics()
        self.capacity = capacity
        self.forwarder = forwarder
        self.ttl = request_ttl_s
        self.backlog = backlog
        self._tickets: dict[str, Ticket] = {}
        self._per_function: Counter[str] = Counter()
        self._tasks = TaskSet(log, "dispatcher")
        self._running: dict[str, asyncio.Task[None]] = {}  # request id -> its forwarding task
        self._housekeeping: asyncio.Future[None] | None = None
        self._nudged: dict[str, float] = {}  # version id -> when its queue last nudged
        self._trailing: asyncio.TimerHandle | None = None
        self._closing = False  # past close()'s grace: nothing new is dispatched

    def _trailing_nudge(self) -> None:
        self._trailing = None
        self.capacity.nudge()

    # -- Dispatch protocol -------------------------------------------------------------

    def submit(self, ticket: Ticket) -> None:
        rec = ticket.record
        self._tickets[rec.request_id] = ticket
        self._per_function[rec.function_id] += 1
        enqueue(self.backlog.queue(rec.version_id), ticket)
        self.pump(rec.version_id)

    def ticket(self, request_id: str) -> Ticket | None:
        return self._tickets.get(request_id)

    def forget(self, request_id: str) -> None:
        self._tickets.pop(request_id, None)

    def depth(self, version_id: str) -> int:
        return self.backlog.depth(version_id)

    def position(self, request_id: str) -> int | None:
        ticket = self._tickets.get(request_id)
        if ticket is None or ticket.done.done():
            return None
        queue = self.backlog.get(ticket.record.version_id) or ()
        for index, queued in enumerate(queue):
            if queued is ticket:
                return min(index + 1, 1000)
        return 0  # in progress

    def queued_for_function(self, function_id: str) -> int:
        return self._per_function[function_id]

    def cancel(self, request_id: str, reason: str) -> None:
        """Stop a request nobody waits for any more: out of its queue, or its forwarding
        cancelled (which drops the connection to the container)."""
        ticket = self._tickets.get(request_id)
        # Not once its end is being recorded (FINISHING): cancelling the task then would cut
        # _finish short between the write and the wake-up, and the ticket would never end.
        if ticket is None or ticket.finished or ticket.done.done() or ticket.cancelled:
            return
        ticket.cancel(reason)
        queue = self.backlog.get(ticket.record.version_id)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            self._tasks.spawn(self._finish(ticket, self._cancelled(ticket), failed=True))
        elif request_id in self._running:
            self._running[request_id].cancel()

    @staticmethod
    def _cancelled(ticket: Ticket) -> Outcome:
        rec = ticket.record
        detail = f"cancelled: {ticket.cancelled}"
        return problem(410, WORKER_ERROR, detail, client_path(rec), rec.request_id)

    # -- moving work ----------------------------------------------------------------------

    def pump_all(self) -> None:
        for version_id in self.backlog.versions():
            self.pump(version_id)

    def pump(self, version_id: str) -> None:
        queue = self.backlog.get(version_id)
        if not queue or self._closing:
            return
        refusal = self.capacity.refusal(version_id, queue[0].queued_at)
        if refusal is not None:
            self._refuse(queue, refusal)
            if not queue or refusal.queued_before == math.inf:
                return
        ready = self.capacity.ready(version_id)
        while queue:
            free = [i for i in ready if i.in_flight < self.capacity.slots(i)]
            if not free:
                self._note_waiting(version_id, queue, bool(ready))
                return
            ticket = queue.popleft()
            # a retry goes to another instance than the ones that refused it, when one is free
            fresh = [i for i in free if i.instance_id not in ticket.tried] or free
            inst = min(fresh, key=lambda i: i.in_flight)
            inst.in_flight += 1
            ticket.start()
            ticket.dispatched_at = time.monotonic()
            self._running[ticket.request_id] = self._tasks.spawn(self._run(ticket, inst))

    def _refuse(self, queue: deque[Ticket], refusal: Refusal) -> None:
        """End the queued requests the refusal covers (the oldest first) with its problem."""
        while queue and queue[0].queued_at < refusal.queued_before:
            ticket = queue.popleft()
            rec = ticket.record
            outcome = problem(
                refusal.status, refusal.kind, refusal.detail, client_path(rec), rec.request_id
            )
            self._tasks.spawn(self._finish(ticket, outcome, failed=refusal.failed))

    def _note_waiting(self, version_id: str, queue: deque[Ticket], any_ready: bool) -> None:
        if any_ready:
            note = "waiting for a free instance slot"
        elif self.capacity.has_instances(version_id):
            note = "waiting for an instance to start"
        else:
            note = "waiting for an instance (none is running)"
        # A tick of the scheduler reads the registry and lists the containers: nudge it when
        # the queue's situation changes, and while it stays the same at most every
        # NUDGE_EVERY_S (a queue waiting for a slot comes here on every request).
        now = time.monotonic()
        if queue[0].note != note or now - self._nudged.get(version_id, 0.0) >= NUDGE_EVERY_S:
            self._nudged[version_id] = now
            self.capacity.nudge()
        elif self._trailing is None:  # one more nudge after the burst, so none is lost
            self._trailing = asyncio.get_running_loop().call_later(
                NUDGE_EVERY_S, self._trailing_nudge
            )
        queue[0].note = note
        # newest first, up to the first that says so already: O(new arrivals), not O(queue)
        # per request (the queue's notes change all at once, so the rest say it too)
        for ticket in reversed(queue):
            if ticket.note == note:
                break
            ticket.note = note

    def watch_running(self) -> None:
        """Every 0.1 s: requests running for a while get a progress watcher and a lease.

        Quick requests end before either: they pay no timer, task or write for them. The
        lease counts the attempts a restart sees (a request that finished needs none).
        """
        now = time.monotonic()
        for request_id in self._running:
            ticket = self._tickets.get(request_id)
            if ticket is None or ticket.finished:
                continue
            age = now - ticket.dispatched_at
            if (
                ticket.watcher is None
                and age >= WATCH_AFTER_S
                and not self.forwarder.progress_by_events(request_id)
            ):
                out_dir, _ = self.forwarder.dirs(request_id)
                ticket.watcher = asyncio.ensure_future(watch_progress(ticket, out_dir))
            if not ticket.leased and age >= LEASE_AFTER_S:
                ticket.lease()
                if ticket.recorded is not None:  # else written with its row (record)
                    self.store.lease(request_id, time.time() + self.ttl)

    async def record(self, ticket: Ticket) -> None:
        """Write the ticket's row unless it was (and any lease it holds), and wait for the
        commit: before its 202, the first promise that its client may come back for it. Not
        one whose end is being recorded already: that write had no row to delete."""
        if ticket.recorded is None:
            if ticket.finished:
                return
            ticket.recorded = self.store.accept_later(ticket.record)
            if ticket.leased:
                self.store.lease(ticket.request_id, time.time() + self.ttl)
        await ticket.recorded

    async def _run(self, ticket: Ticket, inst: Instance) -> None:
        requeued = False
        try:
            if ticket.record.idempotency_key is not None:
                await self._lease_first(ticket)
            result: Outcome | StreamReply
            if ticket.lent is not None:
                result = await self._lend(ticket, inst)
            else:
                result = await self.forwarder.forward(ticket, inst)
            if inst.first_byte_s is None and inst.ready_mono > 0:
                inst.first_byte_s = max(0.0, ticket.first_byte_at - ticket.dispatched_at)
            cold = cold_start(ticket, inst)
            if cold is not None:
                log.info("request waited for a %s", cold, extra=_ids(ticket, inst))
                result.headers.append(("NVCF-LITE-COLD-START", cold))
                if inst.cold_kind != "adopted":  # re-queued after a restart: not a start
                    wait = ticket.first_byte_at - ticket.queued_at
                    self.metrics.cold_start_wait.observe(wait, inst.cold_kind)
            if isinstance(result, StreamReply):
                await self._stream(ticket, result)
            else:
                await self._finish(ticket, result)
        except NeverReached as exc:
            ticket.tried.add(inst.instance_id)
            self.capacity.unreachable(inst, str(exc))
            requeued = self._retry(ticket, str(exc))
        except ConnectionLost as exc:  # it may have run: answered, not retried
            self.capacity.unreachable(inst, str(exc))
            await self._finish(ticket, exc.outcome)
        except asyncio.CancelledError:
            if ticket.cancelled is None:
                requeued = True  # shutting down: the lease stays, the next start runs it again
                raise
            await self._finish(ticket, self._cancelled(ticket), failed=True)
        except Exception as exc:  # a bug must not leave the client waiting forever
            log.exception("request failed inside nvcf-lite", extra=_ids(ticket, inst))
            rec = ticket.record
            detail = f"internal error while handling the request: {exc}"
            outcome = problem(500, WORKER_ERROR, detail, client_path(rec), rec.request_id)
            if not ticket.done.done():
                await self._finish(ticket, outcome, failed=True)
        finally:
            self._running.pop(ticket.request_id, None)
            if ticket.watcher is not None:
                ticket.watcher.cancel()
                ticket.watcher = None
            inst.in_flight -= 1
            if inst.state != InstanceState.READY:
                self.capacity.nudge()  # a draining instance may be removable now
            if not requeued:
                self.forwarder.cleanup(ticket.request_id, bool(ticket.record.assets))
            self.pump(ticket.record.version_id)

    async def _lease_first(self, ticket: Ticket) -> None:
        """A keyed request is leased, durably, before each send (a retry after NeverReached
        too: its requeue cleared the lease): after a crash the lease says it may have reached
        its container, so it is not sent again (store.expire_leases)."""
        if not ticket.leased:
            ticket.lease()
        done = self.store.lease(ticket.request_id, time.time() + self.ttl, wait=True)
        if done is not None:
            await done

    def _retry(self, ticket: Ticket, why: str) -> bool:
        rec = ticket.record
        rec.attempts += 1
        if rec.attempts >= MAX_ATTEMPTS:
            detail = f"Inference connection error while making inference request: {why}"
            self._tasks.spawn(
                self._finish(
                    ticket, problem(500, WORKER_ERROR, detail, client_path(rec), rec.request_id)
                )
            )
            return False
        ticket.requeue()
        ticket.dispatched_at = 0.0  # not running: ending from the queue cleans its folders
        if ticket.recorded is not None:
            self.store.requeue(rec.request_id)
        self.backlog.queue(rec.version_id).appendleft(ticket)
        return True

    async def _lend(self, ticket: Ticket, inst: Instance) -> Outcome:
        """A gRPC call: its handler proxies it live over the instance's channel while this
        holds the instance's slot; the call's outcome once the handler is done with it."""
        assert ticket.lent is not None
        rec = ticket.record
        if inst.host_port is None:
            raise NeverReached(f"instance {inst.instance_id} has no published port")
        ticket.first_byte_at = time.monotonic()
        if ticket.lent.done():  # (cancelled: its handler is gone)
            detail = "the client of this gRPC call is gone; nothing was sent"
            return problem(410, WORKER_ERROR, detail, client_path(rec), rec.request_id)
        ended: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        channel = self.grpc_channels.channel(inst.instance_id, inst.host_port, inst.address)
        metadata = platform_metadata(ticket, inst)
        ticket.lent.set_result(Lent(inst.instance_id, channel, metadata, ended))
        return await ended

    async def _stream(self, ticket: Ticket, reply: StreamReply) -> None:
        """Hand the pass-through reply to the waiting handler and hold the slot until done.

        A request with an Idempotency-Key (a gateway call) keeps what passed through, up to
        REPLAY_MAX_BYTES, as its outcome's body: a retry of its key is answered from it."""
        consumed = asyncio.Event()
        inner = reply.chunks
        kept: bytearray | None = bytearray() if ticket.record.idempotency_key else None

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal kept
            try:
                async for chunk in inner:
                    if kept is not None:
                        kept += chunk
                        if len(kept) > REPLAY_MAX_BYTES:
                            kept = None  # too large to keep: a retry gets its status only
                    yield chunk
            finally:
                consumed.set()

        async def close() -> None:
            await reply.close()
            consumed.set()

        if ticket.stream is None or ticket.stream.done():  # nobody to stream to
            await reply.close()
            rec = ticket.record
            detail = "the client of this streamed request is gone; nothing was delivered"
            outcome = problem(410, WORKER_ERROR, detail, client_path(rec), rec.request_id)
            await self._finish(ticket, outcome, failed=True)
            return
        ticket.stream.set_result(StreamReply(reply.status, reply.headers, chunks(), close))
        await consumed.wait()
        body = bytes(kept) if kept is not None else b""
        await self._finish(ticket, Outcome(status=reply.status, headers=reply.headers, body=body))

    async def _finish(self, ticket: Ticket, outcome: Outcome, failed: bool = False) -> None:
        if ticket.finished:  # a cancel racing the end: the first outcome stands
            return
        keep = ticket.finishing()
        rec = ticket.record
        if not ticket.dispatched_at:
            self.forwarder.cleanup(rec.request_id, bool(rec.assets))  # never ran
        # From here (FINISHING) no handler detaches it: one whose window ends during this
        # write waits for it and answers with the outcome (Invocations.wait), so a request
        # whose row is deleted here is always answered on its connection, never by a 202.
        try:
            # A request never written (answered on its connection before any promise) has
            # no row to delete; its end needs no write.
            if ticket.recorded is not None:
                await self.store.finish(
                    rec.request_id, outcome, keep=keep, failed=failed, record=rec
                )
        except Exception:
            # The answer still reaches the client (on its connection, or from memory when it
            # polls); the row keeps its last state, so a restart may run the request again.
            log.exception("recording the end of a request failed", extra=_ids(ticket))
        ticket.finished_as(kept=keep)
        if rec.webhook_url is not None and self.webhook_due is not None:
            self.webhook_due()
        self._per_function[rec.function_id] -= 1
        self.metrics.request_ended(
            rec.function_id,
            rec.version_id,
            rec.request_id,
            outcome.status,
            time.monotonic() - ticket.queued_at,
        )
        if ticket.stream is not None and not ticket.stream.done():
            ticket.stream.set_result(outcome)  # ended without a stream: answer plainly
        if not ticket.done.done():
            ticket.done.set_result(outcome)
        ticket.notify()

    # -- recovery and housekeeping --------------------------------------------------------

    async def recover(self, subject_of: SubjectOf) -> int:
        """Queue again what a previous process accepted but did not finish."""
        _, failed = await self.store.expire_leases(math.inf, MAX_ATTEMPTS)
        for request_id in failed:
            stored = await self.store.get(request_id)
            if stored is None:
                continue
            rec = stored[0]
            detail = f"nvcf-lite stopped {MAX_ATTEMPTS} times while this request was in flight"
            if rec.idempotency_key is not None:
                detail = (
                    "nvcf-lite stopped while this request was running; it carries an "
                    "Idempotency-Key, so it is never sent to its function a second time"
                )
            outcome = problem(500, WORKER_ERROR, detail, client_path(rec), rec.request_id)
            await self.store.finish(rec.request_id, outcome, keep=True, failed=True, record=rec)
        pending = await self.store.pending()
        loop = asyncio.get_running_loop()
        for rec in pending:
            if rec.mode != "pexec":
                # A streamed or path-preserving answer goes only to the connection that asked
                # for it, and that connection ended with the previous process.
                detail = "nvcf-lite restarted before this streamed request was answered"
                outcome = problem(503, WORKER_ERROR, detail, client_path(rec), rec.request_id)
                await self.store.finish(rec.request_id, outcome, keep=True, failed=True, record=rec)
                continue
            ticket = Ticket.recovered(rec, await subject_of(rec), loop.create_future())
            self.submit(ticket)
        return sum(1 for rec in pending if rec.mode == "pexec")

    def sweep(self) -> None:
        """Cancel detached requests whose client stopped polling (§2.3.4); drop stale tickets."""
        now = time.monotonic()
        for ticket in list(self._tickets.values()):
            idle = now - ticket.last_poll
            if ticket.done.done():
                if idle > self.ttl:
                    self.forget(ticket.request_id)
                continue
            if ticket.waiters or not ticket.detached or ticket.record.idempotency_key:
                continue  # a keyed request runs to its end: its key's retry gets the result
            if idle > max(2 * ticket.record.poll_seconds, 10):
                self.cancel(ticket.request_id, f"no status poll for {idle:.0f} s (the client left)")

    def start(self) -> None:
        self._housekeeping = asyncio.ensure_future(self._housekeep())

    async def _housekeep(self) -> None:
        """Watchers and leases every 0.1 s; abandoned requests every second (spec §2.3.4)."""
        ticks = 0
        while True:
            await asyncio.sleep(WATCH_AFTER_S)
            ticks += 1
            try:
                self.watch_running()
                if ticks % 10 == 0:
                    self.sweep()
            except Exception:
                log.exception("request housekeeping failed")

    async def close(self, grace_s: float = 10.0) -> None:
        """Give in-flight requests `grace_s` to finish; the rest run again after a restart."""
        if self._trailing is not None:
            self._trailing.cancel()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
        await self._tasks.wait(grace_s)
        self._closing = True  # a slot the cancels below free must not start another request
        await self._tasks.cancel()
        await self.forwarder.close()
        await self.grpc_channels.close()


def _ids(ticket: Ticket, inst: Instance | None = None) -> dict[str, str]:
    """The ids of a log line about a request (only lines off the hot path build them)."""
    rec = ticket.record
    return logs.ids(
        request_id=rec.request_id,
        function_id=rec.function_id,
        version_id=rec.version_id,
        instance_id=inst.instance_id if inst else None,
    )
