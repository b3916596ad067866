"""The autoscaler's decisions (domain.autoscaling), table-driven, plus scheduler scaling with
the fake runtime: bursts, idle scale-down with draining, scale to zero and back, warm pool."""

from __future__ import annotations

from typing import Any

import pytest
from scheduler_support import SchedulerBench

from nvcf_lite.domain.autoscaling import Policy, ScaleState, desired, policy
from nvcf_lite.domain.deployment_rules import SpecInput
from nvcf_lite.models import FunctionStatus, GpuSpec, InstanceState


def spec(
    low: int = 1, high: int = 3, slots: int = 1, auto: dict[str, Any] | None = None
) -> GpuSpec:
    return GpuSpec(
        gpu_specification_id="s",
        gpu="CPU",
        instance_type="CPU.x1",
        min_instances=low,
        max_instances=high,
        max_request_concurrency=slots,
        autoscaling_configuration=auto,
    )


IDLE = Policy(idle_s=30.0)


@pytest.mark.parametrize(
    ("name", "s", "current", "demand", "busy_ago", "want"),
    [
        ("steady at min", spec(), 1, 0, 0.0, 1),
        ("burst scales to demand", spec(), 1, 5, 0.0, 3),  # capped at max
        ("partial burst", spec(), 1, 2, 0.0, 2),
        ("concurrency absorbs load", spec(slots=4), 1, 4, 0.0, 1),
        ("concurrency overflow", spec(slots=4), 1, 9, 0.0, 3),
        ("idle but inside window keeps", spec(), 3, 0, 10.0, 3),
        ("idle past window shrinks to min", spec(), 3, 0, 31.0, 1),
        ("past window shrinks to need", spec(), 3, 2, 31.0, 2),
        ("scale from zero on demand", spec(low=0), 0, 1, 100.0, 1),
        ("zero stays zero without demand", spec(low=0), 0, 0, 100.0, 0),
        ("scale to zero after idle", spec(low=0), 1, 0, 31.0, 0),
        ("never below min after a crash", spec(low=2), 0, 0, 0.0, 2),
        ("never above max", spec(high=2), 2, 50, 0.0, 2),
    ],
)
def test_desired(
    name: str, s: GpuSpec, current: int, demand: int, busy_ago: float, want: int
) -> None:
    state = ScaleState(busy_at=1000.0 - busy_ago)
    assert desired(s, current, demand, state, 1000.0, IDLE) == want, name


def test_scale_up_details_threshold_and_factor() -> None:
    s = spec(low=1, high=10, slots=10, auto={"scaleUpDetails": {"threshold": 50, "factor": 3.0}})
    pol = policy(s, 30.0)
    assert pol.up_threshold == 0.5 and pol.up_factor == 3.0
    # 6 in flight on one instance of 10 slots = 60 % > 50 %: jump by the factor
    assert desired(s, 1, 6, ScaleState(), 0.0, pol) == 3


def test_scale_down_details_factor_and_stickiness() -> None:
    auto = {"scaleDownDetails": {"factor": 0.5, "stickiness": {"size": "PT10S"}}}
    s = spec(low=1, high=8, auto=auto)
    pol = policy(s, 30.0)
    assert pol.idle_s == 10.0 and pol.down_factor == 0.5
    assert desired(s, 8, 0, ScaleState(busy_at=0.0), 11.0, pol) == 4  # halves, not straight to 1


def test_busy_time_moves_with_load() -> None:
    s, state = spec(), ScaleState()
    assert desired(s, 2, 2, state, 50.0, IDLE) == 2
    assert state.busy_at == 50.0
    assert desired(s, 2, 0, state, 70.0, IDLE) == 2
    assert desired(s, 2, 0, state, 81.0, IDLE) == 1


# -- the scheduler acting on those decisions (fake runtime, real SQLite) --------------------


async def test_burst_scales_up_to_max_then_back_to_min(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="CPU", min_instances=1, max_instances=2)
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    queued = {"n": 5}
    bench.demand.depth_of = lambda v: queued["n"] if v == vid else 0
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    queued["n"] = 0
    await bench.until(lambda: len(bench.runtime.containers) == 1, limit_s=5)
    assert await bench.status(vid) == FunctionStatus.ACTIVE


