"""The model store's bytes: content-addressed blobs, and the read-only trees that are mounted.

Each distinct file content is one blob, `blobs/models/sha256/<sha256>` (mode 0444), however
many models or resources hold it. A push is first staged (copied and hashed) into
`artifacts/.incoming-<id>/`, on the same file system; `commit` then renames each new content
into its blob name (an existing blob is kept and the staged copy dropped). A tree to mount is
`artifacts/<artifact_id>/`, built from hard links of the blobs (an executable file is a copy
with mode 0555, as a link would share the blob's 0444) into a temporary folder renamed into
place, so a tree that exists is complete. Docker bind-mounts it read-only.

What a push may hold, and how it is staged, is `store/artifact_staging.py`.

Pushes, removals and the start-up clean-up change blobs only under `lock()`, an flock on
`artifacts/.lock` (the `nvcf-lite models` CLI is another process), so a blob another push
still needs is never collected.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from nvcf_lite.models import Artifact, ArtifactFile
from nvcf_lite.store import artifact_staging as staging
from nvcf_lite.store.artifact_staging import Staged, check_path
from nvcf_lite.store.data_dir import ARTIFACTS_DIR, MODEL_BLOBS_DIR

INCOMING = ".incoming-"
BUILDING = ".building-"
LOCK = ".lock"


class BlobGone(LookupError):
    """A blob a tree needs is not in the store (damaged: push the artifact again)."""


class ArtifactFiles:
    def __init__(self, data_dir: Path) -> None:
        self.blobs = data_dir / MODEL_BLOBS_DIR
        self.trees = data_dir / ARTIFACTS_DIR

    def blob(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.blobs / sha256

    # -- pushes -----------------------------------------------------------------------------

    def _incoming(self) -> Path:
        self.trees.mkdir(parents=True, exist_ok=True)
        folder = self.trees / f"{INCOMING}{uuid.uuid4().hex}"
        folder.mkdir(mode=0o700)
        return folder

    async def stage_path(self, src: Path) -> Staged:
        """Copy and hash the folder (or the one file) `src`; Refused, FileNotFoundError."""

        def stage() -> Staged:
            return staging.stage_path(self._incoming(), src)

        return await asyncio.to_thread(stage)

    async def receive(self, chunks: AsyncIterator[bytes], max_bytes: int) -> Path:
        """Write an uploaded archive to a file in a new incoming folder; TooLarge past the
        limit (the folder is removed)."""
        folder = await asyncio.to_thread(self._incoming)
        return await staging.receive(folder, chunks, max_bytes)

    async def stage_archive(self, archive: Path, max_bytes: int) -> Staged:
        """Copy and hash the files of a (tar, optionally compressed) archive received by
        `receive`, into its folder; Refused, or TooLarge when its files add up to more than
        `max_bytes` (a small compressed body may unpack to a lot); the folder is removed."""
        return await asyncio.to_thread(staging.stage_archive, archive, max_bytes)

    async def commit(self, staged: Staged) -> int:
        """Move the staged contents into their blobs (under `lock()`); how many were new."""
        return await asyncio.to_thread(self._commit, staged)

    def _commit(self, staged: Staged) -> int:
        self.blobs.mkdir(parents=True, exist_ok=True)
        new = 0
        for sha in {f.sha256 for f in staged.files}:
            dest = self.blob(sha)
            if dest.exists():
                continue  # stored once: this content is there already
            src = staged.folder / sha
            os.chmod(src, 0o444)
            os.replace(src, dest)
            new += 1
        _fsync_dir(self.blobs)
        shutil.rmtree(staged.folder, ignore_errors=True)
        return new

    async def discard(self, staged: Staged) -> None:
        await asyncio.to_thread(shutil.rmtree, staged.folder, True)

    @asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        """The store-wide lock on blob changes (flock: other processes wait too)."""
        await asyncio.to_thread(self.trees.mkdir, parents=True, exist_ok=True)
        fd = os.open(self.trees / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    async def remove_blobs(self, digests: Iterable[str]) -> int:
        """Delete these blobs (under `lock()`, once no artifact holds them)."""

        def remove() -> int:
            gone = 0
            for sha in digests:
                try:
                    self.blob(sha).unlink()
                    gone += 1
                except FileNotFoundError:
                    pass
            return gone

        return await asyncio.to_thread(remove)

    # -- trees to mount ---------------------------------------------------------------------

    async def tree(self, artifact: Artifact) -> Path:
        """The artifact's read-only tree (built once, from its blobs); BlobGone."""
        return await asyncio.to_thread(self._tree, artifact)

    def _tree(self, artifact: Artifact) -> Path:
        dest = self.trees / artifact.artifact_id
        if dest.is_dir():
            return dest
        self.trees.mkdir(parents=True, exist_ok=True)
        tmp = self.trees / f"{BUILDING}{artifact.artifact_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(mode=0o755)
        try:
            for f in artifact.files or ():
                target = tmp / check_path(f.path)
                _make_parents(tmp, target)
                _place(self.blob(f.sha256), target, f)
            for folder, _, _ in os.walk(tmp):
                os.chmod(folder, 0o755)  # mounted: the container's user may not be root
            os.rename(tmp, dest)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and dest.is_dir():
                return dest  # built meanwhile by another launch
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    async def remove_tree(self, artifact_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.trees / artifact_id, True)

    async def prune(self, known: set[str], digests: set[str], max_age_s: float) -> int:
        """Under `lock()`: remove the trees of artifacts the database does not know (a crash
        or a restore left them), staging folders older than `max_age_s`, and blobs no
        artifact holds; how many entries went."""
        return await asyncio.to_thread(self._prune, known, digests, max_age_s)

    def _prune(self, known: set[str], digests: set[str], max_age_s: float) -> int:
        gone = 0
        now = time.time()
        for entry in self.trees.iterdir() if self.trees.is_dir() else ():
            if entry.name == LOCK:
                continue
            staging = entry.name.startswith((INCOMING, BUILDING))
            if staging and now - entry.lstat().st_mtime < max_age_s:
                continue  # a push under way (maybe in another process)
            if staging or entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)
                gone += 1
        for blob in self.blobs.iterdir() if self.blobs.is_dir() else ():
            if blob.name not in digests:
                blob.unlink(missing_ok=True)
                gone += 1
        return gone


def _make_parents(root: Path, target: Path) -> None:
    folder = target.parent
    if folder != root:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)


def _place(blob: Path, target: Path, f: ArtifactFile) -> None:
    """The blob at `target`: a hard link, else (executable, or another file system) a copy."""
    if not blob.is_file():
        raise BlobGone(f"{f.path} (blob {f.sha256}) is missing from the model store")
    if not f.executable:
        try:
            os.link(blob, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
    shutil.copyfile(blob, target)
    os.chmod(target, 0o555 if f.executable else 0o444)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
