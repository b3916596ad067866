"""Webhook deliveries (beyond NVCF): the signed POST of a request's final result.

A delivery row is written in the same transaction as its request's end (store/requests.py),
so a result that was recorded is delivered, also after a crash. The sender
(workers/webhooks.py) reads the due ones and records each attempt here:
pending -> delivered | failed (attempts exhausted).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import msgspec

from nvcf_lite.models import Outcome
from nvcf_lite.store.key_files import load_key_file
from nvcf_lite.store.sqlite import Database

SECRET_FILE = "webhook.key"


def load_webhook_secret(data_dir: Path) -> str:
    """The generated webhook secret (64 hex characters in `<data_dir>/webhook.key`, mode
    0600), made once: receivers read it from there when `webhooks.secret` is not set."""
    made = load_key_file(data_dir, SECRET_FILE, make=lambda n: secrets.token_hex(n).encode())
    return made.decode("ascii", "replace").strip()


_outcome = msgspec.json.Decoder(Outcome)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    request_id: str
    function_id: str
    version_id: str
    nca_id: str
    url: str
    outcome: Outcome
    finished_at: float
    state: str
    attempts: int
    next_at: float
    last_error: str | None = None


_COLUMNS = (
    "delivery_id, request_id, function_id, version_id, nca_id, url, outcome, finished_at,"
    " state, attempts, next_at, last_error"
)


class DeliveriesRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def due(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries whose next attempt is due, the oldest first."""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ?"
            " ORDER BY next_at LIMIT ?",
            (now, limit),
        )
        return [Delivery(**{**dict(r), "outcome": _outcome.decode(r["outcome"])}) for r in rows]

    async def next_due(self) -> float | None:
        """When the next pending delivery is due (None: nothing pending)."""
        row = await self._db.fetch_one(
            "SELECT min(next_at) AS at FROM webhook_deliveries WHERE state = 'pending'"
        )
        return None if row is None or row["at"] is None else float(row["at"])

    async def get(self, delivery_id: str) -> Delivery | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE delivery_id = ?", (delivery_id,)
        )
        if row is None:
            return None
        return Delivery(**{**dict(row), "outcome": _outcome.decode(row["outcome"])})

    async def delivered(self, delivery_id: str, now: float) -> None:
        await self._end(delivery_id, "delivered", now, None)

    async def failed(self, delivery_id: str, now: float, error: str) -> None:
        """No attempt left: it stays as `failed` with the last error, for the operator."""
        await self._end(delivery_id, "failed", now, error)

    async def retry(self, delivery_id: str, next_at: float, error: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?,"
                " last_error = ? WHERE delivery_id = ? AND state = 'pending'",
                (next_at, error, delivery_id),
            )

    async def _end(self, delivery_id: str, state: str, now: float, error: str | None) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, ended_at = ?,"
                " last_error = ? WHERE delivery_id = ? AND state = 'pending'",
                (state, now, error, delivery_id),
            )

    async def expire(self, before: float) -> int:
        """Delete ended deliveries (delivered or failed) older than `before`; how many."""
        async with self._db.transaction() as tx:
            return await tx.execute(
                "DELETE FROM webhook_deliveries WHERE state != 'pending' AND ended_at < ?",
                (before,),
            )
