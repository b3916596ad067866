"""Telemetry endpoints of an account (tables `telemetries`, `telemetry_secrets`, spec §2.8).

A telemetry's secret value (a string, or a JSON object for providers that take several
credentials) is sealed (store/sealing.py) for its telemetry and kept in its own table, read
only by `secret`: no listing or lookup returns it, and the database file holds it sealed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nvcf_lite.models import Telemetry, TelemetryProtocol, TelemetryProvider, TelemetryType
from nvcf_lite.store.sealing import SecretBox
from nvcf_lite.store.sqlite import Database, Row

_SELECT = (
    "SELECT telemetry_id, name, endpoint, protocol, provider, types, created_at FROM telemetries"
)
_ORDER = "ORDER BY created_at, rowid"
_secret_decoder = msgspec.json.Decoder(str | dict[str, Any])


def _telemetry(row: Row) -> Telemetry:
    return Telemetry(
        telemetry_id=row["telemetry_id"],
        name=row["name"],
        endpoint=row["endpoint"],
        protocol=TelemetryProtocol(row["protocol"]),
        provider=TelemetryProvider(row["provider"]),
        types=tuple(msgspec.json.decode(row["types"], type=list[TelemetryType])),
        created_at=row["created_at"],
    )


def _context(telemetry_id: str) -> str:
    return f"telemetry-secret:{telemetry_id}"


class NameTaken(Exception):
    """Another telemetry of the account has this name."""


class TelemetriesRepo:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    def _sealed(self, telemetry_id: str, value: str | dict[str, Any]) -> str:
        return self._box.seal(msgspec.json.encode(value), _context(telemetry_id))

    async def insert(self, nca_id: str, telemetry: Telemetry, secret: str | dict[str, Any]) -> None:
        """Store a telemetry and its sealed secret in one transaction; NameTaken if the account
        has a telemetry of that name already (checked inside the write transaction)."""
        tid = telemetry.telemetry_id
        async with self._db.transaction() as tx:
            taken = await tx.fetch_one(
                "SELECT 1 FROM telemetries WHERE nca_id = ? AND name = ?", (nca_id, telemetry.name)
            )
            if taken is not None:
                raise NameTaken(telemetry.name)
            await tx.execute(
                "INSERT INTO telemetries (telemetry_id, nca_id, name, endpoint, protocol,"
                " provider, types, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    tid,
                    nca_id,
                    telemetry.name,
                    telemetry.endpoint,
                    telemetry.protocol.value,
                    telemetry.provider.value,
                    msgspec.json.encode([t.value for t in telemetry.types]).decode(),
                    telemetry.created_at,
                ),
            )
            await tx.execute(
                "INSERT INTO telemetry_secrets (telemetry_id, secret) VALUES (?, ?)",
                (tid, self._sealed(tid, secret)),
            )

    async def get(self, nca_id: str, telemetry_id: str) -> Telemetry | None:
        row = await self._db.fetch_one(
            f"{_SELECT} WHERE nca_id = ? AND telemetry_id = ?", (nca_id, telemetry_id)
        )
        return _telemetry(row) if row else None

    async def list(self, nca_id: str) -> list[Telemetry]:
        rows = await self._db.fetch_all(f"{_SELECT} WHERE nca_id = ? {_ORDER}", (nca_id,))
        return [_telemetry(r) for r in rows]

    async def delete(self, nca_id: str, telemetry_id: str) -> bool:
        """Delete a telemetry; its secret goes with it (ON DELETE CASCADE)."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "DELETE FROM telemetries WHERE nca_id = ? AND telemetry_id = ?",
                (nca_id, telemetry_id),
            )
        return changed > 0

    async def set_secret(self, nca_id: str, telemetry_id: str, value: str | dict[str, Any]) -> bool:
        """Replace a telemetry's secret value; False if the telemetry is not the account's."""
        async with self._db.transaction() as tx:
            owned = await tx.fetch_one(
                "SELECT 1 FROM telemetries WHERE nca_id = ? AND telemetry_id = ?",
                (nca_id, telemetry_id),
            )
            if owned is None:
                return False
            await tx.execute(
                "INSERT OR REPLACE INTO telemetry_secrets (telemetry_id, secret) VALUES (?, ?)",
                (telemetry_id, self._sealed(telemetry_id, value)),
            )
        return True

    async def secret(self, telemetry_id: str) -> str | dict[str, Any] | None:
        """The secret value of a telemetry (for shipping); None when it has none."""
        row = await self._db.fetch_one(
            "SELECT secret FROM telemetry_secrets WHERE telemetry_id = ?", (telemetry_id,)
        )
        if row is None:
            return None
        value: str | dict[str, Any] = _secret_decoder.decode(
            self._box.open(row["secret"], _context(telemetry_id))
        )
        return value
