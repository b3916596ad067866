"""Backups of a data_dir, made while the server runs, and their restore.

A backup holds what cannot be rebuilt: the database (an online copy through SQLite's backup
API), every key file in data_dir (`signing.key`, and any other `*.key`), and the blob store
(asset bytes and large results), the input-asset folders of queued requests (the queue is in
the database, so those requests run again after a restore), plus `manifest.json`: versions,
time and each file's size and sha256. It is a directory, or one `.tar.gz` file when DEST ends
in `.tar.gz` or `.tgz`. Not kept, because the server rebuilds them: the response folders of
requests in flight (`inf/response/`) and each instance's `secrets/` (written from the database).

The database is copied first, then the blobs: blob files are immutable (written once, renamed
into place), so every blob the copied database knows is still there unless the sweeper deleted
it meanwhile (an expired asset); those are listed in the manifest as `missing`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from nvcf_lite.store.blobs import PARTIAL_SUFFIX
from nvcf_lite.store.data_dir import (
    BACKUPS_DIR,
    BLOBS_DIR,
    DB_FILE,
    DB_SIDECARS,
    INPUT_ASSETS_DIR,
    KEY_SUFFIX,
    LOCK_FILE,
    TRANSIENT_DIRS,
    DataDirLock,
    give_to_owner,
)
from nvcf_lite.store.sqlite import SchemaError, copy_database, latest_version, read_version

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
    files = {DB_FILE: _entry(out / DB_FILE)}
    for key in sorted(data_dir.glob(f"*{KEY_SUFFIX}")):
        if key.is_file():
            files[key.name] = _copy(key, out / key.name, 0o600)
    missing = []
    for blob in _files_under(data_dir / BLOBS_DIR):
        rel = blob.relative_to(data_dir).as_posix()
        try:
            files[rel] = _copy(blob, out / rel, 0o444)
        except FileNotFoundError:
            missing.append(rel)  # deleted (swept) after it was listed
    for staged in _files_under(data_dir / INPUT_ASSETS_DIR):
        rel = staged.relative_to(data_dir).as_posix()
        try:
            files[rel] = _copy(staged, out / rel, 0o444)
        except FileNotFoundError:
            pass  # its request finished meanwhile: not needed
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


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(PARTIAL_SUFFIX):
                yield path


def _copy(src: Path, dest: Path, mode: int) -> FileEntry:
    """Copy one file, hashing it on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as source, dest.open("wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    dest.chmod(mode)
    return FileEntry(size=size, sha256=digest.hexdigest())


def _entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return FileEntry(size=path.stat().st_size, sha256=digest.hexdigest())


def unpack(src: Path, into: Path) -> Path:
    """The backup's directory: `src` itself, or `src` (a .tar.gz) extracted into `into`."""
    if src.is_dir():
        return src
    if not src.is_file():
        raise BackupError(f"no backup at {src}")
    try:
        with tarfile.open(src, "r:*") as tar:
            tar.extractall(into, filter="data")  # no absolute paths, links out, or devices
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{src} is not a readable backup archive: {exc}") from exc
    return into


def verify(root: Path) -> Manifest:
    """The manifest of the backup in `root`, after checking every file's size and sha256, that
    no file is missing or extra, and that this build can use its schema version."""
    try:
        manifest = msgspec.json.decode((root / MANIFEST).read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise BackupError(f"{root} is not an nvcf-lite backup (no {MANIFEST})") from None
    except msgspec.DecodeError as exc:
        raise BackupError(f"{root / MANIFEST} is damaged: {exc}") from exc
    if manifest.format != FORMAT:
        raise BackupError(f"backup format {manifest.format} is not {FORMAT}: upgrade nvcf-lite")
    latest = latest_version()
    if manifest.schema_version > latest:
        raise BackupError(
            f"the backup is at schema version {manifest.schema_version} (nvcf-lite "
            f"{manifest.nvcf_lite_version}), newer than this nvcf-lite knows (schema version "
            f"{latest}): upgrade nvcf-lite to restore it"
        )
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}
    extra = sorted(found - set(manifest.files) - {MANIFEST})
    if extra:
        raise BackupError(f"files not in the manifest: {', '.join(extra[:5])}")
    for rel, expected in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise BackupError(f"{rel} is missing from the backup")
        if _entry(path) != expected:
            raise BackupError(f"{rel} does not match its checksum in the manifest: damaged")
    try:
        version = read_version(root / DB_FILE)
    except SchemaError as exc:
        raise BackupError(str(exc)) from exc
    if version != manifest.schema_version:
        raise BackupError(f"{DB_FILE} is not at the manifest's schema version")
    return manifest


def restore(src: Path, data_dir: Path, *, force: bool = False) -> tuple[Manifest, Path | None]:
    """Restore the backup `src` into `data_dir` under the data_dir's lock (DataDirBusy while a
    server runs on it). A non-empty data_dir is refused unless `force`; then what was there is
    moved into `backups/replaced-<time>/` (returned), never deleted."""
    with DataDirLock(data_dir):
        occupied = sorted(e.name for e in data_dir.iterdir() if e.name != LOCK_FILE)
        if occupied and not force:
            raise BackupError(
                f"data_dir {data_dir} is not empty ({', '.join(occupied[:5])}): restore will "
                f"not overwrite it; --force moves what is there into {data_dir / BACKUPS_DIR}"
                "/replaced-<time>/ first"
            )
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
        try:
            root = unpack(src, staging / "unpacked")
            manifest = verify(root)
            if root == src:  # a directory backup stays as it is: restore copies of its files
                root = staging / "copied"
                for rel in manifest.files:
                    _copy(src / rel, root / rel, 0o600)
            replaced = _set_aside(data_dir) if occupied else None
            _move_in(root, data_dir, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest, replaced


def _set_aside(data_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = data_dir / BACKUPS_DIR / f"replaced-{stamp}"
    aside.mkdir(parents=True, mode=0o700)
    kept = [DB_FILE + s for s in ("", *DB_SIDECARS)] + [BLOBS_DIR]
    kept += [p.name for p in data_dir.glob(f"*{KEY_SUFFIX}")]
    for name in kept:
        if (data_dir / name).exists():
            os.replace(data_dir / name, aside / name)
    for name in TRANSIENT_DIRS:
        shutil.rmtree(data_dir / name, ignore_errors=True)
    return aside


def _move_in(root: Path, data_dir: Path, manifest: Manifest) -> None:
    for rel in manifest.files:
        shared = rel.startswith((f"{BLOBS_DIR}/", f"{INPUT_ASSETS_DIR}/"))
        (root / rel).chmod(0o444 if shared else 0o600)
    for folder in (root / INPUT_ASSETS_DIR).rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)  # mounted: a function's user may not be root
    give_to_owner(data_dir, *root.rglob("*"))
    for entry in root.iterdir():
        if entry.name != MANIFEST:
            os.replace(entry, data_dir / entry.name)  # inf/ holds only the input folders
