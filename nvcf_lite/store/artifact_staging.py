"""Pushes into the model store, staged: each file copied into an incoming folder and hashed.

A folder (the CLI) or a tar archive (HTTP, optionally gzip, bzip2 or xz compressed) becomes a
`Staged` push: its files as (path, size, sha256, executable), their contents in the incoming
folder under their sha256, waiting for `ArtifactFiles.commit` to move them into their blobs.
What is refused (`Refused`, the message says which path and why): a path that is absolute or
has `.`/`..` parts, a symbolic link whose target leaves the pushed folder (or is not a regular
file), a symbolic link to a folder, a special file, and in an archive any member that is not a
file or a folder. Empty folders are not kept: a tree is its files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nvcf_lite.models import ArtifactFile

CHUNK = 1024 * 1024
MAX_PATH = 4096
UPLOAD = "upload.tar"


class Refused(ValueError):
    """The tree cannot be stored as given; the message says which path and why."""


class TooLarge(Exception):
    """An upload went past its limit; nothing was kept."""


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


def stage_path(folder: Path, src: Path) -> Staged:
    """Copy and hash the folder (or the one file) `src` into `folder`; Refused,
    FileNotFoundError (`folder` is removed then)."""
    staged = Staged(folder)
    try:
        root = src.resolve(strict=True)
        if root.is_file():
            with open(root, "rb") as source:
                _add(staged, check_path(src.name), source, _executable(root))
        elif root.is_dir():
            for rel, path in _walk(root):
                with open(path, "rb") as source:
                    _add(staged, rel, source, _executable(path))
        else:
            raise Refused(f"{src} is not a regular file or a folder: refused")
    except BaseException:
        shutil.rmtree(staged.folder, ignore_errors=True)
        raise
    if not staged.files:
        shutil.rmtree(staged.folder, ignore_errors=True)
        raise Refused(f"{src} holds no files")
    return staged


async def receive(folder: Path, chunks: AsyncIterator[bytes], max_bytes: int) -> Path:
    """Write an uploaded archive to a file in `folder`; TooLarge past the limit (the folder
    is removed)."""
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


def stage_archive(archive: Path, max_bytes: int) -> Staged:
    """Copy and hash the files of a (tar, optionally compressed) archive into the archive's
    folder; Refused, or TooLarge when its files add up to more than `max_bytes` (a small
    compressed body may unpack to a lot); the folder is removed then."""
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
                    _add(staged, check_path(member.name), source, bool(member.mode & 1))
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


def _add(staged: Staged, rel: str, source: IO[bytes], executable: bool) -> None:
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
    staged.files.append(ArtifactFile(path=rel, size_bytes=size, sha256=sha, executable=executable))


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
