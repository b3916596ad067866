"""Writes SQLite refuses for want of a resource are the client's clear answer, not a 500
(store/sqlite.py `write_refused`), on a real database file:

* the database's space runs out (SQLITE_FULL, here by `PRAGMA max_page_count`, as a full
  data_dir file system does): InsufficientStorage (507), the transaction rolled back, what
  was stored before intact, and writes work again once there is room;
* another process holds the write lock past the busy timeout (shortened here): Unavailable
  (503) with Retry-After, for group-committed batches and transactions alike; once the lock
  is released, writes go through.

And the WAL checkpoint's own connection is never closed while a checkpoint runs on it (a close
under a running statement crashes the process).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nvcf_lite.errors import InsufficientStorage, Unavailable
from nvcf_lite.store import sqlite as store_sqlite
from nvcf_lite.store.sqlite import Checkpoints, Database

CREATE = "CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, data BLOB)"
INSERT = "INSERT INTO blobs (data) VALUES (?)"


@pytest.fixture
async def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    monkeypatch.setattr(store_sqlite, "BUSY_TIMEOUT_MS", 300)
    database = await Database.open(tmp_path / "nvcf-lite.db")
    async with database.transaction() as tx:
        await tx.execute(CREATE)
    try:
        yield database
    finally:
        await database.close()


async def count(db: Database) -> int:
    row = await db.fetch_one("SELECT count(*) FROM blobs")
    return int(row[0]) if row else 0


async def test_a_full_database_is_507_and_keeps_what_it_had(db: Database) -> None:
    await db.write_batch([(INSERT, (b"kept",))])
    row = await db.fetch_one("PRAGMA page_count")
    assert row is not None
    async with db.transaction() as tx:
        await tx.fetch_all(f"PRAGMA max_page_count = {int(row[0]) + 2}")
    with pytest.raises(InsufficientStorage) as batch:
        await db.write_batch([(INSERT, (b"x" * 200_000,))])
    assert "disk space" in batch.value.detail and batch.value.status == 507
    with pytest.raises(InsufficientStorage):
        async with db.transaction() as tx:
            await tx.execute(INSERT, (b"y" * 200_000,))
    assert await count(db) == 1
    assert await db.fetch_one("SELECT data FROM blobs") is not None
    async with db.transaction() as tx:
        await tx.fetch_all("PRAGMA max_page_count = 1073741823")
    await db.write_batch([(INSERT, (b"z" * 200_000,))])  # room again: no restart needed
    assert await count(db) == 2
    row = await db.fetch_one("PRAGMA integrity_check")
    assert row is not None and row[0] == "ok"


async def test_a_lock_held_past_the_busy_timeout_is_503_with_retry_after(db: Database) -> None:
    other = sqlite3.connect(db.path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(Unavailable) as batch:
            await db.write_batch([(INSERT, (b"a",))])
        assert batch.value.status == 503
        assert batch.value.headers == {"Retry-After": str(store_sqlite.RETRY_AFTER_S)}
        assert "locked by another process" in batch.value.detail
        with pytest.raises(Unavailable):
            async with db.transaction() as tx:
                await tx.execute(INSERT, (b"b",))
        other.execute("ROLLBACK")
    finally:
        other.close()
    await db.write_batch([(INSERT, (b"c",))])
    async with db.transaction() as tx:
        await tx.execute(INSERT, (b"d",))
    assert await count(db) == 2


# -- the checkpoint connection is never closed under a running checkpoint ----------------------


class HeldConnection:
    """A connection whose checkpoint holds until released; records what was done to it."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []

    def execute(self, sql: str) -> HeldConnection:
        self.calls.append("execute")
        self.inside.set()
        self.release.wait(10)
        return self

    def fetchall(self) -> list[Any]:
        return []

    def close(self) -> None:
        self.calls.append("close")


def test_a_checkpoint_running_at_close_closes_its_connection_when_it_ends() -> None:
    conn = HeldConnection()
    checkpoints = Checkpoints(conn)  # type: ignore[arg-type]
    thread = threading.Thread(target=checkpoints.run)
    thread.start()
    assert conn.inside.wait(10)
    checkpoints.close()  # as the event loop's side ends (cancelled) mid-checkpoint
    assert conn.calls == ["execute"]  # not closed under it
    conn.release.set()
    thread.join(10)
    assert conn.calls == ["execute", "close"]
    checkpoints.run()  # a checkpoint asked for after close does nothing
    assert conn.calls == ["execute", "close"]


def test_an_idle_checkpoint_connection_closes_at_once() -> None:
    conn = HeldConnection()
    Checkpoints(conn).close()  # type: ignore[arg-type]
    assert conn.calls == ["close"]
