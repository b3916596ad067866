"""Idempotency keys (beyond NVCF): a retry with the same `Idempotency-Key` gets the same
request id and result, and the function never runs twice for it.

Keys are per account (nca_id), live for `idempotency.ttl_s` from the first accept, and stand
for one request: a retry must match its function, version, path and body (its fingerprint),
else 409 Conflict (the key is in use for another request; 422 would say the request itself
is malformed, which it is not). Concurrent retries of one key are serialised by a lock per
key held until the first accept is committed, so one key never accepts two requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nvcf_lite.domain.auth import covers, covers_shared, require_scope
from nvcf_lite.domain.tickets import Ticket
from nvcf_lite.errors import Conflict, Forbidden, Invalid, NotFound
from nvcf_lite.models import Outcome, Principal, RequestRecord
from nvcf_lite.store.idempotency import IdempotencyRepo, KeyedRequest

HEADER = "idempotency-key"
MAX_KEY = 255


def check_key(key: str) -> str:
    """The key as sent; 400 when it is empty, too long or not printable ASCII."""
    if not 0 < len(key) <= MAX_KEY or not all(" " <= c <= "~" for c in key):
        raise Invalid(
            f"Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters, "
            f"got {len(key)} character(s)"
        )
    return key


# The org and team path families name the same invocation as /v2/nvcf (spec §1.1).
_FAMILY = re.compile(r"^/v2/orgs/[^/]+(?:/teams/[^/]+)?/nvcf/")


def fingerprint(function_id: str, version_id: str | None, path: str, body: bytes) -> str:
    """What a retry must match: the function, the version asked for, the path (any path
    family counts as /v2/nvcf) and the body."""
    digest = hashlib.sha256()
    for part in (function_id, version_id or "", _FAMILY.sub("/v2/nvcf/", path)):
        digest.update(part.encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


LiveTicket = Callable[[str], Ticket | None]
StoredOutcome = Callable[[str], Awaitable[Outcome | None]]


@dataclass
class _Held:
    lock: asyncio.Lock
    users: int = 0


class IdempotencyKeys:
    def __init__(
        self,
        repo: IdempotencyRepo,
        live_ticket: LiveTicket,
        stored_outcome: StoredOutcome,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.live_ticket = live_ticket
        self.stored_outcome = stored_outcome
        self.clock = clock
        self._held: dict[tuple[str, str], _Held] = {}

    async def submit(
        self,
        principal: Principal,
        key: str,
        print_: str,
        accept: Callable[[], Awaitable[Ticket]],
    ) -> Ticket:
        """The ticket of the request this key stands for: the one accepted before (live or
        ended), else the one `accept` makes now."""
        require_scope(principal, "invoke_function")  # before a replay can leak a result
        held = self._held.setdefault((principal.nca_id, key), _Held(asyncio.Lock()))
        held.users += 1
        try:
            async with held.lock:
                found = await self.repo.get(principal.nca_id, key, self.clock())
                if found is None:
                    return await accept()
                return await self._replay(principal, key, print_, found)
        finally:
            held.users -= 1
            if not held.users:
                self._held.pop((principal.nca_id, key), None)

    async def _replay(
        self, principal: Principal, key: str, print_: str, found: KeyedRequest
    ) -> Ticket:
        if found.fingerprint != print_:
            raise Conflict(
                f"Idempotency-Key '{key}' was used for another request (request id "
                f"'{found.request_id}') with a different function, path or body; use a new key"
            )
        fid, vid = found.function_id, found.version_id
        # its own account's function, or one shared with it: the key must reach it still
        if not (
            covers(principal.resources, fid, vid) or covers_shared(principal.resources, fid, vid)
        ):
            raise Forbidden(
                f"Function id '{fid}': Missing resource entry in ApiKey for the function"
            )
        ticket = self.live_ticket(found.request_id)
        if ticket is not None:
            return ticket
        outcome = found.outcome or await self.stored_outcome(found.request_id)
        if outcome is None:
            raise NotFound(
                f"Idempotency-Key '{key}': its request '{found.request_id}' is no longer known"
            )
        return _ended(found, principal, outcome)


def _ended(found: KeyedRequest, principal: Principal, outcome: Outcome) -> Ticket:
    """A ticket that is over already, for answering a retry of an ended request."""
    record = RequestRecord(
        request_id=found.request_id,
        function_id=found.function_id,
        version_id=found.version_id,
        nca_id=principal.nca_id,
        key_id=principal.key_id,
        method="POST",
        path="",
        headers=[],
        body=b"",
        poll_seconds=0,
        mode="pexec",
        accepted_at=0.0,
        idempotency_key="",
    )
    done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    done.set_result(outcome)
    return Ticket(record=record, subject=principal.subject, done=done)
