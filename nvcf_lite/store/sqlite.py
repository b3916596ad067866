"""SQLite access: one writer connection, one reader connection, numbered migrations.

WAL mode lets the reader see committed data while the writer works. Writes go through
`transaction()`, which serialises writers in-process and opens `BEGIN IMMEDIATE` so another
process (the `nvcf-lite keys` CLI) waits for the lock instead of failing mid-transaction.
This is the only module that imports aiosqlite.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

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


async def _open(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=10000")
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

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _open(path)
        try:
            await migrate(writer)
            reader = await _open(path)
        except BaseException:
            await writer.close()  # aiosqlite's thread would otherwise keep the process alive
            raise
        await asyncio.to_thread(path.chmod, 0o600)  # key hashes and secrets live here
        return cls(path, writer, reader)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def write_batch(self, ops: Sequence[tuple[str, Params]]) -> None:
        """Run many writes as one BEGIN IMMEDIATE transaction in ONE hop to the writer's
        thread (each awaited aiosqlite call is a thread hop of ~60 µs; a batch of 50
        requests' writes would otherwise pay 50+ of them). Runs of the same statement go
        through executemany. Uses aiosqlite's internal `_execute` (pinned version)."""
        groups: list[tuple[str, list[Params]]] = []
        for sql, params in ops:
            if groups and groups[-1][0] == sql:
                groups[-1][1].append(params)
            else:
                groups.append((sql, [params]))
        async with self._lock:
            await self._writer._execute(_apply_batch, self._writer._conn, groups)  # type: ignore[no-untyped-call]

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._reader.execute(sql, params) as cur:
            row: Row | None = await cur.fetchone()
            return row

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

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
    for number, sql in _migrations():
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


async def migrate_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await _open(path)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def _apply_batch(conn: sqlite3.Connection, groups: list[tuple[str, list[Params]]]) -> None:
    """On the writer's own thread: the whole batch in one transaction, or nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in groups:
            conn.executemany(sql, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def is_constraint_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.IntegrityError)
