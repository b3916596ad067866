"""Restoring a backup (`nvcf_lite.store.backup`) into a data_dir, all or nothing.

A backup is data from elsewhere, so nothing in it is trusted: every manifest key must be a
relative path under what a backup holds (`nvcf-lite.db`, `*.key` at the top, `blobs/...`,
`inf/inputAssets/<request>/...`), every file a regular file (a symbolic link is refused, never
followed) inside the backup, and no file may be there that the manifest does not list. A
directory backup is copied, and re-hashed as it is copied, into a staging folder inside the
data_dir (same filesystem); an archive is extracted there (members other than files and
folders are refused). Only the staged, verified copy is moved in.

With --force, what is there is first moved into `backups/replaced-<time>/`: the database (and
its -wal/-shm), the key files, `blobs/` and `inf/inputAssets/` (the old queue's inputs stay with
the old database); `inf/response/` and `secrets/` too, deleted once the restore is done (the
server rebuilds them). `inf/` itself stays: running containers mount it. The staged files move in
with the database last; if anything fails, every move is undone in reverse, so the data_dir is
as it was.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import msgspec

from nvcf_lite.store.backup import (
    FORMAT,
    MANIFEST,
    BackupError,
    Manifest,
    copy_file,
    entry,
    open_regular,
)
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
from nvcf_lite.store.sqlite import SchemaError, latest_version, read_version

Move = tuple[Path, Path]


def unpack(src: Path, into: Path) -> Path:
    """The backup's directory: `src` itself, or `src` (a .tar.gz) extracted into `into`."""
    if src.is_dir():
        return src
    if not src.is_file():
        raise BackupError(f"no backup at {src}")
    try:
        with tarfile.open(src, "r:*") as tar:
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()):
                    raise BackupError(f"{src}: {member.name} is not a file or folder: refused")
            tar.extractall(into, filter="data")  # no absolute paths, links out, or devices
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{src} is not a readable backup archive: {exc}") from exc
    return into


def verify(root: Path, copy_into: Path | None = None) -> Manifest:
    """The manifest of the backup in `root`, after checking its paths, that every file is a
    regular file matching its size and sha256, that none is missing or extra, and that this
    build can use its schema version. With `copy_into`, each file is copied there as it is
    hashed (what is checked is what was copied) and the schema is read from the copy."""
    manifest = _read_manifest(root)
    for rel in manifest.files:
        _check_name(rel)
    extra = sorted(_walk(root) - set(manifest.files) - {MANIFEST})
    if extra:
        raise BackupError(f"files not in the manifest: {', '.join(extra[:5])}")
    inside = root.resolve()
    for rel, expected in manifest.files.items():
        path = root / rel
        if not os.path.lexists(path):
            raise BackupError(f"{rel} is missing from the backup")
        if not path.resolve().is_relative_to(inside):
            raise BackupError(f"{rel} lies outside the backup: refused")
        got = entry(path) if copy_into is None else copy_file(path, copy_into / rel, 0o600)
        if got != expected:
            raise BackupError(f"{rel} does not match its checksum in the manifest: damaged")
    try:
        version = read_version((copy_into or root) / DB_FILE)
    except SchemaError as exc:
        raise BackupError(str(exc)) from exc
    if version != manifest.schema_version:
        raise BackupError(f"{DB_FILE} is not at the manifest's schema version")
    return manifest


def _read_manifest(root: Path) -> Manifest:
    try:
        with open_regular(root / MANIFEST) as raw:
            manifest = msgspec.json.decode(raw.read(), type=Manifest)
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
    return manifest


def _check_name(rel: str) -> None:
    """BackupError unless `rel` names a file a backup holds (relative, no `..`, known place)."""
    path = PurePosixPath(rel)
    parts = path.parts
    if path.is_absolute() or "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
        raise BackupError(f"manifest path {rel!r} is absolute or leaves the backup: refused")
    known = (
        rel == DB_FILE
        or (len(parts) == 1 and rel.endswith(KEY_SUFFIX) and rel != KEY_SUFFIX)
        or (parts[0] == BLOBS_DIR and len(parts) >= 2)
        or (rel.startswith(f"{INPUT_ASSETS_DIR}/") and len(parts) >= 4)
    )
    if not known:
        raise BackupError(f"manifest path {rel!r} is not a file a backup holds: refused")


