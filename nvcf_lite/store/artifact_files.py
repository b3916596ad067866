"""The model store's bytes: content-addressed blobs, and the read-only trees that are mounted.

Each distinct file content is one blob, `blobs/models/sha256/<sha256>` (mode 0444), however
many models or resources hold it. A push is first staged (copied and hashed) into
`artifacts/.incoming-<id>/`, on the same file system; `commit` then renames each new content
into its blob name (an existing blob is kept and the staged copy dropped). A tree to mount is
`artifacts/<artifact_id>/`, built from hard links of the blobs (an executable file is a copy
with mode 0555, as a link would share the blob's 0444) into a temporary folder renamed into
place, so a tree that exists is complete. Docker bind-mounts it read-only.

What is refused (`Refused`, the message says why): a path that is absolute or has `.`/`..`
parts, a symbolic link whose target leaves the pushed folder (or is not a regular file), a
symbolic link to a folder, a special file, and in an archive any member that is not a file
or a folder. Empty folders are not kept: a tree is its files.

Pushes, removals and the start-up clean-up change blobs only under `lock()`, an flock on
`artifacts/.lock` (the `nvcf-lite models` CLI is another process), so a blob another push
still needs is never collected.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nvcf_lite.models import Artifact, ArtifactFile
from nvcf_lite.store.data_dir import ARTIFACTS_DIR, MODEL_BLOBS_DIR

CHUNK = 1024 * 1024
MAX_PATH = 4096
INCOMING = ".incoming-"
BUILDING = ".building-"
LOCK = ".lock"
UPLOAD = "upload.tar"


class Refused(ValueError):
    """The tree cannot be stored as given; the message says which path and why."""


class TooLarge(Exception):
    """An upload went past its limit; nothing was kept."""


class BlobGone(LookupError):
    """A blob a tree needs is not in the store (damaged: push the artifact again)."""


@dataclass
class Staged:
    """A push copied and hashed into its incoming folder, waiting for `commit`."""

    folder: Path
    files: list[ArtifactFile] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


def tree_digest(files: Iterable[ArtifactFile]) -> str:
    """The digest of a file list: equal digests, equal trees."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{int(f.executable)}\0{f.sha256}\n".encode())
    return digest.hexdigest()


def check_path(rel: str) -> str:
    """`rel` as a stored path ('/'-separated, relative, no `.`/`..`), or Refused."""
    parts = rel.split("/")
    while parts and parts[0] == ".":
        parts.pop(0)  # tar's ./a
    if not parts or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise Refused(f"path {rel!r} is absolute or leaves the tree: refused")
    if "\0" in rel or len(rel) > MAX_PATH:
        raise Refused(f"path {rel[:80]!r} is not a usable file name: refused")
    return "/".join(parts)


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
        return await asyncio.to_thread(self._stage_path, src)

    def _stage_path(self, src: Path) -> Staged:
        root = src.resolve(strict=True)
        staged = Staged(self._incoming())
        try:
            if root.is_file():
                with open(root, "rb") as source:
                    self._add(staged, check_path(src.name), source, _executable(root))
            elif root.is_dir():
                for rel, path in _walk(root):
                    with open(path, "rb") as source:
                        self._add(staged, rel, source, _executable(path))
            else:
                raise Refused(f"{src} is not a regular file or a folder: refused")
        except BaseException:
            shutil.rmtree(staged.folder, ignore_errors=True)
            raise
        if not staged.files:
            shutil.rmtree(staged.folder, ignore_errors=True)
            raise Refused(f"{src} holds no files")
        return staged

    async def receive(self, chunks: AsyncIterator[bytes], max_bytes: int) -> Path:
        """Write an uploaded archive to a file in a new incoming folder; TooLarge past the
        limit (the folder is removed)."""
        folder = await asyncio.to_thread(self._incoming)
        path = folder / UPLOAD
        out = await asyncio.to_thread(open, path, "wb")
        size, buf = 0, bytearray()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"more than {max_bytes} bytes")
                buf += chunk
                if len(buf) >= CHUNK:
                    await asyncio.to_thread(out.write, bytes(buf))
                    buf.clear()
            await asyncio.to_thread(out.write, bytes(buf))
        except BaseException:
            out.close()
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        out.close()
        return path

    async def stage_archive(self, archive: Path, max_bytes: int) -> Staged:
        """Copy and hash the files of a (tar, optionally compressed) archive received by
        `receive`, into its folder; Refused, or TooLarge when its files add up to more than
        `max_bytes` (a small compressed body may unpack to a lot); the folder is removed."""
        return await asyncio.to_thread(self._stage_archive, archive, max_bytes)

    def _stage_archive(self, archive: Path, max_bytes: int) -> Staged:
        staged = Staged(archive.parent)
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    if member.isdir():
                        if member.name.strip("/") not in ("", "."):  # `tar -C dir .` has ./
                            check_path(member.name.rstrip("/"))
                        continue
                    if member.isfile() and staged.size_bytes + member.size > max_bytes:
                        raise TooLarge(f"the archive unpacks to more than {max_bytes} bytes")
                    if not member.isfile():
                        raise Refused(
                            f"{member.name!r} in the archive is not a file or a folder (links"
                            " and devices are not accepted; `tar -h` stores a link's target)"
                        )
                    source = tar.extractfile(member)
                    if source is None:
                        raise Refused(f"{member.name!r} in the archive cannot be read")
                    with source:
                        self._add(staged, check_path(member.name), source, bool(member.mode & 1))
        except tarfile.TarError as exc:
            shutil.rmtree(staged.folder, ignore_errors=True)
            raise Refused(f"the body is not a readable tar archive: {exc}") from exc
        except BaseException:
            shutil.rmtree(staged.folder, ignore_errors=True)
            raise
        archive.unlink()
        if not staged.files:
            shutil.rmtree(staged.folder, ignore_errors=True)
            raise Refused("the archive holds no files")
        return staged

    def _add(self, staged: Staged, rel: str, source: IO[bytes], executable: bool) -> None:
        if any(f.path == rel for f in staged.files):
            raise Refused(f"path {rel!r} is given twice")
        tmp = staged.folder / f"{len(staged.files)}.part"
        digest, size = hashlib.sha256(), 0
        with open(tmp, "xb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        if (staged.folder / sha).exists():
            tmp.unlink()  # the same content twice in one push
        else:
            os.replace(tmp, staged.folder / sha)
        staged.files.append(
            ArtifactFile(path=rel, size_bytes=size, sha256=sha, executable=executable)
        )

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


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(stored path, file to read) for each file below `root`, sorted; Refused for what
    cannot be stored (links leaving the tree, links to folders, special files)."""
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in dirs:
            if Path(folder, name).is_symlink():
                raise Refused(f"{Path(folder, name)} is a symbolic link to a folder: refused")
        for name in sorted(names):
            path = Path(folder, name)
            rel = check_path(path.relative_to(root).as_posix())
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = path.resolve()
                if not target.is_relative_to(root):
                    raise Refused(f"{path} is a symbolic link out of {root}: refused")
                if not target.is_file():
                    raise Refused(f"{path} is a symbolic link to no regular file: refused")
                yield rel, target
            elif stat.S_ISREG(mode):
                yield rel, path
            else:
                raise Refused(f"{path} is not a regular file: refused")


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


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
