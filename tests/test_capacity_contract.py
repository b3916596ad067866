"""The Capacity contract (workers/capacity.py): the same assertions on the real Scheduler (over
real SQLite and a FakeRuntime) and on the StubCapacity the dispatcher's tests use.

Ready instances and their slots (the spec's maxRequestConcurrency), an unreachable instance
taken out of them, whether a version has any instance, and the refusals: a version not deployed
(404), one whose instances could not start (503 for the requests queued before the failure,
recorded as failed) and one in ERROR (503).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pytest
from capacity_support import StubCapacity
from scheduler_support import SchedulerBench, open_bench

from nvcf_lite.errors import GONE, WORKER_ERROR
from nvcf_lite.models import FunctionStatus, new_id
from nvcf_lite.workers.capacity import Capacity
from nvcf_lite.workers.instances import Instance


class World(Protocol):
    """Arranges what the contract needs, each in its own way; `capacity` is under test."""

    capacity: Capacity

    async def ready_version(self, concurrency: int) -> tuple[str, Instance]: ...

    async def failed_version(self) -> str: ...


class StubWorld:
    def __init__(self) -> None:
        self.stub = StubCapacity()
        self.capacity: Capacity = self.stub

    async def ready_version(self, concurrency: int) -> tuple[str, Instance]:
        vid = new_id()
        spec = self.stub.deploy(vid, concurrency=concurrency)
        return vid, self.stub.add_instance(vid, spec)

    async def failed_version(self) -> str:
        vid = new_id()
        self.stub.deploy(vid)
        self.stub.fail(vid, "the image fake/missing could not be pulled")
        return vid


class SchedulerWorld:
    def __init__(self, bench: SchedulerBench) -> None:
        self.bench = bench
        self.capacity: Capacity = bench.scheduler

    async def ready_version(self, concurrency: int) -> tuple[str, Instance]:
        _, vid = await self.bench.deploy(
            gpu="CPU", min_instances=1, max_instances=1, max_request_concurrency=concurrency
        )
        await self.bench.until(lambda: self.bench.scheduler.ready(vid))
        (inst,) = self.bench.scheduler.ready(vid)
        return vid, inst

    async def failed_version(self) -> str:
        _, vid = await self.bench.deploy("fake/missing", gpu="CPU", min_instances=1)

        async def in_error() -> bool:
            return await self.bench.status(vid) == FunctionStatus.ERROR

        await self.bench.until(in_error)
        return vid


@pytest.fixture(params=["scheduler", "stub"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    if request.param == "stub":
        yield StubWorld()
        return
    async with open_bench(tmp_path) as bench:
        yield SchedulerWorld(bench)


async def test_ready_instances_and_their_slots(world: World) -> None:
    vid, inst = await world.ready_version(concurrency=3)
    cap = world.capacity
    assert cap.ready(vid) == [inst]
    assert cap.slots(inst) == 3
    assert cap.has_instances(vid)
    assert cap.refusal(vid, time.monotonic()) is None
    other = new_id()
    assert cap.ready(other) == [] and not cap.has_instances(other)
    cap.nudge()  # asks for a look at the instances; never fails


async def test_a_version_not_deployed_is_refused_with_404(world: World) -> None:
    refusal = world.capacity.refusal(new_id(), time.monotonic())
    assert refusal is not None
    assert (refusal.status, refusal.kind, refusal.failed) == (404, GONE, False)
    assert "is not deployed" in refusal.detail
    assert refusal.queued_before == math.inf  # every queued request of it ends


async def test_a_version_whose_instances_cannot_start(world: World) -> None:
    vid = await world.failed_version()
    cap = world.capacity
    assert cap.ready(vid) == [] and not cap.has_instances(vid)
    earlier = cap.refusal(vid, 0.0)  # queued before the failed start
    assert earlier is not None and (earlier.status, earlier.kind) == (503, WORKER_ERROR)
    assert earlier.failed and 0.0 < earlier.queued_before <= time.monotonic()
    assert earlier.detail.startswith("no instance could start for this request: ")
    assert "could not be pulled" in earlier.detail
    later = cap.refusal(vid, time.monotonic())  # queued after it: the version is in ERROR
    assert later is not None and (later.status, later.kind) == (503, WORKER_ERROR)
    assert not later.failed and later.queued_before == math.inf
    assert later.detail.startswith("the function version cannot start: ")


async def test_an_unreachable_instance_leaves_ready_until_it_answers_again(world: World) -> None:
    vid, inst = await world.ready_version(concurrency=2)
    cap = world.capacity
    cap.unreachable(inst, "connecting to 127.0.0.1:1 failed: [Errno 111] Connection refused")
    assert cap.ready(vid) == []  # no more requests to it for now
    assert cap.has_instances(vid)  # still there: its health check decides what comes next
    assert inst.error is not None and "Connection refused" in inst.error
