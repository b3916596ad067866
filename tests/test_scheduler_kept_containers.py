"""The stopped containers of failed instances are kept for `nvcf-lite logs`: the newest
`docker.failed_containers_kept` per version, the rest removed; undeploy removes them all; 0
keeps none. Scheduler unit tests on the fake runtime (the Docker side: test_container_logs_live)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config
from fake_runtime import FakeRuntime
from scheduler_support import SchedulerBench, sim

from nvcf_lite.domain.placement import Host
from nvcf_lite.store.sqlite import Database

FAST = {
    "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "0.4",
    "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_INITIAL_S": "0.02",
    "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_MAX_S": "0.05",
    "NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S": "0.05",
}


@pytest.fixture
async def benches(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[SchedulerBench, Database]] = []

    async def make(kept: int) -> SchedulerBench:
        data = tmp_path / f"data-{kept}"
        config = make_config(data, NVCF_LITE_DOCKER__FAILED_CONTAINERS_KEPT=str(kept), **FAST)
        db = await Database.open(data / "db.sqlite")
        bench = SchedulerBench(config, db, Host(sim("L40", 2)), FakeRuntime())
        made.append((bench, db))
        return bench

    yield make
    for bench, db in made:
        await bench.scheduler.shutdown(keep_instances=False)
        await bench.runtime.close()
        await db.close()


def states(bench: SchedulerBench) -> list[str]:
    return sorted(c.state for c in bench.runtime.containers.values())


async def crash_ready_instance(bench: SchedulerBench, vid: str) -> str:
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    (inst,) = bench.scheduler.ready(vid)
    assert inst.container_id is not None
    bench.runtime.crash(inst.container_id)
    await bench.until(lambda: inst.instance_id not in bench.scheduler.instances)
    return inst.container_id


async def test_the_newest_failed_containers_are_kept_until_undeploy(
    benches: Callable[..., Any],
) -> None:
    bench: SchedulerBench = await benches(3)
    fid, vid = await bench.deploy(min_instances=1, max_instances=1)
    crashed = [await crash_ready_instance(bench, vid) for _ in range(4)]
    await bench.until(lambda: states(bench) == ["exited", "exited", "exited", "running"])
    kept = {c.id for c in bench.runtime.containers.values() if c.state == "exited"}
    assert kept == set(crashed[1:])  # the oldest one went
    assert all(
        b"crashed" in c.logs.encode() for c in bench.runtime.containers.values() if c.id in kept
    )
    await bench.deployments.undeploy(fid, vid, graceful=False)
    await bench.until(lambda: not bench.runtime.containers)


async def test_zero_keeps_none(benches: Callable[..., Any]) -> None:
    bench: SchedulerBench = await benches(0)
    _, vid = await bench.deploy(min_instances=1, max_instances=1)
    await crash_ready_instance(bench, vid)
    await bench.until(lambda: states(bench) == ["running"])
