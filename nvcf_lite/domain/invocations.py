"""Invocations (spec §2.3, §2.4): accept durably, wait on a future, answer or 202.

`Invocations` validates a call, picks the version, records the request in the durable queue,
hands a `Ticket` (its lifecycle is in `tickets`) to the dispatcher (through the `Dispatch`
protocol, implemented in workers/) and waits on the ticket's future up to the poll window.
Nothing here polls SQLite. The stateless rules (headers, statuses, problem bodies) are in
`invocation_rules`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nvcf_lite.domain.auth import Reach, reach, require_function, require_scope
from nvcf_lite.domain.idempotency import HEADER as KEY_HEADER
from nvcf_lite.domain.idempotency import IdempotencyKeys, check_key, fingerprint
from nvcf_lite.domain.invocation_rules import forwardable
from nvcf_lite.domain.rate_limits import RateLimiter
from nvcf_lite.domain.single_flight import SingleFlight
from nvcf_lite.domain.tickets import MAX_UNREAD_PROGRESS, Lent, Progress, StreamReply, Ticket
from nvcf_lite.domain.webhooks import HEADER as WEBHOOK_HEADER
from nvcf_lite.domain.webhooks import WebhookPolicy

__all__ = [
    "MAX_UNREAD_PROGRESS",
    "Dispatch",
    "Invocations",
    "Lent",
    "Pending",
    "Progress",
    "StreamReply",
    "Ticket",
]
from nvcf_lite.errors import Forbidden, Invalid, NotFound, NvcfError, TooManyRequests
from nvcf_lite.models import (
    FunctionStatus,
    Outcome,
    Principal,
    Priority,
    RateLimit,
    RequestRecord,
    parse_uuid,
)
from nvcf_lite.store.requests import RequestsRepo

INVOCABLE = (FunctionStatus.ACTIVE, FunctionStatus.DEGRADING)
# How long a poll window that ends while the outcome is being recorded waits for that write.
FINISH_WAIT_S = 10.0


class Dispatch(Protocol):
    def submit(self, ticket: Ticket) -> None: ...

    def ticket(self, request_id: str) -> Ticket | None: ...

    def forget(self, request_id: str) -> None: ...

    def cancel(self, request_id: str, reason: str) -> None: ...

    def depth(self, version_id: str) -> int: ...

    def position(self, request_id: str) -> int | None: ...

    def queued_for_function(self, function_id: str) -> int: ...

    async def record(self, ticket: Ticket) -> None: ...


@dataclass
class VersionInfo:
    function_id: str
    version_id: str
    name: str
    status: FunctionStatus
    rate_limit: RateLimit | None = None
    nca_id: str = ""  # the owner
    parties: frozenset[str] = frozenset()  # NCA ids it is shared with ('*': everyone)
    grpc: bool = False  # a gRPC function (inferenceUrl /grpc): invoked on the gRPC endpoint
    priority: Priority | None = None  # llmInvocationConfig.priority


def priority_of(priority: Priority | None, nca_id: str) -> int:
    """A caller's place in a version's queue (spec §2.1.1 `llmInvocationConfig.priority`):
    `perAccountPriority[nca_id]`, else `defaultPriority`, else 0. nvcf-lite's reading: a
    higher number is served first; equal ones in order of arrival."""
    if priority is None:
        return 0
    named = (priority.per_account_priority or {}).get(nca_id)
    return named if named is not None else priority.default_priority or 0


def reachable(
    principal: Principal, fid: str, vid: str | None, versions: list[VersionInfo]
) -> list[VersionInfo]:
    """The versions (all, or `vid`) the key may invoke or read the queue of: its account's
    and those shared with it (spec §2.7). None reachable but some denied by the key's
    resources: 403; none the caller may know of: an empty list (the caller's 404)."""
    if vid is not None:
        versions = [v for v in versions if v.version_id == vid]
    reaches = [(v, reach(principal, v.nca_id, v.parties, fid, v.version_id)) for v in versions]
    found = [v for v, r in reaches if r in (Reach.OWN, Reach.SHARED)]
    if not found and any(r is Reach.DENIED for _, r in reaches):
        require_function(principal, fid, vid)
        raise_missing_resource(fid)
    return found


def raise_missing_resource(fid: str) -> None:
    raise Forbidden(f"Function id '{fid}': Missing resource entry in ApiKey for the function")


VersionsOf = Callable[[str], Awaitable[list[VersionInfo]]]


class CachedVersions:
    """A function's versions and statuses, kept in memory for `ttl_s` (the invocation hot
    path would otherwise read SQLite for each request). `clear()` on every status change.
    One read per function at a time (`SingleFlight`): a burst that misses makes one read."""

    def __init__(self, lookup: VersionsOf, ttl_s: float = 2.0) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[VersionInfo]]] = {}
        self._reads: SingleFlight[str, list[VersionInfo]] = SingleFlight()
        self._generation = 0  # clear() bumps it: a read begun before is not cached

    async def __call__(self, function_id: str) -> list[VersionInfo]:
        hit = self._cache.get(function_id)
        if hit is not None:
            left = hit[0] - time.monotonic()
            if left > 0:
                if left < self._ttl_s / 2:  # read again ahead, in the background (SingleFlight)
                    self._reads.start(function_id, lambda: self._read(function_id))
                return hit[1]
        return await self._reads.run(function_id, lambda: self._read(function_id))

    async def _read(self, function_id: str) -> list[VersionInfo]:
        generation = self._generation
        versions = await self._lookup(function_id)
        if generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[function_id] = (time.monotonic() + self._ttl_s, versions)
        return versions

    def clear(self) -> None:
        self._cache.clear()
        self._generation += 1
        self._reads.forget()


