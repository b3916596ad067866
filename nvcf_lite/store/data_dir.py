"""The data_dir: the names of what lives in it, and the lock a running server holds on it.

`serve` takes an exclusive `flock` on `<data_dir>/server.lock` (the file holds its pid) for as
long as it runs, so a second `serve` and a `restore` on the same data_dir are refused with the
holder's pid instead of corrupting it. The kernel drops the lock when the process dies, so a
crash leaves no stale lock behind. Root (`sudo nvcf-lite restore|migrate`) hands a lock file it
creates to the data_dir's owner; a lock file the service user cannot write (left by an older
root run) is still locked through a read-only descriptor (flock needs no write access), only
without the pid.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

DB_FILE = "nvcf-lite.db"
DB_SIDECARS = ("-wal", "-shm", "-journal")
LOCK_FILE = "server.lock"
KEY_SUFFIX = ".key"  # signing.key, and every other key file a feature keeps in data_dir
BLOBS_DIR = "blobs"
# The model store's content-addressed bytes live in blobs/ (so a backup keeps them); the
# read-only trees mounted into containers are built from them under artifacts/ (not backed up:
# rebuilt from the database and the blobs when a container needs one).
MODEL_BLOBS_DIR = "blobs/models/sha256"
ARTIFACTS_DIR = "artifacts"
BACKUPS_DIR = "backups"  # pre-migrate snapshots, and what a forced restore replaced
# The input assets of each accepted request (hard links of asset blobs), kept by a backup:
# the queue is in the database, so a restored server runs those requests again.
INPUT_ASSETS_DIR = "inf/inputAssets"
# The responses of requests in flight and each instance's secrets.json (written from the database
# at every instance start): a forced restore clears them. inf/ itself stays (containers mount it).
TRANSIENT_DIRS = ("inf/response", "secrets")


class DataDirBusy(Exception):
    """Another process (a running server) holds the data_dir's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"data_dir {data_dir} is in use by {who} (a running nvcf-lite serve holds "
            f"{data_dir / LOCK_FILE}); stop that server first"
        )
        self.pid = pid


class DataDirLock:
    """The exclusive lock on a data_dir (a context manager; creates the data_dir)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / LOCK_FILE
        writable = True
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY)
            writable = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirBusy(self.data_dir, pid) from None
        if writable:
            give_to_owner(self.data_dir, path)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def give_to_owner(data_dir: Path, *paths: Path) -> None:
    """Root (`sudo nvcf-lite migrate|restore|keys token`) working in a service user's data_dir:
    hand the files it made to the data_dir's owner, or the service could not open them."""
    owner = data_dir.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return
    for path in paths:
        if path.exists():
            os.chown(path, owner.st_uid, owner.st_gid)


def lock_holder(data_dir: Path) -> int | None:
    """The pid of the server holding data_dir's lock (0 when unknown), or None when free."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or 0
    finally:
        os.close(fd)
    return None


def _read_pid(fd: int) -> int | None:
    raw = os.pread(fd, 32, 0).strip()
    return int(raw) if raw.isdigit() else None
