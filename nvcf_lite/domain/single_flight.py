"""One read at a time per key: callers that ask while it runs share its answer.

The invocation hot path keeps keys and function versions in memory for a couple of seconds.
When an entry is missing (at start, after it expires, after a change) and a burst arrives, every
request of the burst would read SQLite for the same row: with 6000 clients connecting at once
that was 6000 reads on SQLite's one thread, and the first answer took seconds. And an entry in
the last half of its life is read again ahead, in the background (`start`), while callers still
get it: under steady traffic it never expires, so no burst waits for a read at all (with 6000
clients a wait at every expiry cost ~10% of the server's CPU: a shield and a wake-up each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        """`read()`'s answer, or that of the read for `key` already running. Its exception
        goes to every caller; a caller that is cancelled does not cancel the read."""
        return await asyncio.shield(self.start(key, read))

    def start(self, key: K, read: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        """The read for `key`, begun now unless one is running (a refresh nobody waits for:
        its exception is retrieved here)."""
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(read())
            self._running[key] = running
            running.add_done_callback(lambda done: self._done(key, done))
        return running

    def _done(self, key: K, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: the callers got it (or all of them left)

    def forget(self) -> None:
        """Reads running now answer their callers, but later callers start a new one (what
        they read may predate a change)."""
        self._running.clear()
