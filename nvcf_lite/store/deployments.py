"""Deployments table: the desired state the Scheduler reconciles."""

from __future__ import annotations

import msgspec

from nvcf_lite.models import Deployment, FunctionStatus, GpuSpec, HealthInfo
from nvcf_lite.store.sqlite import Database, Row, Tx

_COLUMNS = (
    "deployment_id, function_id, version_id, nca_id, specs, health_info, draining,"
    " created_at, updated_at"
)
_specs = msgspec.json.Decoder(list[GpuSpec])
_health = msgspec.json.Decoder(list[HealthInfo])


def _deployment(row: Row) -> Deployment:
    return Deployment(
        deployment_id=row["deployment_id"],
        function_id=row["function_id"],
        version_id=row["version_id"],
        nca_id=row["nca_id"],
        specs=_specs.decode(row["specs"]),
        health_info=_health.decode(row["health_info"]),
        draining=bool(row["draining"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


class DeploymentsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, tx: Tx, d: Deployment) -> None:
        await tx.execute(
            f"INSERT INTO deployments ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                d.deployment_id,
                d.function_id,
                d.version_id,
                d.nca_id,
                _json(d.specs),
                _json(d.health_info),
                int(d.draining),
                d.created_at,
                d.updated_at,
            ),
        )

    async def save(self, tx: Tx, d: Deployment) -> None:
        await tx.execute(
            "UPDATE deployments SET specs = ?, health_info = ?, draining = ?, updated_at = ?"
            " WHERE deployment_id = ?",
            (_json(d.specs), _json(d.health_info), int(d.draining), d.updated_at, d.deployment_id),
        )

    async def delete(self, tx: Tx, deployment_id: str) -> None:
        await tx.execute("DELETE FROM deployments WHERE deployment_id = ?", (deployment_id,))

    async def delete_now(self, deployment_id: str) -> None:
        async with self._db.transaction() as tx:
            await self.delete(tx, deployment_id)

    async def by_version(self, version_id: str, tx: Tx | None = None) -> Deployment | None:
        sql = f"SELECT {_COLUMNS} FROM deployments WHERE version_id = ?"
        row = await (tx or self._db).fetch_one(sql, (version_id,))
        return _deployment(row) if row else None

    async def by_id(self, deployment_id: str) -> Deployment | None:
        sql = f"SELECT {_COLUMNS} FROM deployments WHERE deployment_id = ?"
        row = await self._db.fetch_one(sql, (deployment_id,))
        return _deployment(row) if row else None

    async def all(self) -> list[Deployment]:
        rows = await self._db.fetch_all(f"SELECT {_COLUMNS} FROM deployments ORDER BY created_at")
        return [_deployment(r) for r in rows]

    async def set_health_info(self, deployment_id: str, info: list[HealthInfo], when: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE deployments SET health_info = ?, updated_at = ? WHERE deployment_id = ?",
                (_json(info), when, deployment_id),
            )

    async def version_status(self, tx: Tx, version_id: str) -> FunctionStatus | None:
        row = await tx.fetch_one(
            "SELECT status FROM function_versions WHERE version_id = ?", (version_id,)
        )
        return FunctionStatus(row["status"]) if row else None

    async def set_version_status(
        self, tx: Tx, version_id: str, status: FunctionStatus, when: str
    ) -> None:
        await tx.execute(
            "UPDATE function_versions SET status = ?, updated_at = ? WHERE version_id = ?",
            (status.value, when, version_id),
        )

    async def set_statuses(self, changes: dict[str, FunctionStatus], when: str) -> None:
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE function_versions SET status = ?, updated_at = ? WHERE version_id = ?",
                [(s.value, when, vid) for vid, s in changes.items()],
            )

    async def statuses(self) -> dict[str, FunctionStatus]:
        rows = await self._db.fetch_all("SELECT version_id, status FROM function_versions")
        return {r["version_id"]: FunctionStatus(r["status"]) for r in rows}