StageAssets = Callable[[Principal, str, str], Awaitable[list[str]]]
NewRequestId = Callable[[], str]
"""A fresh request id (the forwarder's, whose folder for the request is made ahead)."""
ReleaseRequestId = Callable[[str], None]
"""request_id -> None: an id taken but not used (its premade folder goes)."""


@dataclass(slots=True)
class _Call:
    """One invocation as submitted, with the headers that change how it is accepted."""

    principal: Principal
    fid: str
    vid: str | None
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    mode: str
    poll: int
    refs: str = ""  # NVCF-INPUT-ASSET-REFERENCES
    webhook: str | None = None  # NVCF-WEBHOOK-URL
    key: str | None = None  # Idempotency-Key
    fingerprint: str = ""


_EXTRA_HEADERS = {
    "nvcf-input-asset-references": "refs",
    WEBHOOK_HEADER: "webhook",
    KEY_HEADER: "key",
}


@dataclass
class Pending:
    """Not finished: answer 202, with a partial response when there is one (§4.5)."""

    ticket: Ticket
    progress: Progress | None = None


class Invocations:
    def __init__(
        self,
        store: RequestsRepo,
        versions_of: VersionsOf,
        dispatch: Dispatch,
        *,
        default_poll: int,
        max_poll: int,
        max_queue: int,
        new_request_id: NewRequestId,
        release_request_id: ReleaseRequestId,
        stage_assets: StageAssets | None = None,
        rate_limiter: RateLimiter | None = None,
        webhooks: WebhookPolicy | None = None,
        keys: IdempotencyKeys | None = None,
    ) -> None:
        self.store = store
        self.webhooks = webhooks
        self.keys = keys
        self.rate_limiter = rate_limiter or RateLimiter()
        self.versions_of = versions_of
        self.dispatch = dispatch
        self.default_poll = default_poll
        self.max_poll = max_poll
        self.max_queue = max_queue
        self.stage_assets = stage_assets
        self.new_request_id = new_request_id
        self.release_request_id = release_request_id

    async def choose(self, principal: Principal, fid: str, vid: str | None) -> VersionInfo:
        require_scope(principal, "invoke_function")
        versions = reachable(principal, fid, vid, await self.versions_of(fid))
        live = [v for v in versions if v.status in INVOCABLE]
        if live:
            return random.choice(live)
        if any(v.status == FunctionStatus.DEGRADED for v in versions):
            raise Invalid(f"Function id '{fid}': DEGRADED function cannot be invoked")
        where = f"Function id '{fid}'" + (f" version '{vid}'" if vid else "")
        raise NotFound(f"{where}: Specified function in account '{principal.nca_id}' is not found")

    async def submit(
        self,
        principal: Principal,
        fid: str,
        vid: str | None,
        *,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        mode: str,
        poll: int,
        replayable: bool = False,
    ) -> Ticket:
        """Validate, pick a version, record the request durably and queue it. With an
        Idempotency-Key, a retry gets the ticket of the request the key stands for: pexec
        calls, and `replayable` streamed ones (the gateway's, whose answer the dispatcher keeps
        for the key; a handler that did not claim a ticket's stream answers from its end).
        """
        call = _Call(principal, fid, vid, method, path, headers, body, mode, poll)
        for name, value in headers:  # one pass; a request with none of these pays no more
            low = name.lower()
            if low in _EXTRA_HEADERS:
                setattr(call, _EXTRA_HEADERS[low], value)
        if call.webhook is not None:
            if self.webhooks is None:
                raise Invalid("NVCF-WEBHOOK-URL is not supported by this server")
            call.webhook = self.webhooks.check(call.webhook)
        if call.key is None:
            return await self._accept(call)
        key = check_key(call.key)
        if self.keys is None or (mode != "pexec" and not replayable):
            raise Invalid(
                "Idempotency-Key is not supported on streamed or path-preserving pexec "
                "invocations: their answer goes only to the connection that asked for it"
            )
        call.fingerprint = fingerprint(fid, vid, path, body)
        return await self.keys.submit(principal, key, call.fingerprint, lambda: self._accept(call))

    async def _accept(self, call: _Call) -> Ticket:
        principal, fid, mode = call.principal, call.fid, call.mode
        version = await self.choose(principal, fid, call.vid)
        if version.grpc != (mode == "grpc"):
            raise Invalid(_wrong_protocol(version))
        if self.dispatch.queued_for_function(fid) >= self.max_queue:
            raise TooManyRequests(
                f"Function id '{fid}': the queue is full ({self.max_queue} requests); retry later",
                headers={"Retry-After": "1"},
            )
        if version.rate_limit is not None:  # counts only what gets this far
            self.rate_limiter.check(
                version.version_id, version.rate_limit, principal.nca_id, principal.subject
            )
        request_id = self.new_request_id()
        try:
            refs = call.refs
            assets: list[str] = []
            if refs.strip() and mode != "path":
                if self.stage_assets is None:
                    raise Invalid("input assets are not supported by this server")
                assets = await self.stage_assets(principal, refs, request_id)
            record = RequestRecord(
                request_id=request_id,
                function_id=fid,
                version_id=version.version_id,
                nca_id=principal.nca_id,
                key_id=principal.key_id,
                method=call.method,
                path=call.path,
                headers=forwardable(call.headers),
                body=call.body,
                poll_seconds=call.poll,
                mode=mode,
                assets=assets,
                accepted_at=time.time(),
                webhook_url=call.webhook,
                idempotency_key=call.key,
                fingerprint=call.fingerprint,
            )
            # Its row is written when it is first promised: here when a client may come back
            # for it without an answer on this connection (a retry of its Idempotency-Key, a
            # webhook), else only before a 202 (Invocations.wait). A request answered on its
            # connection within the window writes nothing: if the process dies first, its
            # client has no request id to poll, gets a broken connection and sends it again,
            # and running it again here after a restart would run it twice.
            eager = call.key is not None or call.webhook is not None
            accepted = self.store.accept_later(record) if eager else None
        except BaseException:
            self.release_request_id(request_id)  # its premade folder is not needed
            raise
        loop = asyncio.get_running_loop()
        ticket = Ticket(
            record=record,
            subject=principal.subject,
            done=loop.create_future(),
            stream=loop.create_future() if mode != "pexec" else None,
            lent=loop.create_future() if mode == "grpc" else None,
            priority=priority_of(version.priority, principal.nca_id),
        )
        ticket.recorded = accepted
        # The request may start while its accept commits (the forward overlaps the write);
        # no answer, and so no request id, leaves before the commit: a keyed request is
        # durable before anyone waits on it.
        self.dispatch.submit(ticket)
        if accepted is None:
            return ticket
        try:
            await accepted
        except NvcfError:
            # The accept could not be written (a full disk, a lock held too long). A request
            # that already ran to its end meanwhile is answered on this connection (an error
            # would make its client send it again); one still queued is dropped unrun, one
            # running has its connection to the container dropped.
            if ticket.done.done():
                return ticket
            self.dispatch.cancel(request_id, "it could not be recorded")
            raise
        except BaseException:
            self.dispatch.cancel(request_id, "it could not be recorded")
            raise
        return ticket

    async def settle(self, ticket: Ticket, budget_s: float) -> Outcome | None:
        """The outcome if it arrives within `budget_s` (no 202 bookkeeping): the cheap first
        wait of a handler, since most requests finish in milliseconds."""
        if not await _wait_done(ticket.done, budget_s):
            return None
        return ticket.done.result()

    async def wait(self, ticket: Ticket, poll: float) -> Outcome | Pending:
        """The outcome if it arrives within `poll` seconds, else Pending (202).

        An unread partial response ends the wait at once: each is answered once, oldest
        first; a window that ends with none unread repeats the latest (spec §2.3.4, §4.5).
        """
        ticket.waiters += 1
        ticket.last_poll = time.monotonic()
        deadline = ticket.last_poll + poll
        loop = asyncio.get_running_loop()
        try:
            while not ticket.done.done() and not ticket.unread:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # One wake for every handler waiting at once (a status poll beside the retry
                # of its Idempotency-Key): a fresh one per waiter would leave all but the
                # last to sleep out their window.
                wake = ticket.wake
                if wake is None or wake.done():
                    wake = ticket.wake = loop.create_future()
                if not await _wait_done(wake, remaining):
                    break
            if not ticket.done.done() and not ticket.finished:
                await self._record(ticket)  # a 202 is a promise: its row first
            if ticket.finished and not ticket.done.done():
                # Its outcome is being recorded, as "delivered on the connection" unless it
                # was detached before: answering 202 now would leave the client to poll for a
                # row that is being deleted (lost in a crash before that poll). The write
                # takes one commit: wait for it (bounded) and answer with the outcome.
                await _wait_done(ticket.done, FINISH_WAIT_S)
        finally:
            ticket.waiters -= 1
            ticket.last_poll = time.monotonic()
        if ticket.done.done():
            return ticket.done.result()
        ticket.detach()
        progress = ticket.unread.popleft() if ticket.unread else ticket.progress
        return Pending(ticket, progress)

    async def _record(self, ticket: Ticket) -> None:
        """The row of a request about to be answered 202. When it cannot be written (a full
        disk, a lock held too long) the client gets the error and the request is stopped,
        unless it ended meanwhile: then the outcome is answered (an error would make its
        client send it again)."""
        try:
            await self.dispatch.record(ticket)
        except NvcfError:
            if not ticket.done.done():
                self.dispatch.cancel(ticket.request_id, "it could not be recorded")
                raise

    def cancel(self, ticket: Ticket, reason: str) -> None:
        """The client went away before it had an answer: stop the request (spec §2.3.4).
        Not one with an Idempotency-Key: it runs to its end, for the retry of its key."""
        if not ticket.done.done() and ticket.record.idempotency_key is None:
            self.dispatch.cancel(ticket.request_id, reason)

    def delivered(self, ticket: Ticket) -> None:
        """The client has the final answer: forget the request (a later poll is 404). A
        keyed request whose client left before its end stays known, for its key's retry
        (the dispatcher's sweep forgets it once it ended)."""
        if ticket.record.idempotency_key is not None and not ticket.done.done():
            return
        self.dispatch.forget(ticket.request_id)
        # A keyed request's row stays until it expires: a retry of its key, or a status poll
        # of a client that got a 202 before that retry, may still read it.
        if ticket.kept and ticket.record.idempotency_key is None:
            self.store.purge(ticket.request_id)

    async def poll(self, principal: Principal, request_id: str, poll: int) -> Outcome | Pending:
        """I3: long-poll a request by id (only its owner may)."""
        require_scope(principal, "invoke_function")
        rid = parse_uuid(request_id)
        ticket = self.dispatch.ticket(rid) if rid else None
        if ticket is not None:
            self._owned(principal, ticket.record)
            if ticket.stream is not None:
                raise NotFound(
                    f"Request id '{request_id}' is a streamed or path-preserving request: its "
                    "answer goes only to the connection that made it"
                )
            result = await self.wait(ticket, poll)
            if not isinstance(result, Pending):
                self.delivered(ticket)
            return result
        if rid is None:
            raise NotFound(f"Request id '{request_id}' not found")
        # Purges are not awaited: let the ones already asked for land before reading, so a
        # result that was collected is never served twice.
        await self.store.flush()
        stored = await self.store.get(rid)
        record, outcome = stored if stored else (None, None)
        if record is None or outcome is None:
            raise NotFound(f"Request id '{request_id}' not found")
        self._owned(principal, record)
        self.store.purge(record.request_id)
        return outcome

    @staticmethod
    def _owned(principal: Principal, record: RequestRecord) -> None:
        if record.nca_id != principal.nca_id:
            raise NotFound(f"Request id '{record.request_id}' not found")
        require_function(principal, record.function_id, record.version_id)


