"""The blob store: bytes of assets and large results as files under `<data_dir>/blobs/<kind>/<id>`.

Every file is written atomically: into a temp file in the same folder, fsynced, then
`os.replace`d onto its name, so a reader sees the whole blob or none. A write that fails or is
cancelled (the client went away) removes its temp file; `remove_partials` clears what a crash
left. Blocking file I/O runs in worker threads, 1 MiB at a time, so memory stays flat however
big the blob. Blob files are read-only (0444): they are hard-linked into request folders.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

KINDS = ("assets", "results")
CHUNK_BYTES = 1024 * 1024
PARTIAL_SUFFIX = ".partial"
FILE_MODE = 0o444
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class BlobTooLarge(Exception):
    """The stream went past `max_bytes`; nothing was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class NoSpace(Exception):
    """The file system is full (ENOSPC/EDQUOT); nothing was kept."""


class BlobMissing(LookupError):
    """No blob of that kind and id."""


class BlobReader:
    """An opened blob: its size, and its bytes in chunks (the file is closed at the end)."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(self._file.read, CHUNK_BYTES):
                yield chunk
        finally:
            self._file.close()

    def close(self) -> None:
        self._file.close()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, kind: str, blob_id: str) -> Path:
        if kind not in KINDS or not _SAFE_ID.match(blob_id):
            raise ValueError(f"not a blob: {kind}/{blob_id}")
        return self.root / kind / blob_id

    async def write_stream(
        self, kind: str, blob_id: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> tuple[int, str]:
        """Store the stream as the blob; its (size, sha256 hex). BlobTooLarge, NoSpace."""
        final = self.path(kind, blob_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{blob_id}.", suffix=PARTIAL_SUFFIX, dir=final.parent)
        out = os.fdopen(fd, "wb", buffering=0)
        digest = hashlib.sha256()
        size = 0
        buf = bytearray()
        pending: asyncio.Future[None] | None = None

        async def flush() -> None:
            nonlocal pending
            data = bytes(buf)
            buf.clear()
            pending = asyncio.ensure_future(asyncio.to_thread(_write, out, digest, data))
            # shielded: a cancelled upload must not close the file under a running write
            await asyncio.shield(pending)

        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes)
                buf += chunk
                if len(buf) >= CHUNK_BYTES:
                    await flush()
            if buf:
                await flush()
            pending = asyncio.ensure_future(asyncio.to_thread(_commit, out, Path(name), final))
            await asyncio.shield(pending)
        except BaseException as exc:
            _discard_after(pending, out, Path(name))
            if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                raise NoSpace(str(exc)) from exc
            raise
        return size, digest.hexdigest()

    async def put_file(self, kind: str, blob_id: str, src: Path) -> int:
        """Move `src` in as the blob (rename, or copy + remove across file systems); its size."""
        final = self.path(kind, blob_id)
        try:
            return await asyncio.to_thread(_move_in, src, final)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise NoSpace(str(exc)) from exc
            raise

    async def delete(self, kind: str, blob_id: str) -> bool:
        """Remove the blob; False when there was none."""
        try:
            await asyncio.to_thread(self.path(kind, blob_id).unlink)
        except FileNotFoundError:
            return False
        return True

    async def link_into(self, kind: str, blob_id: str, dest: Path) -> None:
        """Make the blob appear at `dest`: a hard link, or a copy across file systems."""
        src = self.path(kind, blob_id)
        try:
            await asyncio.to_thread(_link_or_copy, src, dest)
        except FileNotFoundError as exc:
            if not src.exists():
                raise BlobMissing(f"{kind}/{blob_id}") from exc
            raise
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise NoSpace(str(exc)) from exc
            raise

    async def open(self, kind: str, blob_id: str) -> BlobReader:
        """The blob opened for reading (it stays readable if deleted meanwhile)."""
        try:
            file = await asyncio.to_thread(self.path(kind, blob_id).open, "rb")
        except FileNotFoundError:
            raise BlobMissing(f"{kind}/{blob_id}") from None
        return BlobReader(file, os.fstat(file.fileno()).st_size)

    async def remove_partials(self) -> int:
        """Delete temp files a crash left behind (call before any write starts)."""

        def sweep() -> int:
            gone = 0
            for kind in KINDS:
                for path in (self.root / kind).glob(f".*{PARTIAL_SUFFIX}"):
                    path.unlink(missing_ok=True)
                    gone += 1
            return gone

        return await asyncio.to_thread(sweep)


def _write(out: BinaryIO, digest: hashlib._Hash, data: bytes) -> None:
    view = memoryview(data)
    while view:  # a raw (unbuffered) write may be partial
        written = out.write(view)
        view = view[written or 0 :]
    digest.update(data)


def _commit(out: BinaryIO, tmp: Path, final: Path) -> None:
    os.fsync(out.fileno())
    out.close()
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _discard_after(pending: asyncio.Future[None] | None, out: BinaryIO, tmp: Path) -> None:
    def discard(_: object = None) -> None:
        out.close()
        tmp.unlink(missing_ok=True)

    if pending is not None and not pending.done():
        pending.add_done_callback(discard)  # the thread still writes: clean up once it ends
    else:
        discard()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_in(src: Path, final: Path) -> int:
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(src, FILE_MODE)
        os.replace(src, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_atomic(src, final)
        src.unlink()
    _fsync_dir(final.parent)
    return final.stat().st_size


def _copy_atomic(src: Path, final: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX, dir=final.parent)
    tmp = Path(name)
    try:
        with open(src, "rb") as source, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        _copy_atomic(src, dest)
