"""SQLite access: one writer connection, one reader connection, numbered migrations.

WAL mode lets the reader see committed data while the writer works. Writes go through
`transaction()`, which serialises writers in-process and opens `BEGIN IMMEDIATE` so another
process (the `nvcf-lite keys` CLI) waits for the lock instead of failing mid-transaction.
This is the only module that imports aiosqlite.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite

from nvcf_lite.errors import InsufficientStorage, NvcfError, Unavailable
from nvcf_lite.store.data_dir import BACKUPS_DIR, give_to_owner

log = logging.getLogger("nvcf_lite.store")

Row = sqlite3.Row
Params = Sequence[Any] | dict[str, Any]

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _migrations() -> list[tuple[int, str]]:
    found = []
    for entry in resources.files("nvcf_lite.store.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    found.sort()
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001.. without gaps, found {numbers}")
    return found


class SchemaError(Exception):
    """The database cannot be used by this build as it is (missing, too new, or too old)."""


def latest_version() -> int:
    """The schema version this build migrates to (its highest migration)."""
    return len(_migrations())


def _too_new(where: str, version: int, latest: int) -> SchemaError:
    return SchemaError(
        f"{where} is at schema version {version}, newer than this nvcf-lite knows "
        f"(schema version {latest}): it was written by a newer nvcf-lite. Upgrade nvcf-lite, "
        "or restore a backup made by this version (nvcf-lite restore)"
    )


def read_version(path: Path) -> int:
    """PRAGMA user_version of an existing database file, opened read-only."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{path} is not a usable SQLite database: {exc}") from exc


def check_version(path: Path) -> int:
    """The schema version of the database file (0 when there is none yet); SchemaError when a
    newer nvcf-lite wrote it."""
    if not path.exists():
        return 0
    version = read_version(path)
    if version > latest_version():
        raise _too_new(f"database {path}", version, latest_version())
    return version


def copy_database(src: Path, dest: Path) -> int:
    """An online, consistent copy of `src` into the new file `dest` with SQLite's backup API
    (one step, so writers of other processes never restart it); its schema version. The copy
    is a single self-contained file (rollback journal, not WAL)."""
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(partial)
    try:
        source.execute("PRAGMA busy_timeout=10000")
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
        version = int(target.execute("PRAGMA user_version").fetchone()[0])
    finally:
        target.close()
        source.close()
    partial.chmod(0o600)  # key hashes and secrets live here
    os.replace(partial, dest)
    return version


