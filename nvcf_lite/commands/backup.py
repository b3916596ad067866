"""`nvcf-lite backup DEST` (online, while the server runs) and `nvcf-lite restore SRC`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nvcf_lite import __version__
from nvcf_lite.commands.database import announce, database_path, missing_database, refuse
from nvcf_lite.config import Config, ConfigSource
from nvcf_lite.store import backup, restore
from nvcf_lite.store.data_dir import INPUT_ASSETS_DIR, DataDirBusy
from nvcf_lite.store.sqlite import SchemaError, check_version


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    made = sub.add_parser(
        "backup",
        parents=[common],
        help="back up the database, key files and blobs (safe while the server runs)",
        description="Copy the database (SQLite's online backup API), every key file in "
        "data_dir, the blob store (assets, large results) and the input assets of accepted "
        "requests (inf/inputAssets/: queued requests run again after a restore) into DEST, "
        "with a manifest of versions and sha256 sums. Responses being written (inf/response/) "
        "and secrets/ are rebuilt by the server and not copied.",
    )
    made.add_argument(
        "dest", type=Path, help="a new or empty directory, or a file ending in .tar.gz or .tgz"
    )
    restoring = sub.add_parser(
        "restore",
        parents=[common],
        help="restore a backup into the configured data_dir (the server must be stopped)",
        description="Verify a backup's checksums and schema version, then put its files into "
        "data_dir. Refused while a server runs on that data_dir.",
    )
    restoring.add_argument("src", type=Path, help="a backup directory or .tar.gz from `backup`")
    restoring.add_argument(
        "--force",
        action="store_true",
        help="restore into a non-empty data_dir: what is there is moved into "
        "data_dir/backups/replaced-<time>/ (never deleted)",
    )


def run(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    announce(source, config)
    if args.command == "backup":
        return _backup(config, source, args.dest)
    return _restore(config, args.src, args.force)


def _backup(config: Config, source: ConfigSource, dest: Path) -> int:
    if not database_path(config).is_file():
        return refuse(missing_database(source, config))
    try:
        check_version(database_path(config))
        manifest = backup.create(config.data_path, dest.absolute(), __version__)
    except (backup.BackupError, SchemaError) as exc:
        return refuse(f"backup refused: {exc}")
    except OSError as exc:
        return refuse(f"backup failed: {exc}")
    size = sum(f.size for f in manifest.files.values())
    print(
        f"backup of {config.data_path} (schema version {manifest.schema_version}): "
        f"{len(manifest.files)} files, {size} bytes, in {dest}"
    )
    for line in _missing(manifest):
        print(f"nvcf-lite: {line}")
    return 0


def _missing(manifest: backup.Manifest) -> list[str]:
    """What the backup lacks, one line each (blobs swept and input folders gone meanwhile)."""
    lines = []
    for rel in manifest.missing:
        if rel.startswith(f"{INPUT_ASSETS_DIR}/"):
            lines.append(
                f"the input assets of request {rel.rpartition('/')[2]} ({rel}) were gone while "
                "the backup ran (it finished meanwhile); it is queued in the backup and a "
                "restored server runs it again with an empty asset folder"
            )
        else:
            lines.append(f"{rel} was deleted while the backup ran (expired); not in the backup")
    return lines


def _restore(config: Config, src: Path, force: bool) -> int:
    try:
        manifest, replaced = restore.restore(src.absolute(), config.data_path, force=force)
    except DataDirBusy as exc:
        return refuse(f"restore refused: {exc}")
    except backup.BackupError as exc:
        return refuse(f"restore refused: {exc}")
    except OSError as exc:
        return refuse(f"restore failed: {exc}")
    for line in _missing(manifest):
        print(f"nvcf-lite: {line}")
    if replaced is not None:
        print(f"what was in {config.data_path} is now in {replaced}")
    print(
        f"restored the backup of {manifest.created_at} (nvcf-lite {manifest.nvcf_lite_version}, "
        f"schema version {manifest.schema_version}) into {config.data_path}; start the server"
    )
    return 0