def _walk(root: Path) -> set[str]:
    """Every file below `root` (relative paths); BackupError at a symbolic link or a special
    file, so that nothing is read through one."""
    found = set()
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder, name)
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise BackupError(f"{rel} in the backup is a symbolic link: refused")
            if stat.S_ISREG(mode):
                found.add(rel)
            elif not stat.S_ISDIR(mode):
                raise BackupError(f"{rel} in the backup is not a regular file: refused")
    return found


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
            if root == src:  # a directory backup stays as it is: restore checked copies
                root = staging / "copied"
                manifest = verify(src, copy_into=root)
            else:
                manifest = verify(root)
            _prepare(root, data_dir, manifest)
            replaced = _swap(root, data_dir, set_aside=bool(occupied))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest, replaced


def _prepare(root: Path, data_dir: Path, manifest: Manifest) -> None:
    (root / MANIFEST).unlink(missing_ok=True)
    for rel in manifest.files:
        shared = rel.startswith((f"{BLOBS_DIR}/", f"{INPUT_ASSETS_DIR}/"))
        (root / rel).chmod(0o444 if shared else 0o600)
    for folder in (root / INPUT_ASSETS_DIR).rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)  # mounted: a function's user may not be root
    give_to_owner(data_dir, *root.rglob("*"))


def _swap(root: Path, data_dir: Path, *, set_aside: bool) -> Path | None:
    """With `set_aside`, move what is in data_dir into a new backups/replaced-<time>/ (its
    path is returned); then the staged files in, the database last. Undo every move if one
    fails."""
    aside = None
    if set_aside:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = data_dir / BACKUPS_DIR / f"replaced-{stamp}"
    done: list[Move] = []
    made_inf = not (data_dir / "inf").exists()
    try:
        if aside is not None:
            for rel in _current(data_dir):
                _move(data_dir / rel, aside / rel, done)
        (data_dir / "inf").mkdir(exist_ok=True)
        give_to_owner(data_dir, data_dir / "inf")
        staged = [r for r in _top_level(root) if r != DB_FILE] + [DB_FILE]
        for rel in staged:
            _move(root / rel, data_dir / rel, done)
    except BaseException as exc:
        _undo(done, data_dir, aside, made_inf, exc)
        raise BackupError(
            f"restore failed midway ({exc}); every move was undone: data_dir {data_dir} is as "
            "it was"
        ) from exc
    if aside is not None:
        for rel in TRANSIENT_DIRS:
            shutil.rmtree(aside / rel, ignore_errors=True)  # rebuilt by the server
        with_folder = aside / "inf"
        if with_folder.is_dir() and not any(with_folder.iterdir()):
            with_folder.rmdir()
    return aside


def _current(data_dir: Path) -> list[str]:
    """What a forced restore sets aside (relative paths that exist)."""
    names = [DB_FILE + s for s in ("", *DB_SIDECARS)] + [BLOBS_DIR, INPUT_ASSETS_DIR]
    names += sorted(p.name for p in data_dir.glob(f"*{KEY_SUFFIX}"))
    names += list(TRANSIENT_DIRS)
    return [n for n in names if os.path.lexists(data_dir / n)]


def _top_level(root: Path) -> list[str]:
    """The staged entries to move in: each top-level one, and inf/'s children (not inf/)."""
    out = []
    for entry_ in sorted(root.iterdir()):
        if entry_.name == "inf":
            out += [f"inf/{child.name}" for child in sorted(entry_.iterdir())]
        else:
            out.append(entry_.name)
    return [r for r in out if os.path.lexists(root / r)]


def _move(src: Path, dest: Path, done: list[Move]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(src, dest)
    done.append((src, dest))


def _undo(
    done: list[Move], data_dir: Path, aside: Path | None, made_inf: bool, exc: BaseException
) -> None:
    try:
        for src, dest in reversed(done):
            os.replace(dest, src)
        if made_inf and (data_dir / "inf").is_dir():
            (data_dir / "inf").rmdir()
        if aside is not None and aside.exists():
            for folder, _, _ in sorted(os.walk(aside), reverse=True):
                os.rmdir(folder)  # only folders are left: every file went back
    except OSError as undo_exc:
        raise BackupError(
            f"restore failed midway ({exc}) and undoing it failed too ({undo_exc}): what was "
            f"in data_dir {data_dir} is in {aside} or still in place"
        ) from exc
