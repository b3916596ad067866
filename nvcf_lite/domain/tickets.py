"""The in-memory side of one accepted request: its `Ticket` and the lifecycle it goes through.

A ticket is in one `Stage` at a time and moves only through its transition methods, which
raise `IllegalTransition` for a move its stage does not allow:

    QUEUED --start--> RUNNING --requeue--> QUEUED      (never reached its container: retry)
    QUEUED | RUNNING --finishing--> FINISHING --finished(kept)--> DONE | KEPT

Beside the stage a ticket carries three facts that do not order it: `detached` (a handler
answered 202: the client polls for the outcome, so it is kept), `leased` (it ran long enough
for a lease to count an attempt) and `cancelled` (why nobody waits for it any more).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nvcf_lite.domain.invocation_rules import status_header
from nvcf_lite.models import Outcome, RequestRecord

# Unread partial responses kept per request; older ones are dropped (spec §2.3.4).
MAX_UNREAD_PROGRESS = 256


class Stage(enum.Enum):
    QUEUED = "queued"  # in its version's queue
    RUNNING = "running"  # on an instance
    FINISHING = "finishing"  # its outcome is being recorded (only the first one counts)
    DONE = "done"  # recorded; the outcome goes to the connection that waits for it
    KEPT = "kept"  # recorded and stored for a later status poll


class IllegalTransition(RuntimeError):
    """A ticket was asked to move in a way its stage does not allow (a bug)."""


@dataclass
class Progress:
    percent: int
    body: bytes
    seq: int


@dataclass
class StreamReply:
    """A pass-through answer (SSE or path-preserving): headers now, body as it arrives."""

    status: int
    headers: list[tuple[str, str]]
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


class UpstreamChannel(Protocol):
    """A channel to one instance's gRPC server (grpc.aio.Channel, made in workers/)."""

    def stream_stream(self, method: str) -> Any: ...


@dataclass
class Lent:
    """A gRPC call's instance slot, lent to the call's handler, which proxies the call live
    over `channel`; the dispatcher holds the slot until the handler sets `ended`."""

    instance_id: str
    channel: UpstreamChannel
    metadata: list[tuple[str, str]]  # the platform's, for the container (nvcf-reqid, ...)
    ended: asyncio.Future[Outcome]


