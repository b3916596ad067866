"""The model store: models and resources by name and version, and what a container mounts.

A function's `models[]` and `resources[]` (spec §2.1.1) are mounted read-only at
`/config/models/{name}` and `/config/resources/{name}` (spec §4.1). Each entry is resolved at
deploy time, when an instance starts: a `uri` of the form `nvcf-lite://models/NAME/VERSION`
(or `nvcf-lite://resources/NAME/VERSION`) names the stored artifact itself; any other uri (an
NGC one, kept as registered) is matched by the entry's own name and version. An entry the
store lacks is `ArtifactMissing`, and the version goes to ERROR naming it. A model-only
function (no containerImage) runs `models.default_image` with `models.default_args`.

An artifact is immutable: pushing a (kind, name, version) that exists is a 409, and removing
one that a deployed function version mounts is a 409 naming the version (undeploy first).
"""

from __future__ import annotations

import errno
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from nvcf_lite.errors import (
    Conflict,
    InsufficientStorage,
    Invalid,
    NotFound,
    PayloadTooLarge,
)
from nvcf_lite.models import Artifact, ArtifactKind, FunctionVersion, new_id, now_iso
from nvcf_lite.store.artifact_files import (
    ArtifactFiles,
    BlobGone,
    Refused,
    Staged,
    TooLarge,
    tree_digest,
)
from nvcf_lite.store.artifacts import ArtifactExists, ArtifactsRepo
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.sqlite import Database

URI_SCHEME = "nvcf-lite://"
MOUNT_ROOT = "/config"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STAGING_MAX_AGE_S = 6 * 3600.0

DeployedVersions = Callable[[], Awaitable[list[FunctionVersion]]]
"""The function versions deployed now (their containers may mount artifacts)."""


class ArtifactMissing(LookupError):
    """A model or resource a function version names cannot be mounted: the store lacks it,
    or its name is no folder name. Not an NvcfError: no client request gets it; it is why an
    instance cannot start (the version's healthInfo), `str(exc)` the reason."""


class ModelServer(msgspec.Struct, frozen=True):
    """What a model-only function runs (spec §4.1): the `[models]` defaults."""

    image: str
    args: str


class ArtifactMount(msgspec.Struct, frozen=True):
    source: str  # the tree on this host
    target: str  # /config/models/{name} or /config/resources/{name}


class Ref(msgspec.Struct, frozen=True):
    """One models[] or resources[] entry: the artifact it resolves to and where it goes."""

    kind: ArtifactKind
    name: str
    version: str | None
    mount_kind: ArtifactKind
    mount_name: str


def store_uri(kind: ArtifactKind, name: str, version: str) -> str:
    return f"{URI_SCHEME}{kind.plural}/{name}/{version}"


def container_command(
    version: FunctionVersion, server: ModelServer | None
) -> tuple[str, str | None]:
    """The image and args a version runs: its own, or the model server's for model-only."""
    if version.container_image or not version.models or server is None:
        return version.container_image or "", version.container_args
    return server.image, version.container_args or server.args


def refs(version: FunctionVersion) -> list[Ref]:
    """What the version mounts: its models[], then its resources[]; each is mounted under the
    entry's own name, whichever stored artifact its uri names."""
    entries = [(ArtifactKind.MODEL, m.name, m.version, m.uri) for m in version.models or ()]
    entries += [(ArtifactKind.RESOURCE, r.name, r.version, r.uri) for r in version.resources or ()]
    out = []
    for kind, name, wanted, uri in entries:
        stored_kind, stored_name = kind, name
        if uri and uri.startswith(URI_SCHEME):
            stored_kind, stored_name, wanted = _parse_uri(kind, uri)
        out.append(
            Ref(
                kind=stored_kind,
                name=stored_name,
                version=wanted,
                mount_kind=kind,
                mount_name=name,
            )
        )
    return out


def _parse_uri(kind: ArtifactKind, uri: str) -> tuple[ArtifactKind, str, str]:
    parts = uri[len(URI_SCHEME) :].split("/")
    kinds = {k.plural: k for k in ArtifactKind}
    if len(parts) != 3 or parts[0] not in kinds or not all(parts):
        raise ArtifactMissing(
            f"{kind} uri {uri!r} is not of the form {URI_SCHEME}models/NAME/VERSION or "
            f"{URI_SCHEME}resources/NAME/VERSION"
        )
    return kinds[parts[0]], parts[1], parts[2]


def check_name(field: str, value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise Invalid(
            f"{field} {value!r} must match {NAME_RE.pattern} (it becomes a folder name under"
            f" {MOUNT_ROOT})"
        )
    return value


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
            for ref in refs_or_none(deployed):
                if (ref.kind, ref.name, ref.version) == (kind, name, version):
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
            found = None
            if ref.version is not None:
                found = await self._repo.get(ref.kind, ref.name, ref.version)
            if found is None:
                raise ArtifactMissing(_missing(ref))
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


def refs_or_none(version: FunctionVersion) -> Sequence[Ref]:
    """The version's refs; none when one is malformed (it mounts nothing then)."""
    try:
        return refs(version)
    except ArtifactMissing:
        return ()


def _missing(ref: Ref) -> str:
    if ref.version is None:
        return (
            f"{ref.kind} '{ref.name}' has no version: the model store matches models by name"
            " and version"
        )
    return (
        f"{ref.kind} '{ref.name}' version '{ref.version}' is not in the model store (push it: "
        f"nvcf-lite {ref.kind.plural} push {ref.name} {ref.version} PATH)"
    )
