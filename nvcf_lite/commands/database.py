"""Which config and database a command opened, and the rules for opening it.

Every admin verb says on stderr which config file and which database it uses, so a key made
against the wrong data_dir is seen at once. Only `serve` and `migrate` create or upgrade a
database; the others refuse (exit 2) and say how to point them at the server's config.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from nvcf_lite.config import SYSTEM_CONFIG, Config, ConfigSource
from nvcf_lite.errors import NvcfError
from nvcf_lite.store.data_dir import DB_FILE, DataDirBusy, DataDirLock
from nvcf_lite.store.sqlite import Database, SchemaError, check_version, migrate_file

EXIT_REFUSED = 2
log = logging.getLogger("nvcf_lite")


def database_path(config: Config) -> Path:
    return config.data_path / DB_FILE


def opened(source: ConfigSource, config: Config, *, database: bool = True) -> str:
    line = f"config {source.describe()}"
    return f"{line}, database {database_path(config)}" if database else line


def announce(source: ConfigSource, config: Config, *, database: bool = True) -> None:
    print(f"nvcf-lite: {opened(source, config, database=database)}", file=sys.stderr)


def refuse(message: str) -> int:
    print(f"nvcf-lite: {message}", file=sys.stderr)
    return EXIT_REFUSED


def missing_database(source: ConfigSource, config: Config) -> str:
    """Why an admin verb will not make a database, and what to do instead."""
    return (
        f"no database at {database_path(config)}, and this command does not create one "
        f"(config used: {source.describe()}). Point it at the server's config with "
        "--config PATH or NVCF_LITE_CONFIG=PATH (an installed service reads "
        f"{SYSTEM_CONFIG}), or run `nvcf-lite migrate` to create a new database there"
    )


async def open_existing(source: ConfigSource, config: Config) -> Database | str:
    """The server's database for an admin verb, or the reason it cannot be opened."""
    announce(source, config)
    path = database_path(config)
    if not path.is_file():
        return missing_database(source, config)
    try:
        return await Database.open(path, create=False)
    except SchemaError as exc:
        return str(exc)


def run_on_database(
    source: ConfigSource, config: Config, act: Callable[[Database], Awaitable[int]]
) -> int:
    """An admin verb's whole run: open the server's database, `act` on it, close it. A refusal
    to open it and an NvcfError of the act are one line on stderr and a non-zero exit."""

    async def run() -> int:
        db = await open_existing(source, config)
        if isinstance(db, str):
            return refuse(db)
        try:
            return await act(db)
        except NvcfError as exc:
            print(f"nvcf-lite: {exc.detail}", file=sys.stderr)
            return 1
        finally:
            await db.close()

    return asyncio.run(run())


async def migrate(config: Config) -> int:
    """`nvcf-lite migrate`: create or upgrade the database (an upgrade snapshots it first)."""
    path = database_path(config)
    try:
        version, snapshot = await migrate_file(path)
    except SchemaError as exc:
        return refuse(str(exc))
    if snapshot is not None:
        print(f"snapshot of the database before migrating: {snapshot}")
    print(f"database {path} at schema version {version}")
    return 0


def prepare_serve(config: Config, source: ConfigSource) -> DataDirLock | None:
    """Before `serve` starts granian: the data_dir's lock, and a database it can use (a newer
    schema is refused here, with a message, rather than in the worker). None when refused.
    It speaks through the server's log (configured before), so a JSON log is JSON throughout."""
    log.info("%s", opened(source, config))
    lock = DataDirLock(config.data_path)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        log.error("cannot serve: %s", exc)
        return None
    except OSError as exc:
        log.error("cannot use data_dir %s: %s", config.data_path, exc)
        return None
    try:
        check_version(database_path(config))
    except SchemaError as exc:
        lock.release()
        log.error("cannot serve: %s", exc)
        return None
    return lock