@dataclass(eq=False)
class Ticket:
    """One accepted request in memory: its record, its futures and where it is in its life."""

    record: RequestRecord
    subject: str
    done: asyncio.Future[Outcome]
    stream: asyncio.Future[StreamReply | Outcome] | None = None
    lent: asyncio.Future[Lent] | None = None  # a gRPC call's instance slot, once it has one
    progress: Progress | None = None  # the latest partial response
    unread: deque[Progress] = field(default_factory=lambda: deque(maxlen=MAX_UNREAD_PROGRESS))
    wake: asyncio.Future[None] | None = None  # resolved on progress or when done
    watcher: asyncio.Task[None] | None = None  # watches its progress file once it runs long
    last_poll: float = field(default_factory=time.monotonic)
    waiters: int = 0  # handlers long-polling it right now (never abandoned meanwhile)
    note: str | None = None  # why it waits (e.g. "waiting for an instance to start")
    tried: set[str] = field(default_factory=set)  # instances that never received it
    queued_at: float = field(default_factory=time.monotonic)
    dispatched_at: float = 0.0
    first_byte_at: float = 0.0
    priority: int = 0  # its queue serves higher first (llmInvocationConfig.priority)
    stream_claimed: bool = False  # a handler passes its stream on; a keyed retry may not
    # The commit of its row in the durable queue, once written (None: not yet). A request is
    # written when it is first promised to a client that may come back for it: its 202, or
    # at its accept when it carries an Idempotency-Key or a webhook (see Invocations._accept).
    recorded: asyncio.Future[None] | None = None
    _stage: Stage = field(default=Stage.QUEUED, init=False, repr=False)
    _detached: bool = field(default=False, init=False, repr=False)
    _leased: bool = field(default=False, init=False, repr=False)
    _cancelled: str | None = field(default=None, init=False, repr=False)
    _ran: bool = field(default=False, init=False, repr=False)  # it was RUNNING when it ended

    @classmethod
    def recovered(
        cls, record: RequestRecord, subject: str, done: asyncio.Future[Outcome]
    ) -> Ticket:
        """A request a previous process accepted: its client left with that process, so
        its outcome is kept for a status poll."""
        ticket = cls(record=record, subject=subject, done=done)
        ticket._detached = True
        ticket.recorded = done.get_loop().create_future()
        ticket.recorded.set_result(None)  # its row is what it was read from
        return ticket

    # -- the stage ------------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def finished(self) -> bool:
        """Its outcome is being recorded or was: no other outcome counts."""
        return self._stage in _ENDING

    @property
    def kept(self) -> bool:
        """The outcome was stored for a later status poll."""
        return self._stage is Stage.KEPT

    def start(self) -> None:
        """QUEUED -> RUNNING: an instance slot took it."""
        self._move(Stage.QUEUED, Stage.RUNNING)
        self.note = None

    def requeue(self) -> None:
        """RUNNING -> QUEUED: it never reached its container and goes back in line."""
        self._move(Stage.RUNNING, Stage.QUEUED)

    def finishing(self) -> bool:
        """QUEUED | RUNNING -> FINISHING; whether to keep the outcome for a status poll."""
        if self._stage is not Stage.QUEUED and self._stage is not Stage.RUNNING:
            raise IllegalTransition(f"request {self.request_id}: {self._stage.value} -> finishing")
        self._ran = self._stage is Stage.RUNNING
        self._stage = Stage.FINISHING
        # From here no handler detaches it: one whose window ends during the write waits for
        # the outcome (Invocations.wait), so the decision to keep it stands.
        return self._detached

    def finished_as(self, kept: bool) -> None:
        """FINISHING -> DONE (or KEPT, stored for a later status poll)."""
        self._move(Stage.FINISHING, Stage.KEPT if kept else Stage.DONE)

    def _move(self, source: Stage, target: Stage) -> None:
        if self._stage is not source:
            raise IllegalTransition(
                f"request {self.request_id}: {self._stage.value} -> {target.value}"
            )
        self._stage = target

    # -- facts beside the stage -----------------------------------------------------------

    @property
    def detached(self) -> bool:
        """A handler answered 202: the client polls for the outcome."""
        return self._detached

    def detach(self) -> None:
        if self._stage is Stage.DONE or self._stage is Stage.KEPT:
            raise IllegalTransition(f"request {self.request_id}: detached after its end")
        self._detached = True

    @property
    def leased(self) -> bool:
        """A lease was written: it ran long enough to count an attempt after a restart."""
        return self._leased

    def lease(self) -> None:
        if self._stage is not Stage.RUNNING or self._leased:
            raise IllegalTransition(f"request {self.request_id}: lease while {self._stage.value}")
        self._leased = True

    @property
    def cancelled(self) -> str | None:
        """Why it was cancelled (its client left), once it was."""
        return self._cancelled

    def cancel(self, reason: str) -> None:
        if self._cancelled is not None or self.done.done():
            raise IllegalTransition(f"request {self.request_id}: cancelled twice or after its end")
        self._cancelled = reason

    # -- progress and status --------------------------------------------------------------

    def add_progress(self, percent: int, body: bytes) -> None:
        seq = self.progress.seq + 1 if self.progress else 1
        self.progress = Progress(percent=max(0, min(100, percent)), body=body, seq=seq)
        self.unread.append(self.progress)
        self.notify()

    def notify(self) -> None:
        """Wake a handler waiting on this request (a partial response, or the end)."""
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def nvcf_status(self) -> str:
        if self.done.done():
            return status_header(self.done.result().status)
        running = self._stage is Stage.RUNNING or (self._stage in _ENDING and self._ran)
        return "in-progress" if running else "pending-evaluation"


_ENDING = (Stage.FINISHING, Stage.DONE, Stage.KEPT)
