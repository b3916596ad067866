"""Function versions and their secrets (tables `function_versions`, `function_secrets`).

The registered record is kept as msgspec JSON in `spec`; `status` has its own column and is
the truth (the scheduler changes it with `set_status` while an update may rewrite `spec`, so
neither can undo the other). Secret values live only in `function_secrets`, read by `secrets`,
sealed (store/sealing.py) for their version: the database file holds no secret in plain text.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nvcf_lite.models import FunctionStatus, FunctionVersion, now_iso
from nvcf_lite.store.sealing import SecretBox, is_sealed
from nvcf_lite.store.sqlite import Database, Row

_SELECT = "SELECT version_id, status, spec FROM function_versions"
_ORDER = "ORDER BY created_at, rowid"
_decoder = msgspec.json.Decoder(FunctionVersion)
_secrets_decoder = msgspec.json.Decoder(dict[str, Any])


def _version(row: Row) -> FunctionVersion:
    stored = _decoder.decode(row["spec"])
    return msgspec.structs.replace(stored, status=FunctionStatus(row["status"]))


def _spec(version: FunctionVersion) -> str:
    # active_instances is a view of the deployment, never part of what was registered
    return msgspec.json.encode(msgspec.structs.replace(version, active_instances=None)).decode()


def _context(version_id: str) -> str:
    return f"function-secrets:{version_id}"


class FunctionsRepo:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    def _sealed(self, version_id: str, secrets: dict[str, Any]) -> str:
        return self._box.seal(msgspec.json.encode(secrets), _context(version_id))

    async def insert(self, version: FunctionVersion, secrets: dict[str, Any] | None = None) -> None:
        """Store a new version and (in the same transaction) its secret values."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO function_versions (version_id, function_id, nca_id, name, status,"
                " created_at, updated_at, spec) VALUES (?,?,?,?,?,?,?,?)",
                (
                    version.version_id,
                    version.function_id,
                    version.nca_id,
                    version.name,
                    version.status.value,
                    version.created_at,
                    version.created_at,
                    _spec(version),
                ),
            )
            if secrets:
                await tx.execute(
                    "INSERT INTO function_secrets (version_id, secrets) VALUES (?, ?)",
                    (version.version_id, self._sealed(version.version_id, secrets)),
                )

    async def get(self, function_id: str, version_id: str) -> FunctionVersion | None:
        row = await self._db.fetch_one(
            f"{_SELECT} WHERE function_id = ? AND version_id = ?", (function_id, version_id)
        )
        return _version(row) if row else None

    async def get_version(self, version_id: str) -> FunctionVersion | None:
        row = await self._db.fetch_one(f"{_SELECT} WHERE version_id = ?", (version_id,))
        return _version(row) if row else None

    async def list_versions(self, function_id: str) -> list[FunctionVersion]:
        rows = await self._db.fetch_all(f"{_SELECT} WHERE function_id = ? {_ORDER}", (function_id,))
        return [_version(r) for r in rows]

    async def list_every(self) -> list[FunctionVersion]:
        """Every account's versions (the workers' view)."""
        rows = await self._db.fetch_all(f"{_SELECT} {_ORDER}")
        return [_version(r) for r in rows]

    async def list_all(self, nca_id: str) -> list[FunctionVersion]:
        rows = await self._db.fetch_all(f"{_SELECT} WHERE nca_id = ? {_ORDER}", (nca_id,))
        return [_version(r) for r in rows]

    async def function_ids(self, nca_id: str) -> list[str]:
        """Distinct function ids of an account, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT function_id FROM function_versions WHERE nca_id = ?"
            " GROUP BY function_id ORDER BY min(created_at), min(rowid)",
            (nca_id,),
        )
        return [r["function_id"] for r in rows]

    async def update_spec(self, version: FunctionVersion) -> bool:
        """Rewrite the registered record of a version (not its status); False if it is gone."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE function_versions SET spec = ?, updated_at = ? WHERE version_id = ?",
                (_spec(version), now_iso(), version.version_id),
            )
        return changed > 0

    async def update_secrets(self, version: FunctionVersion, secrets: dict[str, Any]) -> bool:
        """Replace a version's secret values and rewrite its record (the secret names) in one
        transaction; False if the version is gone."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE function_versions SET spec = ?, updated_at = ? WHERE version_id = ?",
                (_spec(version), now_iso(), version.version_id),
            )
            if changed:
                await tx.execute(
                    "INSERT OR REPLACE INTO function_secrets (version_id, secrets) VALUES (?, ?)",
                    (version.version_id, self._sealed(version.version_id, secrets)),
                )
        return changed > 0

    async def delete(self, function_id: str, version_id: str) -> bool:
        """Delete a version; its secrets go with it (ON DELETE CASCADE), and so do its
        authorized parties (and the function's, with its last version)."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "DELETE FROM function_versions WHERE function_id = ? AND version_id = ?",
                (function_id, version_id),
            )
            await tx.execute(
                "DELETE FROM authorized_parties WHERE function_id = ? AND (version_id = ?"
                " OR NOT EXISTS (SELECT 1 FROM function_versions WHERE function_id = ?))",
                (function_id, version_id, function_id),
            )
        return changed > 0

    async def set_status(self, version_id: str, status: FunctionStatus) -> bool:
        """Set a version's status; False if the version does not exist."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE function_versions SET status = ?, updated_at = ? WHERE version_id = ?",
                (status.value, now_iso(), version_id),
            )
        return changed > 0

    async def statuses(self) -> dict[str, FunctionStatus]:
        """version_id -> status of every stored version."""
        rows = await self._db.fetch_all("SELECT version_id, status FROM function_versions")
        return {r["version_id"]: FunctionStatus(r["status"]) for r in rows}

    async def secrets(self, version_id: str) -> dict[str, Any]:
        """Secret name -> value (a string or a JSON object) of a version; {} when none."""
        row = await self._db.fetch_one(
            "SELECT secrets FROM function_secrets WHERE version_id = ?", (version_id,)
        )
        if row is None:
            return {}
        return _secrets_decoder.decode(self._box.open(row["secrets"], _context(version_id)))

    async def seal_legacy(self) -> int:
        """Seal the secrets stored in plain text before sealing existed; how many were."""
        rows = await self._db.fetch_all("SELECT version_id, secrets FROM function_secrets")
        plain = [(r["version_id"], r["secrets"]) for r in rows if not is_sealed(r["secrets"])]
        if not plain:
            return 0
        async with self._db.transaction() as tx:
            for version_id, value in plain:
                sealed = self._box.seal(value.encode(), _context(version_id))
                await tx.execute(
                    "UPDATE function_secrets SET secrets = ? WHERE version_id = ? AND secrets = ?",
                    (sealed, version_id, value),
                )
        return len(plain)
