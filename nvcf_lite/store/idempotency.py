"""Idempotency keys (beyond NVCF): one row per (account, key) for the TTL.

The row is written in the accept's transaction and gets the outcome in the request's end's
transaction (both in store/requests.py, through the group commit); this module reads it and
sweeps expired rows.
"""

from __future__ import annotations

import msgspec

from nvcf_lite.models import Outcome
from nvcf_lite.store.sqlite import Database

_outcome = msgspec.json.Decoder(Outcome)


class KeyedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a key stands for: its request, what a retry must match, and how it ended."""

    fingerprint: str
    request_id: str
    function_id: str
    version_id: str
    outcome: Outcome | None


class IdempotencyRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, nca_id: str, key: str, now: float) -> KeyedRequest | None:
        """The key's live (unexpired) row, if any."""
        row = await self._db.fetch_one(
            "SELECT fingerprint, request_id, function_id, version_id, result"
            " FROM idempotency_keys WHERE nca_id = ? AND idem_key = ? AND expires_at > ?",
            (nca_id, key, now),
        )
        if row is None:
            return None
        result = row["result"]
        return KeyedRequest(
            fingerprint=row["fingerprint"],
            request_id=row["request_id"],
            function_id=row["function_id"],
            version_id=row["version_id"],
            outcome=_outcome.decode(result) if result is not None else None,
        )

    async def expire(self, now: float) -> int:
        """Delete the keys past their TTL; how many."""
        async with self._db.transaction() as tx:
            return await tx.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
