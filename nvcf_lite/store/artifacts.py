"""Tables `artifacts` and `artifact_files`: the trees of the model store (their bytes are
content-addressed files, `store/artifact_files.py`)."""

from __future__ import annotations

from nvcf_lite.models import Artifact, ArtifactFile, ArtifactKind
from nvcf_lite.store.sqlite import Database, Row, Tx, is_constraint_error

_COLUMNS = "artifact_id, kind, name, version, size_bytes, file_count, sha256, created_at"


class ArtifactExists(Exception):
    """That (kind, name, version) is in the store already."""


def _artifact(row: Row, files: tuple[ArtifactFile, ...] | None = None) -> Artifact:
    return Artifact(
        artifact_id=row["artifact_id"],
        kind=ArtifactKind(row["kind"]),
        name=row["name"],
        version=row["version"],
        size_bytes=row["size_bytes"],
        file_count=row["file_count"],
        sha256=row["sha256"],
        created_at=row["created_at"],
        files=files,
    )


class ArtifactsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, tx: Tx, artifact: Artifact) -> None:
        """Insert the artifact and its files in `tx`; ArtifactExists for a taken version."""
        try:
            await tx.execute(
                f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                (
                    artifact.artifact_id,
                    artifact.kind.value,
                    artifact.name,
                    artifact.version,
                    artifact.size_bytes,
                    artifact.file_count,
                    artifact.sha256,
                    artifact.created_at,
                ),
            )
        except Exception as exc:
            if is_constraint_error(exc):
                raise ArtifactExists(f"{artifact.kind} {artifact.name} {artifact.version}") from exc
            raise
        await tx.executemany(
            "INSERT INTO artifact_files (artifact_id, path, size_bytes, sha256, executable)"
            " VALUES (?,?,?,?,?)",
            [
                (artifact.artifact_id, f.path, f.size_bytes, f.sha256, int(f.executable))
                for f in artifact.files or ()
            ],
        )

    async def get(self, kind: ArtifactKind, name: str, version: str) -> Artifact | None:
        """The artifact with its files, or None."""
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM artifacts WHERE kind = ? AND name = ? AND version = ?",
            (kind.value, name, version),
        )
        if row is None:
            return None
        files = await self._db.fetch_all(
            "SELECT path, size_bytes, sha256, executable FROM artifact_files"
            " WHERE artifact_id = ? ORDER BY path",
            (row["artifact_id"],),
        )
        return _artifact(
            row,
            tuple(
                ArtifactFile(
                    path=f["path"],
                    size_bytes=f["size_bytes"],
                    sha256=f["sha256"],
                    executable=bool(f["executable"]),
                )
                for f in files
            ),
        )

    async def of_kind(self, kind: ArtifactKind) -> list[Artifact]:
        """Every artifact of that kind (without files), by name then version."""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM artifacts WHERE kind = ? ORDER BY name, version",
            (kind.value,),
        )
        return [_artifact(r) for r in rows]

    async def ids(self) -> set[str]:
        rows = await self._db.fetch_all("SELECT artifact_id FROM artifacts")
        return {r["artifact_id"] for r in rows}

    async def delete(self, tx: Tx, artifact_id: str) -> list[str]:
        """Delete the artifact in `tx`; the blob digests no artifact uses any more."""
        rows = await tx.fetch_all(
            "SELECT DISTINCT sha256 FROM artifact_files WHERE artifact_id = ?", (artifact_id,)
        )
        await tx.execute("DELETE FROM artifact_files WHERE artifact_id = ?", (artifact_id,))
        await tx.execute("DELETE FROM artifacts WHERE artifact_id = ?", (artifact_id,))
        unused = []
        for row in rows:
            still = await tx.fetch_one(
                "SELECT 1 FROM artifact_files WHERE sha256 = ? LIMIT 1", (row["sha256"],)
            )
            if still is None:
                unused.append(str(row["sha256"]))
        return unused

    async def unreferenced(self, digests: set[str]) -> list[str]:
        """Which of these blob digests no artifact holds."""
        if not digests:
            return []
        marks = ",".join("?" * len(digests))
        rows = await self._db.fetch_all(
            f"SELECT DISTINCT sha256 FROM artifact_files WHERE sha256 IN ({marks})", list(digests)
        )
        return sorted(digests - {r["sha256"] for r in rows})

    async def blob_digests(self) -> set[str]:
        rows = await self._db.fetch_all("SELECT DISTINCT sha256 FROM artifact_files")
        return {r["sha256"] for r in rows}