def _prepare(path: Path, create: bool) -> Path | None:
    """Check the file before opening it; with `create` (serve, migrate), snapshot a database
    that is about to be migrated. The snapshot's path, if one was taken."""
    latest = latest_version()
    if not path.exists() and not create:
        raise SchemaError(f"no database at {path}")
    version = check_version(path)
    if version == latest or (version == 0 and create):
        return None
    if not create:
        raise SchemaError(
            f"database {path} is at schema version {version}, older than this nvcf-lite "
            f"(schema version {latest}): run `nvcf-lite migrate` (it snapshots the database "
            "first) or restart the server, which migrates it"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    snapshot = path.parent / BACKUPS_DIR / f"pre-migrate-{version:04d}-to-{latest:04d}-{stamp}.db"
    snapshot.parent.mkdir(mode=0o700, exist_ok=True)
    copy_database(path, snapshot)
    give_to_owner(path.parent, snapshot.parent, snapshot)
    return snapshot


BUSY_TIMEOUT_MS = 10000
RETRY_AFTER_S = 5  # told to a client whose write met a lock held past BUSY_TIMEOUT_MS
# How often the server's WAL is checkpointed (its writer does not checkpoint inside a commit).
CHECKPOINT_EVERY_S = 1.0
# Batches writing more than this run on the writer's thread instead of the event loop.
INLINE_MAX = 256 * 1024


async def _open(path: Path, *, must_exist: bool = False) -> aiosqlite.Connection:
    # mode=rw: SQLite itself refuses to create a missing file (no race with a check).
    # check_same_thread=False: the writer's connection is also used on the event loop's thread
    # by `Database.write_batch` (always under the database's lock, never at the same time).
    target: Any = f"file:{quote(str(path))}?mode=rw" if must_exist else path
    conn = await aiosqlite.connect(
        target, isolation_level=None, uri=must_exist, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # A rewritten or deleted value (a secret sealed at start, a key revoked) is zeroed where
    # that costs no extra page write; FAST, not ON, so the per-request deletes stay as cheap.
    await conn.execute("PRAGMA secure_delete=FAST")
    return conn


class Tx:
    """The writer connection inside one transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cur = await self._conn.execute(sql, params)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._conn.execute(sql, params) as cur:
            row: Row | None = await cur.fetchone()
            return row

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())


class Database:
    """The SQLite file under data_dir: migrations, a writer and a reader."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        inline_writes: bool = False,
    ):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        # The server writes request batches on the event loop's thread (see write_batch) and
        # checkpoints the WAL from the reader's thread; admin commands do neither.
        self._inline = inline_writes
        self._raw: sqlite3.Connection = writer._conn
        self._written = False
        self._checkpointer: asyncio.Task[None] | None = None
        if inline_writes:
            self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpoint")

    @classmethod
    async def open(cls, path: Path, *, create: bool = True) -> Database:
        """The database, created or migrated (after a snapshot) when `create` (the server);
        without it (admin commands) the file must exist at this build's schema version.
        SchemaError otherwise."""
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_prepare, path, create)
        writer = await _open(path, must_exist=not create)
        try:
            await migrate(writer)
            reader = await _open(path, must_exist=not create)
            if create:
                # No checkpoint inside a commit (it writes the database file and fsyncs, which
                # would stall the event loop under write_batch): _checkpoint_loop does it.
                await writer.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            await writer.close()  # aiosqlite's thread would otherwise keep the process alive
            raise
        if create:
            await asyncio.to_thread(path.chmod, 0o600)  # key hashes and secrets live here
        return cls(path, writer, reader, inline_writes=create)

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
        await self._reader.close()
        await self._writer.close()  # the last connection to close checkpoints the WAL

    async def _checkpoint_loop(self) -> None:
        """Copy committed pages from the WAL into the database file, off the event loop (one
        thread hop per run, on a connection of its own: the reader's may be inside a
        statement), at most every CHECKPOINT_EVERY_S while there are writes. PASSIVE: never
        waits for, nor blocks, readers or the writer."""
        checkpoints = Checkpoints(await asyncio.to_thread(_checkpoint_connection, self.path))
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_EVERY_S)
                if not self._written:
                    continue
                self._written = False
                running = asyncio.ensure_future(asyncio.to_thread(checkpoints.run))
                try:
                    await asyncio.shield(running)
                except Exception as exc:  # the loop must live on: the WAL grows without it
                    log.warning("WAL checkpoint failed (%s); retrying soon", exc)
                    self._written = True
        finally:
            checkpoints.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One BEGIN IMMEDIATE transaction; a full disk or a lock held too long by another
        process surfaces as `write_refused`'s NvcfError (507 / 503), nothing half written."""
        async with self._lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield Tx(self._writer)
                except BaseException:
                    if self._raw.in_transaction:
                        await self._writer.execute("ROLLBACK")
                    raise
                await self._writer.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if self._raw.in_transaction:  # a failed COMMIT leaves the transaction open
                    await self._writer.execute("ROLLBACK")
                refused = write_refused(exc)
                if refused is None:
                    raise
                raise refused from exc

    async def write_batch(self, ops: Sequence[tuple[str, Params]]) -> None:
        """Run many writes as one BEGIN IMMEDIATE transaction. Runs of the same statement go
        through executemany.

        In the server the batch runs right here on the event loop's thread: a small WAL
        commit (synchronous=NORMAL, no checkpoint in it) takes ~20 µs, less than the hop to
        aiosqlite's thread and back (~60 µs, and the GIL contention that comes with it), and
        a group commit holds the writes of many requests. Only when another process (an
        admin command) holds the write lock does it wait for it, on the writer's thread
        (aiosqlite's internal `_execute`, pinned version), so the loop never blocks on a lock.
        """
        groups: list[tuple[str, list[Params]]] = []
        for sql, params in ops:
            if groups and groups[-1][0] == sql:
                groups[-1][1].append(params)
            else:
                groups.append((sql, [params]))
        async with self._lock:
            self._written = True
            # Not inline when the connection is still busy on aiosqlite's thread (a cancelled
            # transaction() leaves its last statement running there) or for a batch of large
            # bodies (megabytes of pages would hold up the loop): then on the thread, in turn.
            try:
                if self._inline and not self._raw.in_transaction and _payload(groups) < INLINE_MAX:
                    try:
                        _apply_batch(self._raw, groups, wait=False)
                        return
                    except sqlite3.OperationalError as exc:
                        if not _is_busy(exc):
                            raise
                await self._writer._execute(_apply_batch, self._raw, groups, True)  # type: ignore[no-untyped-call]
            except sqlite3.OperationalError as exc:
                refused = write_refused(exc)
                if refused is None:
                    raise
                raise refused from exc

    # Each read runs to its end in one hop to the reader's thread: a statement left open
    # across an await (execute, then fetch) holds the connection's read snapshot, and another
    # coroutine's read on the same connection in between would see that older snapshot (an
    # asset created a moment ago "does not exist"; seen under the soak's mixed traffic).
    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._reader.execute_fetchall(sql, params))

    async def check(self) -> str | None:
        """None when the store answers, else why not (for /health)."""
        try:
            await self.fetch_one("SELECT 1")
        except sqlite3.Error as exc:
            return f"SQLite error: {exc}"
        return None

    async def schema_version(self) -> int:
        row = await self.fetch_one("PRAGMA user_version")
        return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection) -> int:
    """Apply every migration above PRAGMA user_version, each in its own transaction."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    migrations = _migrations()
    if current > len(migrations):
        raise _too_new("the database", current, len(migrations))
    for number, sql in migrations:
        if number <= current:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(sql):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        current = number
    return current


def _split(sql: str) -> list[str]:
    """Split a migration into statements (no semicolons inside literals; `--` comments dropped)."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def migrate_file(path: Path) -> tuple[int, Path | None]:
    """Create or upgrade the database file: (its schema version, the pre-migrate snapshot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot = await asyncio.to_thread(_prepare, path, True)
    conn = await _open(path)
    try:
        return await migrate(conn), snapshot
    finally:
        await conn.close()
        await asyncio.to_thread(give_to_owner, path.parent, path)


def _apply_batch(
    conn: sqlite3.Connection, groups: list[tuple[str, list[Params]]], wait: bool
) -> None:
    """The whole batch in one transaction, or nothing. `wait=False`: SQLITE_BUSY at once
    (instead of waiting up to the busy timeout) when another process holds the write lock."""
    if not wait:
        conn.execute("PRAGMA busy_timeout=0")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        if not wait:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    try:
        for sql, rows in groups:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _payload(groups: list[tuple[str, list[Params]]]) -> int:
    """Bytes of the blobs and texts a batch writes (request bodies, results)."""
    return sum(
        len(value)
        for _, rows in groups
        for params in rows
        for value in (params.values() if isinstance(params, dict) else params)
        if isinstance(value, bytes | str)
    )


def _checkpoint_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


class Checkpoints:
    """The checkpoint connection, closed only when no checkpoint runs on it.

    Closing a connection while another thread runs a statement on it crashes the process
    (a segfault, seen twice in the suite): the loop's cancellation at close, or an event loop
    shutting down that cancels every task (asyncio.Runner does), ends the asyncio side of a
    checkpoint while its thread is still inside SQLite. So the threads decide: `close()` from
    the loop closes at once when idle, else the running checkpoint closes it as it ends.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._state = threading.Lock()
        self._busy = False
        self._closing = False

    def run(self) -> None:
        """One PASSIVE checkpoint (on a worker thread); nothing once closing."""
        with self._state:
            if self._closing:
                return
            self._busy = True
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            with self._state:
                self._busy = False
                closing = self._closing
            if closing:
                self._conn.close()

    def close(self) -> None:
        with self._state:
            self._closing = True
            busy = self._busy
        if not busy:
            self._conn.close()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    ) or ("locked" in str(exc) or "busy" in str(exc))


def write_refused(exc: sqlite3.OperationalError) -> NvcfError | None:
    """The client's answer to a write SQLite refused for want of a resource, not a bug: the
    disk is full (507; the transaction rolled back, so nothing stored changed) or another
    process held the write lock past the busy timeout (503 with Retry-After). None for any
    other error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return InsufficientStorage(
            "Not enough disk space under the server's data directory to record this: "
            "nothing was stored; retry once space is freed"
        )
    if _is_busy(exc):
        return Unavailable(
            f"The server's database was locked by another process for more than "
            f"{BUSY_TIMEOUT_MS // 1000} s; retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return None


def is_constraint_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.IntegrityError)
