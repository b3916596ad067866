"""The model store: models and resources pushed by name and version, listed, removed, and
turned into the read-only mounts of a function version's containers (spec §4.1).

An artifact is immutable: pushing a (kind, name, version) that exists is a 409, and removing
one that a deployed function version mounts is a 409 naming the version (undeploy first).
`mounts` resolves a version's entries (the rules are `domain/artifact_refs.py`) at deploy time,
when an instance starts; an entry the store lacks is `ArtifactMissing`, and the version goes to
ERROR naming it.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nvcf_lite.domain.artifact_refs import (
    MOUNT_ROOT,
    NAME_RE,
    ArtifactMissing,
    ArtifactMount,
    check_name,
    missing_reason,
    refs,
)
from nvcf_lite.errors import (
    Conflict,
    InsufficientStorage,
    Invalid,
    NotFound,
    PayloadTooLarge,
)
from nvcf_lite.models import Artifact, ArtifactKind, FunctionVersion, new_id, now_iso
from nvcf_lite.store.artifact_files import ArtifactFiles, BlobGone
from nvcf_lite.store.artifact_staging import Refused, Staged, TooLarge, tree_digest
from nvcf_lite.store.artifacts import ArtifactExists, ArtifactsRepo
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.sqlite import Database

STAGING_MAX_AGE_S = 6 * 3600.0

DeployedVersions = Callable[[], Awaitable[list[FunctionVersion]]]
"""The function versions deployed now (their containers may mount artifacts)."""


class Artifacts:
    def __init__(
        self,
        db: Database,
        repo: ArtifactsRepo,
        files: ArtifactFiles,
        deployed: DeployedVersions,
        *,
        max_push_bytes: int,
    ) -> None:
        self._db = db
        self._repo = repo
        self._files = files
        self._deployed = deployed
        self.max_push_bytes = max_push_bytes

    async def push_path(self, kind: ArtifactKind, name: str, version: str, src: Path) -> Artifact:
        """Store the folder (or file) `src` as kind/name/version (the CLI's push)."""
        await self._check_new(kind, name, version)
        with _disk_full():
            try:
                staged = await self._files.stage_path(src)
            except FileNotFoundError:
                raise Invalid(f"{src}: no such file or folder") from None
            except PermissionError as exc:
                raise Invalid(
                    f"{exc.filename or src}: cannot be read (permission denied)"
                ) from None
            except Refused as exc:
                raise Invalid(str(exc)) from None
            return await self._commit(kind, name, version, staged)

    async def push_archive(
        self, kind: ArtifactKind, name: str, version: str, body: AsyncIterator[bytes]
    ) -> Artifact:
        """Store an uploaded tar (optionally gzip, bzip2 or xz compressed) as the tree."""
        await self._check_new(kind, name, version)
        with _disk_full():
            return await self._push_archive(kind, name, version, body)

    async def _push_archive(
        self, kind: ArtifactKind, name: str, version: str, body: AsyncIterator[bytes]
    ) -> Artifact:
        try:
            archive = await self._files.receive(body, self.max_push_bytes)
        except TooLarge:
            raise PayloadTooLarge(
                f"the archive is larger than models.max_push_bytes ({self.max_push_bytes} bytes)"
            ) from None
        try:
            staged = await self._files.stage_archive(archive, self.max_push_bytes)
        except Refused as exc:
            raise Invalid(str(exc)) from None
        except TooLarge as exc:
            raise PayloadTooLarge(f"{exc} (models.max_push_bytes)") from None
        return await self._commit(kind, name, version, staged)

    async def _check_new(self, kind: ArtifactKind, name: str, version: str) -> None:
        check_name(f"{kind} name", name)
        check_name(f"{kind} version", version)
        if await self._repo.get(kind, name, version) is not None:
            raise self._exists(kind, name, version)

    def _exists(self, kind: ArtifactKind, name: str, version: str) -> Conflict:
        return Conflict(
            f"{kind} '{name}' version '{version}' is already in the store (a version is pushed"
            " once; remove it first to replace it)"
        )

    async def _commit(
        self, kind: ArtifactKind, name: str, version: str, staged: Staged
    ) -> Artifact:
        files = tuple(sorted(staged.files, key=lambda f: f.path))
        artifact = Artifact(
            artifact_id=new_id(),
            kind=kind,
            name=name,
            version=version,
            size_bytes=staged.size_bytes,
            file_count=len(files),
            sha256=tree_digest(files),
            created_at=now_iso(),
            files=files,
        )
        try:
            async with self._files.lock():
                await self._files.commit(staged)
                try:
                    async with self._db.transaction() as tx:
                        await self._repo.insert(tx, artifact)
                except BaseException:  # the blobs this push added belong to no one
                    digests = {f.sha256 for f in files}
                    await self._files.remove_blobs(await self._repo.unreferenced(digests))
                    raise
        except ArtifactExists:
            raise self._exists(kind, name, version) from None
        finally:
            await self._files.discard(staged)
        return artifact

    async def of_kind(self, kind: ArtifactKind) -> list[Artifact]:
        return await self._repo.of_kind(kind)

    async def get(self, kind: ArtifactKind, name: str, version: str) -> Artifact:
        found = await self._repo.get(kind, name, version)
        if found is None:
            raise NotFound(f"{kind} '{name}' version '{version}' is not in the store")
        return found

    async def remove(self, kind: ArtifactKind, name: str, version: str) -> Artifact:
        """Remove it, and the blobs no other artifact holds; 409 while a deployed version
        mounts it."""
        artifact = await self.get(kind, name, version)
        for deployed in await self._deployed():
            for ref in refs(deployed):
                if not ref.problem and (ref.kind, ref.name, ref.version) == (kind, name, version):
                    raise Conflict(
                        f"{kind} '{name}' version '{version}' is mounted by function "
                        f"{deployed.function_id} version {deployed.version_id}, which is "
                        "deployed: undeploy it first"
                    )
        async with self._files.lock():
            async with self._db.transaction() as tx:
                unused = await self._repo.delete(tx, artifact.artifact_id)
            await self._files.remove_blobs(unused)
        await self._files.remove_tree(artifact.artifact_id)
        return artifact

    async def mounts(self, version: FunctionVersion) -> list[ArtifactMount]:
        """The read-only mounts of the version's models and resources, trees built as
        needed; ArtifactMissing names the first entry the store lacks."""
        out = []
        for ref in refs(version):
            if not NAME_RE.fullmatch(ref.mount_name):
                raise ArtifactMissing(
                    f"{ref.mount_kind} name {ref.mount_name!r} cannot be mounted: it must match"
                    f" {NAME_RE.pattern} to be a folder under {MOUNT_ROOT}/{ref.mount_kind.plural}"
                )
            if ref.problem:
                raise ArtifactMissing(ref.problem)
            found = await self._repo.get(ref.kind, ref.name, ref.version)
            if found is None:
                raise ArtifactMissing(missing_reason(ref))
            try:
                tree = await self._files.tree(found)
            except BlobGone as exc:
                what = f"{ref.kind} '{ref.name}' version '{ref.version}'"
                raise ArtifactMissing(f"{what}: {exc}") from None
            # mounted where the function's entry says: a models[] entry under /config/models
            target = f"{MOUNT_ROOT}/{ref.mount_kind.plural}/{ref.mount_name}"
            out.append(ArtifactMount(source=str(tree), target=target))
        return out

    async def prune(self) -> int:
        """At start: remove what a crash or a restore left (unknown trees, old staging
        folders, blobs no artifact holds)."""
        async with self._files.lock():
            return await self._files.prune(
                await self._repo.ids(), await self._repo.blob_digests(), STAGING_MAX_AGE_S
            )


@contextmanager
def _disk_full() -> Iterator[None]:
    """A full file system is 507, not a crash: nothing of the push was kept."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage(
                "the model store's file system is full: nothing of this push was kept"
            ) from exc
        raise


def deployed_versions(deployments: DeploymentsRepo, functions: FunctionsRepo) -> DeployedVersions:
    """The versions with a deployment row (draining ones too: their containers still run)."""

    async def deployed() -> list[FunctionVersion]:
        found = [await functions.get_version(d.version_id) for d in await deployments.all()]
        return [v for v in found if v is not None]

    return deployed
