"""Instance types carry CPU cores, memory and /dev/shm (domain/instance_types.py): computed
from the host's totals or set in config, given to each container exactly, and counted by
placement so that instances never overcommit the host (README "GPUs and instance types").
Scheduler tests run on the fake runtime over real SQLite; the Docker read-back is in
test_instance_limits_docker.py."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import make_config
from fake_runtime import FakeRuntime
from scheduler_support import SchedulerBench, sim

from nvcf_lite.config import ConfigError, InstanceTypeLimits, load_config
from nvcf_lite.domain.deployment_rules import SpecInput
from nvcf_lite.domain.instance_types import Limits, Resources, Sizing
from nvcf_lite.domain.placement import Host
from nvcf_lite.errors import Invalid
from nvcf_lite.inventory import build_host
from nvcf_lite.models import FunctionStatus
from nvcf_lite.runtime.machine import MachineTotals, read_machine
from nvcf_lite.runtime.nvml import GpuInventory
from nvcf_lite.store.sqlite import Database

MIB = 1024 * 1024
MACHINE = MachineTotals(
    cpu_cores=16.0, memory_mb=65536, cpu_source="CPU affinity", memory_source="MemTotal"
)
FOUR_L40 = json.dumps([{"name": "L40", "count": 4, "memory_mb": 46068}])


# --- per-type limits from the host's totals and from config --------------------------------


def test_a_gpu_instance_gets_one_share_per_unit_and_cpu_x1_a_slot_of_the_host(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_GPUS__SIMULATED=FOUR_L40,
        NVCF_LITE_GPUS__CPU_INSTANCE_MAX="8",
        NVCF_LITE_RESOURCES__RESERVED_MEMORY_MB="4096",
    )
    host = build_host(config, GpuInventory(gpus=[]), MACHINE)
    assert host.sizing is not None
    # 16 cores and 64 GiB less 4 GiB kept back, shared by 4 GPU units
    assert host.sizing.totals == Resources(cpu_millis=16000, memory_mb=61440)
    assert host.limits("L40.GPU.1x") == Limits(cpu_millis=4000, memory_mb=15360, shm_mb=1024)
    assert host.limits("L40.GPU.4x") == Limits(cpu_millis=16000, memory_mb=61440, shm_mb=1024)
    # CPU.x1: the totals divided by gpus.cpu_instance_max
    assert host.limits("CPU.x1") == Limits(cpu_millis=2000, memory_mb=7680, shm_mb=1024)
    assert "reserved_memory_mb 4096" in host.sizing.source


def test_config_overrides_one_instance_type_and_the_totals(tmp_path: Path) -> None:
    overrides = [
        {"name": "l40.gpu.1x", "cpu_cores": 6.5, "shm_size_mb": 8192},  # names are case-blind
        {"name": "CPU.x1", "memory_mb": 512},  # shm is capped at the memory
        {"name": "H100.GPU.1x", "cpu_cores": 1},  # not on this host
    ]
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_GPUS__SIMULATED=FOUR_L40,
        NVCF_LITE_RESOURCES__CPU_CORES="8",
        NVCF_LITE_RESOURCES__MEMORY_MB="32768",
        NVCF_LITE_RESOURCES__SHM_SIZE_MB="2048",
        NVCF_LITE_RESOURCES__INSTANCE_TYPES=json.dumps(overrides),
    )
    host = build_host(config, GpuInventory(gpus=[]), MACHINE)
    assert host.sizing is not None
    assert host.sizing.totals == Resources(cpu_millis=8000, memory_mb=32768)  # no reserve
    assert host.limits("L40.GPU.1x") == Limits(cpu_millis=6500, memory_mb=8192, shm_mb=8192)
    assert host.limits("L40.GPU.2x") == Limits(cpu_millis=4000, memory_mb=16384, shm_mb=2048)
    assert host.limits("CPU.x1") == Limits(cpu_millis=1000, memory_mb=512, shm_mb=512)
    assert host.sizing.unused_overrides(host.all_instance_types()) == ["H100.GPU.1x"]
    assert host.sizing.source == "CPU: resources.cpu_cores; memory: resources.memory_mb"


def test_an_instance_type_bigger_than_the_host_is_refused_at_deploy() -> None:
    sizing = Sizing(
        Resources(2000, 4096),
        gpu_units=1,
        cpu_instance_max=2,
        shm_mb=64,
        overrides=[InstanceTypeLimits(name="L40.GPU.1x", memory_mb=8192)],
    )
    host = Host(sim("L40", 1), cpu_instance_max=2, sizing=sizing)
    with pytest.raises(Invalid, match=re.escape("needs 2 CPU cores and 8192 MiB of memory")):
        host.resolve("L40", "L40.GPU.1x")
    assert host.resolve("CPU", None) == ("CPU", "CPU.x1", 0)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"NVCF_LITE_RESOURCES__RESERVED_MEMORY_MB": "-1"}, "reserved_memory_mb"),
        ({"NVCF_LITE_RESOURCES__SHM_SIZE_MB": "0"}, "shm_size_mb"),
        ({"NVCF_LITE_RESOURCES__INSTANCE_TYPES": '[{"name":"CPU.x1","cpu_cores":0}]'}, "0.01"),
        ({"NVCF_LITE_RESOURCES__INSTANCE_TYPES": '[{"name":"CPU.x1","memory_mb":5}]'}, ">= 6"),
        ({"NVCF_LITE_RESOURCES__INSTANCE_TYPES": '[{"name":"a"},{"name":"A"}]'}, "repeated"),
        ({"NVCF_LITE_RESOURCES__INSTANCE_TYPES": '[{"name":"a","cpus":1}]'}, "cpus"),
    ],
)
def test_bad_resource_settings_are_config_errors(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        load_config(None, env)


# --- the machine's totals --------------------------------------------------------------------


def _machine_root(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "proc").mkdir(parents=True)
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:       8388608 kB\nMemFree: 1 kB\n")
    for name, text in files.items():
        path = tmp_path / "sys" / "fs" / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


def test_machine_totals_take_the_own_containers_cgroup_limits(tmp_path: Path) -> None:
    import os

    cores = float(len(os.sched_getaffinity(0)))
    host = read_machine(_machine_root(tmp_path / "host", {"cpu.max": "max 100000"}))
    assert host == MachineTotals(cores, 8192, "CPU affinity", "/proc/meminfo MemTotal")
    v2 = read_machine(
        _machine_root(tmp_path / "v2", {"cpu.max": "50000 100000", "memory.max": str(1024 * MIB)})
    )
    assert (v2.cpu_cores, v2.memory_mb) == (min(cores, 0.5), 1024)
    assert v2.memory_source == "this container's memory limit"
    v1 = {
        "cpu/cpu.cfs_quota_us": "25000",
        "cpu/cpu.cfs_period_us": "100000",
        "memory/memory.limit_in_bytes": str(2048 * MIB),
    }
    got = read_machine(_machine_root(tmp_path / "v1", v1))
    assert (got.cpu_cores, got.memory_mb) == (0.25, 2048)
    unlimited_v1 = {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    unlimited_v1["memory/memory.limit_in_bytes"] = "9223372036854771712"
    assert read_machine(_machine_root(tmp_path / "v1-none", unlimited_v1)) == host


# --- placement counts CPU and memory -----------------------------------------------------


def sized_host(cpu_millis: int = 2000, memory_mb: int = 1024) -> Host:
    """Two L40 units and CPU.x1 instances of 0.5 core and 400 MiB: memory runs out first
    (two fit, a third would need 1200 of 1024 MiB)."""
    sizing = Sizing(
        Resources(cpu_millis, memory_mb),
        gpu_units=2,
        cpu_instance_max=4,
        shm_mb=128,
        overrides=[InstanceTypeLimits(name="CPU.x1", cpu_cores=0.5, memory_mb=400)],
    )
    return Host(sim("L40", 2), cpu_instance_max=4, sizing=sizing)


@asynccontextmanager
async def open_sized(tmp_path: Path, **env: str) -> AsyncIterator[SchedulerBench]:
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S="0.05",
        NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S="2",
        **env,
    )
    db = await Database.open(tmp_path / "data" / "db.sqlite")
    bench = SchedulerBench(config, db, sized_host(), FakeRuntime())
    try:
        yield bench
    finally:
        await bench.scheduler.shutdown(keep_instances=False)
        await bench.runtime.close()
        await db.close()


@pytest.fixture
async def sized(tmp_path: Path) -> AsyncIterator[SchedulerBench]:
    async with open_sized(tmp_path) as bench:
        yield bench


async def test_each_container_gets_its_instance_types_limits(sized: SchedulerBench) -> None:
    _, vid = await sized.deploy(gpu="L40", instance_type="L40.GPU.1x", min_instances=1)
    await sized.until(lambda: len(sized.scheduler.ready(vid)) == 1)
    (spec,) = sized.runtime.created
    # a share: 2 cores and 1024 MiB over 2 units; /dev/shm 128 MiB
    assert (spec.nano_cpus, spec.memory_bytes, spec.shm_bytes) == (10**9, 512 * MIB, 128 * MIB)
    assert spec.labels["nvcf-lite.cpu-millis"] == "1000"
    (container,) = sized.runtime.containers.values()
    info = await sized.runtime.inspect(container.id)
    assert info is not None and info.memory_bytes == 512 * MIB


async def test_an_over_allocating_deployment_runs_what_fits_and_the_rest_waits(
    sized: SchedulerBench,
) -> None:
    fid, vid = await sized.deploy(gpu="CPU", min_instances=3, max_instances=3)
    await sized.until(lambda: len(sized.scheduler.ready(vid)) == 2)
    for _ in range(5):  # more passes start nothing more: 3 x 400 MiB > 1024 MiB
        await sized.scheduler.tick()
    assert len(sized.runtime.created) == 2 and len(sized.live(vid)) == 2
    assert sized.scheduler.held_resources() == Resources(1000, 800)
    d = await sized.repo.by_version(vid)
    assert d is not None
    (info,) = d.health_info
    assert info.error == (
        "waiting for capacity: not enough memory; an instance of CPU.x1 needs 0.5 CPU cores "
        "and 400 MiB of memory, and 1 CPU core and 224 MiB of memory of this host's 2 CPU "
        "cores and 1024 MiB of memory are free now; running what fits"
    )
    assert await sized.status(vid) == FunctionStatus.DEPLOYING  # waiting, not failing
    (state,) = sized.scheduler.spec_states(vid)
    assert (state.state, state.target, state.ready) == ("unschedulable", 3, 2)
    # a GPU instance needs a share (1 core, 512 MiB): its memory is not free either
    _, gpu_vid = await sized.deploy(gpu="L40", min_instances=1, max_instances=1)
    await sized.until(lambda: sized.repo.by_version(gpu_vid))
    await sized.scheduler.tick()
    gpu_d = await sized.repo.by_version(gpu_vid)
    assert gpu_d is not None and "not enough memory" in gpu_d.health_info[0].error
    assert sized.live(gpu_vid) == []
    # lowering the ask frees nothing held; undeploying the first lets the GPU one start
    await sized.deployments.undeploy(fid, vid, graceful=False)
    await sized.until(lambda: len(sized.scheduler.ready(gpu_vid)) == 1)
    await sized.until(lambda: not sized.live(vid))
    assert sized.scheduler.held_resources() == Resources(1000, 512)


async def test_capacity_freed_by_a_scale_down_starts_the_waiting_instance(
    sized: SchedulerBench,
) -> None:
    fid, vid = await sized.deploy(gpu="CPU", min_instances=2, max_instances=2)
    await sized.until(lambda: len(sized.scheduler.ready(vid)) == 2)
    _, waiting = await sized.deploy(gpu="CPU", min_instances=1, max_instances=1)
    await sized.until(lambda: sized.repo.by_version(waiting))
    await sized.scheduler.tick()
    assert sized.live(waiting) == []
    await sized.deployments.update(fid, vid, [SpecInput(min_instances=1, max_instances=1)])
    await sized.until(lambda: len(sized.scheduler.ready(waiting)) == 1)
    await sized.until(lambda: len(sized.live(vid)) == 1)
    d = await sized.repo.by_version(waiting)
    assert d is not None and d.health_info == []  # the reason goes once it runs
    assert sized.scheduler.held_resources() == Resources(1000, 800)


async def test_adopted_containers_count_the_limits_they_were_given(
    sized: SchedulerBench,
) -> None:
    _, vid = await sized.deploy(gpu="CPU", min_instances=2, max_instances=2)
    await sized.until(lambda: len(sized.scheduler.ready(vid)) == 2)
    # restarted with a config that would size CPU.x1 smaller: the running ones keep theirs
    await sized.scheduler.shutdown(keep_instances=True)
    sized.host.sizing = sized_host(memory_mb=4096).sizing
    assert sized.host.sizing is not None
    sized.host.sizing.overrides.clear()
    sized.scheduler = sized.new_scheduler()
    await sized.until(lambda: len(sized.scheduler.ready(vid)) == 2)
    assert sized.scheduler.held_resources() == Resources(1000, 800)
    assert len(sized.runtime.created) == 2


async def test_a_paused_warm_pool_instance_gives_its_cpu_and_memory_to_waiting_demand(
    tmp_path: Path,
) -> None:
    async with open_sized(tmp_path, NVCF_LITE_SCHEDULER__WARM_POOL_S="600") as bench:
        fid, vid = await bench.deploy(gpu="CPU", min_instances=2, max_instances=2)
        await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
        await bench.deployments.update(fid, vid, [SpecInput(min_instances=1, max_instances=1)])
        await bench.until(lambda: bench.scheduler.spec_states(vid)[0].paused == 1)
        assert bench.scheduler.held_resources() == Resources(1000, 800)  # paused still holds
        _, other = await bench.deploy(gpu="CPU", min_instances=1, max_instances=1)
        await bench.until(lambda: len(bench.scheduler.ready(other)) == 1)
        assert bench.scheduler.spec_states(vid)[0].paused == 0
        assert bench.scheduler.held_resources() == Resources(1000, 800)


async def test_a_type_that_no_longer_fits_the_host_waits_with_why_and_others_go_on(
    sized: SchedulerBench,
) -> None:
    _, vid = await sized.deploy(gpu="CPU", min_instances=1, max_instances=1)
    await sized.until(lambda: len(sized.scheduler.ready(vid)) == 1)
    # the config changed under a running server's deployment (as after a restart)
    too_big = InstanceTypeLimits(name="CPU.x1", memory_mb=4096)
    assert sized.host.sizing is not None
    sized.host.sizing.overrides["cpu.x1"] = too_big
    (inst,) = sized.scheduler.ready(vid)
    assert inst.container_id is not None
    sized.runtime.crash(inst.container_id)

    async def reason() -> str:
        d = await sized.repo.by_version(vid)
        return d.health_info[0].error if d and d.health_info else ""

    await sized.until(lambda: _has(reason(), "cannot be placed on this host now"))
    assert "needs 0.5 CPU cores and 4096 MiB of memory" in await reason()
    _, gpu_vid = await sized.deploy(gpu="L40", min_instances=1, max_instances=1)
    await sized.until(lambda: len(sized.scheduler.ready(gpu_vid)) == 1)  # ticks go on


async def _has(text: Awaitable[str], part: str) -> bool:
    return part in await text