async def test_in_flight_instances_are_drained_not_killed(bench: SchedulerBench) -> None:
    fid, vid = await bench.deploy(gpu="CPU", min_instances=1, max_instances=2)
    bench.demand.depth_of = lambda v: 2
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    busy, idle = bench.scheduler.ready(vid)
    busy.in_flight = 1
    bench.demand.depth_of = lambda v: 0
    # idle: the instance without work goes, the one serving a request stays
    await bench.until(lambda: idle.instance_id not in bench.scheduler.instances)
    assert busy.state == InstanceState.READY
    # forced down (max 1 and the busy one is extra): drained, never killed mid-request
    bench.demand.depth_of = lambda v: 1
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    for inst in bench.scheduler.ready(vid):
        inst.in_flight = 1
    await bench.deployments.update(fid, vid, [SpecInput(min_instances=1, max_instances=1)])
    await bench.until(
        lambda: any(i.state == InstanceState.DRAINING for i in bench.scheduler.instances.values())
    )
    for _ in range(5):
        await bench.scheduler.tick()
    assert len(bench.runtime.containers) == 2  # the drained one still finishes its request
    for inst in list(bench.scheduler.instances.values()):
        inst.in_flight = 0
    await bench.until(lambda: len(bench.runtime.containers) == 1)


async def test_scale_to_zero_and_back(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="CPU", min_instances=0, max_instances=1)
    assert await bench.status(vid) == FunctionStatus.ACTIVE
    bench.demand.depth_of = lambda v: 1
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    bench.demand.depth_of = lambda v: 0
    await bench.until(lambda: not bench.runtime.containers)
    bench.demand.depth_of = lambda v: 1
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)


async def test_unstartable_scale_from_zero_reports_the_failure(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy("fake/missing", gpu="CPU", min_instances=0, max_instances=1)
    bench.demand.depth_of = lambda v: 1
    await bench.until(lambda: bench.scheduler.start_failure(vid) is not None)
    _, why = bench.scheduler.start_failure(vid) or (0.0, "")
    assert "could not be pulled" in why
    assert await bench.status(vid) == FunctionStatus.ACTIVE  # min 0: nothing is required


async def test_warm_pool_pauses_then_resumes(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="CPU", min_instances=0, max_instances=1, warm_pool_seconds=60)
    bench.demand.depth_of = lambda v: 1
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    (first,) = bench.scheduler.ready(vid)
    bench.demand.depth_of = lambda v: 0
    await bench.until(lambda: first.state == InstanceState.PAUSED)
    container = bench.runtime.containers[first.container_id or ""]
    assert container.state == "paused"
    bench.demand.depth_of = lambda v: 1
    await bench.until(lambda: first.state == InstanceState.READY)
    assert first.cold_kind == "paused" and len(bench.runtime.created) == 1  # no new container


async def test_warm_pool_expires(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="CPU", min_instances=0, max_instances=1, warm_pool_seconds=0.3)
    bench.demand.depth_of = lambda v: 1
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    bench.demand.depth_of = lambda v: 0
    await bench.until(lambda: not bench.runtime.containers, limit_s=5)


async def test_raising_min_stays_active_while_instances_start(bench: SchedulerBench) -> None:
    fid, vid = await bench.deploy(gpu="CPU", min_instances=0, max_instances=2)
    await bench.deployments.update(fid, vid, [SpecInput(min_instances=1, max_instances=2)])
    seen: set[FunctionStatus] = set()

    async def ready() -> bool:
        seen.add(await bench.status(vid))
        return len(bench.scheduler.ready(vid)) == 1

    await bench.until(ready)
    assert seen == {FunctionStatus.ACTIVE}


async def test_raising_min_that_cannot_start_degrades(bench: SchedulerBench) -> None:
    fid, vid = await bench.deploy("fake/exit", gpu="CPU", min_instances=0, max_instances=1)
    await bench.deployments.update(fid, vid, [SpecInput(min_instances=1, max_instances=1)])

    async def degraded() -> bool:
        return await bench.status(vid) == FunctionStatus.DEGRADED

    await bench.until(degraded)


async def test_spec_states_say_what_each_specification_is_doing(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="L40", min_instances=2, max_instances=2)
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    (state,) = bench.scheduler.spec_states(vid)
    assert (state.state, state.target, state.ready) == ("ok", 2, 2)
    _, other = await bench.deploy(gpu="L40", min_instances=1, max_instances=1)
    await bench.until(lambda: bench.scheduler.spec_states(other)[0].state == "unschedulable")
    assert "waiting for capacity" in (bench.scheduler.spec_states(other)[0].detail or "")
    _, looping = await bench.deploy(gpu="CPU", min_instances=1, max_instances=1)
    for _ in range(3):
        await bench.until(lambda: len(bench.scheduler.ready(looping)) == 1)
        (inst,) = bench.scheduler.ready(looping)
        bench.runtime.crash(inst.container_id or "")
        await bench.until(lambda i=inst: i.instance_id not in bench.scheduler.instances)
    assert bench.scheduler.spec_states(looping)[0].state == "crash-looping"
