"""Tables `assets` and `result_blobs`: metadata of the bytes kept in the blob store."""

from __future__ import annotations

from collections.abc import Iterable

from nvcf_lite.models import Asset
from nvcf_lite.store.sqlite import Database, Row

_COLUMNS = (
    "asset_id, nca_id, content_type, description, created_at, upload_expires_at, expires_at,"
    " uploaded_at, size_bytes, sha256"
)


def _asset(row: Row) -> Asset:
    return Asset(
        asset_id=row["asset_id"],
        nca_id=row["nca_id"],
        content_type=row["content_type"],
        description=row["description"],
        created_at=row["created_at"],
        upload_expires_at=row["upload_expires_at"],
        expires_at=row["expires_at"],
        uploaded_at=row["uploaded_at"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
    )


class AssetsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, asset: Asset) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO assets ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    asset.asset_id,
                    asset.nca_id,
                    asset.content_type,
                    asset.description,
                    asset.created_at,
                    asset.upload_expires_at,
                    asset.expires_at,
                    asset.uploaded_at,
                    asset.size_bytes,
                    asset.sha256,
                ),
            )

    async def get(self, asset_id: str) -> Asset | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM assets WHERE asset_id = ?", (asset_id,)
        )
        return _asset(row) if row else None

    async def of_account(self, nca_id: str) -> list[Asset]:
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM assets WHERE nca_id = ? ORDER BY created_at, rowid",
            (nca_id,),
        )
        return [_asset(r) for r in rows]

    async def many(self, asset_ids: Iterable[str]) -> dict[str, Asset]:
        ids = list(asset_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM assets WHERE asset_id IN ({marks})", ids
        )
        return {r["asset_id"]: _asset(r) for r in rows}

    async def mark_uploaded(self, asset_id: str, at: str, size: int, sha256: str) -> bool:
        """Record the stored bytes; False when the row is gone or was uploaded already."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE assets SET uploaded_at = ?, size_bytes = ?, sha256 = ?"
                " WHERE asset_id = ? AND uploaded_at IS NULL",
                (at, size, sha256, asset_id),
            )
        return changed == 1

    async def delete(self, asset_ids: Iterable[str]) -> int:
        ids = list(asset_ids)
        if not ids:
            return 0
        async with self._db.transaction() as tx:
            return await tx.execute(
                f"DELETE FROM assets WHERE asset_id IN ({','.join('?' * len(ids))})", ids
            )

    async def expired(self, now: float) -> list[str]:
        """Assets past their lifetime, and reservations whose upload URL expired unused."""
        rows = await self._db.fetch_all(
            "SELECT asset_id FROM assets WHERE expires_at <= ?"
            " OR (uploaded_at IS NULL AND upload_expires_at <= ?)",
            (now, now),
        )
        return [r["asset_id"] for r in rows]

    # -- large results ------------------------------------------------------------------------

    async def insert_result(self, request_id: str, size: int, at: str, expires_at: float) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT OR REPLACE INTO result_blobs (request_id, size_bytes, created_at,"
                " expires_at) VALUES (?,?,?,?)",
                (request_id, size, at, expires_at),
            )

    async def result_expiry(self, request_id: str) -> float | None:
        row = await self._db.fetch_one(
            "SELECT expires_at FROM result_blobs WHERE request_id = ?", (request_id,)
        )
        return float(row["expires_at"]) if row else None

    async def expired_results(self, now: float) -> list[str]:
        rows = await self._db.fetch_all(
            "SELECT request_id FROM result_blobs WHERE expires_at <= ?", (now,)
        )
        return [r["request_id"] for r in rows]

    async def delete_results(self, request_ids: Iterable[str]) -> int:
        ids = list(request_ids)
        if not ids:
            return 0
        async with self._db.transaction() as tx:
            return await tx.execute(
                f"DELETE FROM result_blobs WHERE request_id IN ({','.join('?' * len(ids))})", ids
            )
