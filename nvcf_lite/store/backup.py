"""Backups of a data_dir, made while the server runs, and their restore.

A backup holds what cannot be rebuilt: the database (an online copy through SQLite's backup
API), every key file in data_dir (`signing.key`, and any other `*.key`), and the blob store
(asset bytes, large results and the model store's content-addressed files), the input-asset
folders of queued requests (the queue is in the database, so those requests run again after a
restore), plus `manifest.json`: versions, time and each file's size and sha256. It is a
directory, or one `.tar.gz` file when DEST ends in `.tar.gz` or `.tgz`. Not kept, because the
server rebuilds them: the response folders of requests in flight (`inf/response/`), each
instance's `secrets/` (written from the database) and the model store's mounted trees
(`artifacts/`, rebuilt from the database and the blobs).

The database is copied first, then the blobs: blob files are immutable (written once, renamed
into place), so every blob the copied database knows is still there unless the sweeper deleted
it meanwhile (an expired asset); those are listed in the manifest as `missing`. The input-asset
folders copied are exactly those of the requests queued or leased in the database *copy*: a
request that finished while the backup ran has lost its folder, yet the copy still has it
queued. Such a folder is listed as `missing` too (`inf/inputAssets/<request>`), and printed;
a restore leaves the request queued (it is in the database, and is run again) and says so: its
function then finds an empty asset folder, as if the client had sent no assets. It is not
failed at restore time: rendering the client's error answer belongs to the domain, not to a
file copy, and the request did run to its end on the source server.

Restoring is `nvcf_lite.store.restore`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgspec

from nvcf_lite.store.blobs import PARTIAL_SUFFIX
from nvcf_lite.store.data_dir import BLOBS_DIR, DB_FILE, INPUT_ASSETS_DIR, KEY_SUFFIX
from nvcf_lite.store.requests import pending_in
from nvcf_lite.store.sqlite import copy_database

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1024 * 1024


class BackupError(Exception):
    """The backup cannot be made, or cannot be restored (the message says why)."""


class FileEntry(msgspec.Struct, frozen=True):
    size: int
    sha256: str


class Manifest(msgspec.Struct, kw_only=True):
    format: int
    nvcf_lite_version: str
    schema_version: int
    created_at: str
    source_data_dir: str
    files: dict[str, FileEntry]
    missing: list[str] = []


def is_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz"))


def create(data_dir: Path, dest: Path, version: str) -> Manifest:
    """Back `data_dir` up into `dest` (a new directory, or a .tar.gz file)."""
    if not (data_dir / DB_FILE).is_file():
        raise BackupError(f"no database at {data_dir / DB_FILE}: nothing to back up")
    if dest.exists() and (is_archive(dest) or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists{'' if is_archive(dest) else ' and is not empty'}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nvcf-lite-backup-", dir=dest.parent) as tmp:
        staging = Path(tmp) / "backup"
        staging.mkdir(mode=0o700)
        manifest = _stage(data_dir, staging, version)
        if is_archive(dest):
            partial = Path(tmp) / dest.name
            with tarfile.open(partial, "w:gz") as tar:
                for entry in sorted(staging.iterdir()):
                    tar.add(entry, arcname=entry.name)
            os.replace(partial, dest)
        else:
            dest.mkdir(mode=0o700, exist_ok=True)
            for entry in staging.iterdir():
                os.replace(entry, dest / entry.name)
    return manifest


def _stage(data_dir: Path, out: Path, version: str) -> Manifest:
    schema = copy_database(data_dir / DB_FILE, out / DB_FILE)
    files = {DB_FILE: entry(out / DB_FILE)}
    for key in sorted(data_dir.glob(f"*{KEY_SUFFIX}")):
        if _regular(key):
            files[key.name] = copy_file(key, out / key.name, 0o600)
    missing = []
    for blob in _files_under(data_dir / BLOBS_DIR):
        rel = blob.relative_to(data_dir).as_posix()
        try:
            files[rel] = copy_file(blob, out / rel, 0o444)
        except FileNotFoundError:
            missing.append(rel)  # deleted (swept) after it was listed
    missing += _stage_inputs(data_dir, out, files)
    manifest = Manifest(
        format=FORMAT,
        nvcf_lite_version=version,
        schema_version=schema,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source_data_dir=str(data_dir),
        files=files,
        missing=missing,
    )
    (out / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
    return manifest


def _stage_inputs(data_dir: Path, out: Path, files: dict[str, FileEntry]) -> list[str]:
    """Copy the input folders of the requests pending in the database copy; the folders of
    those with assets that are gone (the request finished after the copy)."""
    gone = []
    for request_id, has_assets in pending_in(out / DB_FILE):
        if Path(request_id).name != request_id or request_id in ("", ".", ".."):
            continue  # not a folder name: never one of ours
        folder = f"{INPUT_ASSETS_DIR}/{request_id}"
        copied = 0
        for staged in _files_under(data_dir / folder):
            rel = staged.relative_to(data_dir).as_posix()
            try:
                files[rel] = copy_file(staged, out / rel, 0o444)
                copied += 1
            except FileNotFoundError:
                pass  # the folder went while it was copied: counted below
        if has_assets and (copied == 0 or not (data_dir / folder).is_dir()):
            gone.append(folder)
            for rel in [r for r in files if r.startswith(f"{folder}/")]:
                del files[rel]
                (out / rel).unlink()
    return gone


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if _regular(path) and not path.name.endswith(PARTIAL_SUFFIX):
                yield path


def _regular(path: Path) -> bool:
    """A regular file itself, not a symbolic link to one."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading; BackupError unless it is a regular file (a symbolic link is
    refused, not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BackupError(f"{path} is a symbolic link: refused") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError(f"{path} is not a regular file: refused")
    return os.fdopen(fd, "rb")


def copy_file(src: Path, dest: Path, mode: int) -> FileEntry:
    """Copy one file into a new file, hashing it on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open_regular(src) as source, dest.open("xb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    dest.chmod(mode)
    return FileEntry(size=size, sha256=digest.hexdigest())


def entry(path: Path) -> FileEntry:
    """The size and sha256 of the regular file `path`."""
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(size=size, sha256=digest.hexdigest())