def _wrong_protocol(version: VersionInfo) -> str:
    where = f"Function id '{version.function_id}' version '{version.version_id}'"
    if version.grpc:
        return f"{where} is a gRPC function (inferenceUrl /grpc): call it on the gRPC endpoint"
    return f"{where} is not a gRPC function (its inferenceUrl is not /grpc): invoke it over HTTP"


async def _wait_done(fut: asyncio.Future[Any], timeout_s: float) -> bool:
    """Wait until `fut` is done or `timeout_s` passes, whichever first; whether it is done.
    `fut` is never cancelled. One timer and one callback: asyncio.wait_for(shield(...)) costs
    several futures and, on a timeout, a cancel-and-wait round trip, for every request that
    waits out its poll window."""
    if fut.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(timeout_s, wake)
    fut.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        fut.remove_done_callback(wake)
    return fut.done()


@dataclass
class QueueEntry:
    version_id: str
    name: str
    status: str
    depth: int


class Queues:
    """Q1-Q3 (spec §2.4): queue depth per version and a request's position, from the queue."""

    def __init__(self, invocations: Invocations) -> None:
        self.inv = invocations

    async def depths(self, principal: Principal, fid: str, vid: str | None) -> list[QueueEntry]:
        require_scope(principal, "queue_details")
        versions = reachable(principal, fid, vid, await self.inv.versions_of(fid))
        if not versions:
            where = f"Function id '{fid}'" + (f" version '{vid}'" if vid else "")
            raise NotFound(f"{where}: Not found in account '{principal.nca_id}'")
        if vid is None:  # Q1 lists the deployed versions (and any still draining a queue)
            versions = [
                v
                for v in versions
                if v.status != FunctionStatus.INACTIVE or self.inv.dispatch.depth(v.version_id)
            ]
        return [
            QueueEntry(v.version_id, v.name, v.status.value, self.inv.dispatch.depth(v.version_id))
            for v in versions
        ]

    def position(self, principal: Principal, request_id: str) -> tuple[RequestRecord, int]:
        require_scope(principal, "queue_details")
        rid = parse_uuid(request_id)
        ticket = self.inv.dispatch.ticket(rid) if rid else None
        position = self.inv.dispatch.position(rid) if rid and ticket else None
        if ticket is None or position is None or ticket.record.nca_id != principal.nca_id:
            raise NotFound(f"Request id '{request_id}' not found in any queue")
        require_function(principal, ticket.record.function_id, ticket.record.version_id)
        return ticket.record, position
