"""API keys table."""

from __future__ import annotations

import msgspec

from nvcf_lite.models import ApiKey, KeyResource
from nvcf_lite.store.sqlite import Database, Row

_COLUMNS = (
    "key_id, key_prefix, nca_id, description, scopes, resources, created_at, expires_at,"
    " revoked_at, teams"
)
# a key with the org name of its account (none when the account row is missing)
_SELECT = (
    "SELECT key_id, key_prefix, api_keys.nca_id AS nca_id, description, scopes, resources,"
    " api_keys.created_at AS created_at, expires_at, revoked_at, teams,"
    " coalesce(accounts.org_name, '') AS org_name"
    " FROM api_keys LEFT JOIN accounts ON accounts.nca_id = api_keys.nca_id"
)


def _key(row: Row) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        key_prefix=row["key_prefix"],
        nca_id=row["nca_id"],
        description=row["description"],
        scopes=tuple(msgspec.json.decode(row["scopes"], type=list[str])),
        resources=tuple(msgspec.json.decode(row["resources"], type=list[KeyResource])),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        teams=tuple(msgspec.json.decode(row["teams"], type=list[str])),
        org_name=row["org_name"],
    )


class KeysRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, key: ApiKey, key_hash: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO api_keys ({_COLUMNS}, key_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key.key_id,
                    key.key_prefix,
                    key.nca_id,
                    key.description,
                    msgspec.json.encode(list(key.scopes)).decode(),
                    msgspec.json.encode(list(key.resources)).decode(),
                    key.created_at,
                    key.expires_at,
                    key.revoked_at,
                    msgspec.json.encode(list(key.teams)).decode(),
                    key_hash,
                ),
            )

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        row = await self._db.fetch_one(f"{_SELECT} WHERE key_hash = ?", (key_hash,))
        return _key(row) if row else None

    async def by_id(self, key_id: str) -> ApiKey | None:
        row = await self._db.fetch_one(f"{_SELECT} WHERE key_id = ?", (key_id,))
        return _key(row) if row else None

    async def all(self, nca_id: str | None = None) -> list[ApiKey]:
        """Every key, or those of one account."""
        where, args = (" WHERE api_keys.nca_id = ?", (nca_id,)) if nca_id is not None else ("", ())
        rows = await self._db.fetch_all(f"{_SELECT}{where} ORDER BY api_keys.created_at", args)
        return [_key(r) for r in rows]

    async def count_active(self) -> int:
        row = await self._db.fetch_one("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        return int(row[0]) if row else 0

    async def revoke(
        self, key_id_or_prefix: str, when: str, nca_id: str | None = None
    ) -> list[str]:
        """Revoke keys whose id or printed prefix matches (of one account, if given); returns
        the ids revoked."""
        account = " AND nca_id = ?" if nca_id is not None else ""
        async with self._db.transaction() as tx:
            rows = await tx.fetch_all(
                "SELECT key_id FROM api_keys WHERE revoked_at IS NULL"
                f" AND (key_id = ? OR key_prefix = ?){account}",
                (key_id_or_prefix, key_id_or_prefix, *((nca_id,) if nca_id is not None else ())),
            )
            ids = [r["key_id"] for r in rows]
            if len(ids) == 1:
                await tx.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (when, ids[0])
                )
            return ids
