"""The caches in front of SQLite on the invocation path (function versions, API keys): one read
per function or bearer at a time, whatever the burst; a change (a status, a revoke) is never
hidden by a read that began before it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.invocations import CachedVersions, VersionInfo
from nvcf_lite.errors import Unauthorized
from nvcf_lite.models import SCOPES, FunctionStatus, now_iso
from nvcf_lite.store.keys import KeysRepo
from nvcf_lite.store.sqlite import Database


class Lookup:
    """A versions read that holds until released, counting the reads it was asked for."""

    def __init__(self) -> None:
        self.reads = 0
        self.status = FunctionStatus.ACTIVE
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, fid: str) -> list[VersionInfo]:
        self.reads += 1
        self.started.set()
        status = self.status
        await self.release.wait()
        return [VersionInfo(fid, "v1", "fn", status)]


async def test_a_burst_of_misses_makes_one_read() -> None:
    lookup = Lookup()
    cache = CachedVersions(lookup)
    callers = [asyncio.ensure_future(cache("f1")) for _ in range(500)]
    await asyncio.sleep(0)
    lookup.release.set()
    answers = await asyncio.gather(*callers)
    assert lookup.reads == 1
    assert all(a[0].status is FunctionStatus.ACTIVE for a in answers)
    await cache("f1")  # cached now
    await cache("f2")  # another function reads on its own
    assert lookup.reads == 2


async def test_a_caller_that_gives_up_leaves_the_read_to_the_others() -> None:
    lookup = Lookup()
    cache = CachedVersions(lookup)
    first, second = asyncio.ensure_future(cache("f1")), asyncio.ensure_future(cache("f1"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    lookup.release.set()
    assert (await second)[0].version_id == "v1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert lookup.reads == 1


async def test_a_read_begun_before_a_status_change_is_not_cached() -> None:
    lookup = Lookup()
    cache = CachedVersions(lookup)
    stale = asyncio.ensure_future(cache("f1"))
    await lookup.started.wait()
    lookup.status = FunctionStatus.INACTIVE
    cache.clear()  # the status changed while the read ran
    lookup.release.set()
    assert (await stale)[0].status is FunctionStatus.ACTIVE  # its callers asked before
    assert (await cache("f1"))[0].status is FunctionStatus.INACTIVE
    assert lookup.reads == 2


async def test_a_failed_read_fails_its_callers_and_the_next_call_reads_again() -> None:
    calls = 0

    async def broken(fid: str) -> list[VersionInfo]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0)
            raise RuntimeError("database gone")
        return []

    cache = CachedVersions(broken)
    both = await asyncio.gather(cache("f1"), cache("f1"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in both)
    assert await cache("f1") == [] and calls == 2


# -- API keys, on real SQLite -------------------------------------------------------------------


class CountingRepo(KeysRepo):
    """The keys table, counting the lookups by hash (and able to hold them)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.lookups = 0
        self.gate: asyncio.Event | None = None

    async def by_hash(self, key_hash: str) -> Any:
        self.lookups += 1
        row = await super().by_hash(key_hash)
        if self.gate is not None:  # read, then held: the answer is from before what follows
            await self.gate.wait()
        return row


@pytest.fixture
def repo(db: Database) -> CountingRepo:
    return CountingRepo(db)


async def test_a_burst_with_one_key_looks_it_up_once(repo: CountingRepo) -> None:
    keys = Keys(repo, "nca-a", cache_seconds=60)
    token, _ = await keys.create(SCOPES)
    answers = await asyncio.gather(*(keys.authenticate(f"Bearer {token}") for _ in range(300)))
    assert repo.lookups == 1 and {a.nca_id for a in answers} == {"nca-a"}
    bad = [keys.authenticate("Bearer nvapi-" + "x" * 64) for _ in range(50)]
    refused = await asyncio.gather(*bad, return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in refused)
    assert repo.lookups == 2  # refusals are shared too, and never cached


async def test_a_lookup_running_across_a_revoke_is_not_cached(repo: CountingRepo) -> None:
    keys = Keys(repo, "nca-a", cache_seconds=60)
    token, record = await keys.create(SCOPES)
    repo.gate = asyncio.Event()
    before = asyncio.ensure_future(keys.verify(token))
    await asyncio.sleep(0.05)
    await keys.revoke(record.key_id)  # while the lookup waits at the gate
    repo.gate.set()
    assert (await before).key_id == record.key_id  # read before the revoke
    repo.gate = None
    with pytest.raises(Unauthorized):
        await keys.verify(token)


# -- read again ahead of expiry -------------------------------------------------------------------


async def test_an_entry_in_the_last_half_of_its_life_is_read_again_without_waiting() -> None:
    lookup = Lookup()
    lookup.release.set()
    cache = CachedVersions(lookup, ttl_s=3.0)
    await cache("f1")
    first_expiry = cache._cache["f1"][0]
    assert lookup.reads == 1
    await asyncio.sleep(1.6)  # past half its life, not expired (1.4 s to spare)
    lookup.release.clear()  # the refresh will hold
    answers = await asyncio.wait_for(asyncio.gather(*(cache("f1") for _ in range(100))), 1)
    assert all(a[0].version_id == "v1" for a in answers)  # served from the entry at once
    await asyncio.sleep(0)
    assert lookup.reads == 2  # one refresh for the burst, in the background
    lookup.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert cache._cache["f1"][0] > first_expiry + 1  # renewed: steady traffic never misses


async def test_a_revoked_key_still_stops_within_the_cache_time_though_read_ahead(
    repo: CountingRepo,
) -> None:
    keys = Keys(repo, "nca-a", cache_seconds=3.0)
    token, record = await keys.create(SCOPES)
    await keys.verify(token)
    await asyncio.sleep(1.6)
    await keys.verify(token)  # the refresh starts in the background: the entry answers
    await asyncio.sleep(0.05)
    assert repo.lookups == 2
    await keys.revoke(record.key_id)  # clears the cache: the next call reads again
    with pytest.raises(Unauthorized):
        await keys.verify(token)
    # a revoke this server was not told of (another process's): the refresh is refused, and
    # the entry is never used past its expiry
    token, record = await keys.create(SCOPES)
    await keys.verify(token)
    await repo.revoke(record.key_id, now_iso())
    await asyncio.sleep(1.6)
    assert (await keys.verify(token)).key_id == record.key_id  # in its entry's life still
    await asyncio.sleep(1.6)  # past its expiry (3 s after its read)
    with pytest.raises(Unauthorized):
        await keys.verify(token)
