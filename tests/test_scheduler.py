"""Scheduler unit tests: fake runtime (real HTTP health probes), real SQLite, tick() driven."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config
from fake_runtime import FakeRuntime

from nvcf_lite.config import Config
from nvcf_lite.domain.deployment_rules import SpecInput
from nvcf_lite.domain.deployments import Deployments, version_ref
from nvcf_lite.domain.placement import GpuUnit, Host
from nvcf_lite.errors import Invalid
from nvcf_lite.models import (
    FunctionStatus,
    FunctionVersion,
    HealthCheck,
    InstanceState,
    new_id,
    now_iso,
)
from nvcf_lite.runtime.base import LABEL_DEPLOYMENT, LABEL_INSTANCE_ID, ContainerSpec
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.sqlite import Database
from nvcf_lite.workers.instances import launch_info
from nvcf_lite.workers.scheduler import Scheduler

NCA = "nvcf-lite-local"


def sim(gpu: str, n: int, start: int = 0, physical: bool = False) -> list[GpuUnit]:
    return [
        GpuUnit(
            unit_id=f"SIM-{gpu}-{i}", gpu=gpu, index=start + i, memory_mb=1024, physical=physical
        )
        for i in range(n)
    ]


class World:
    def __init__(self, config: Config, db: Database, host: Host, runtime: FakeRuntime) -> None:
        self.config, self.db, self.host, self.runtime = config, db, host, runtime
        self.functions = FunctionsRepo(db)
        self.repo = DeploymentsRepo(db)

        async def lookup(fid: str, vid: str) -> Any:
            v = await self.functions.get(fid, vid)
            return version_ref(v) if v else None

        self.deployments = Deployments(db, self.repo, host, lookup, NCA)
        self.scheduler = self.new_scheduler()

    def new_scheduler(self) -> Scheduler:
        async def info(vid: str) -> Any:
            v = await self.functions.get_version(vid)
            return launch_info(v, await self.functions.secrets(vid)) if v else None

        s = Scheduler(self.config, self.repo, self.runtime, self.host, info)
        self.deployments.instances = s.views
        return s

    async def function(
        self, image: str = "fake/echo", secrets: dict[str, Any] | None = None
    ) -> tuple[str, str]:
        fid, vid = new_id(), new_id()
        version = FunctionVersion(
            function_id=fid,
            version_id=vid,
            nca_id=NCA,
            name="fn",
            status=FunctionStatus.INACTIVE,
            inference_url="/echo",
            health_uri="/health",
            health=HealthCheck(
                protocol="HTTP", uri="/health", port=8000, timeout="PT1S", expected_status_code=200
            ),
            created_at=now_iso(),
            container_image=image,
        )
        await self.functions.insert(version, secrets or {})
        return fid, vid

    async def deploy(self, image: str = "fake/echo", **spec: Any) -> tuple[str, str]:
        fid, vid = await self.function(image)
        fields = {"gpu": "L40", "min_instances": 1, "max_instances": 2, **spec}
        await self.deployments.create(fid, vid, [SpecInput(**fields)])
        return fid, vid

    async def status(self, vid: str) -> FunctionStatus:
        v = await self.functions.get_version(vid)
        assert v is not None
        return v.status

    async def until(self, cond: Callable[[], Any], limit_s: float = 5.0) -> None:
        deadline = time.monotonic() + limit_s
        while True:
            await self.scheduler.tick()
            result = cond()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.02)

    def live(self, vid: str) -> list[Any]:
        return [i for i in self.scheduler.views(vid) if i.state != InstanceState.FAILED]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S="0.4",
        NVCF_LITE_SCHEDULER__RESTART_BACKOFF_INITIAL_S="0.05",
        NVCF_LITE_SCHEDULER__RESTART_BACKOFF_MAX_S="0.2",
        NVCF_LITE_SCHEDULER__DEPLOY_ATTEMPTS="2",
        NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S="0.05",
        NVCF_LITE_SCHEDULER__UNHEALTHY_THRESHOLD="2",
        NVCF_LITE_SCHEDULER__SCALE_DOWN_IDLE_S="0.2",
    )
    db = await Database.open(tmp_path / "data" / "db.sqlite")
    host = Host(
        [
            *sim("L40", 2),
            *sim("A100_MIG_1g.5gb", 2, start=10),
            *sim("H100", 1, start=20, physical=True),
        ],
        cpu_instance_max=2,
    )
    w = World(config, db, host, FakeRuntime())
    yield w
    await w.scheduler.shutdown(keep_instances=False)
    await w.runtime.close()
    await db.close()


async def test_places_instances_on_distinct_simulated_gpus(world: World) -> None:
    _, vid = await world.deploy(min_instances=2)
    await world.until(lambda: world.status(vid), limit_s=3)
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 2)
    assert await world.status(vid) == FunctionStatus.ACTIVE
    units = [u for i in world.scheduler.views(vid) for u in i.gpu_uuids]
    assert sorted(units) == ["SIM-L40-0", "SIM-L40-1"]
    specs: list[ContainerSpec] = world.runtime.created
    assert {s.env["NVIDIA_VISIBLE_DEVICES"] for s in specs} == {"SIM-L40-0", "SIM-L40-1"}
    assert all(s.gpu_device_ids is None for s in specs)  # simulated: no DeviceRequest
    assert all(s.env["NVCF_FUNCTION_VERSION_ID"] == vid for s in specs)


async def test_a_deployment_that_does_not_fit_is_reported(world: World) -> None:
    _, first = await world.deploy(min_instances=2)
    await world.until(lambda: len(world.scheduler.ready_instances(first)) == 2)
    _, second = await world.deploy(min_instances=1)
    await world.until(lambda: world.repo.by_version(second))
    await world.scheduler.tick()
    d = await world.repo.by_version(second)
    assert d is not None and "waiting for capacity" in d.health_info[0].error
    assert await world.status(second) == FunctionStatus.DEPLOYING
    assert world.live(second) == []
    # freeing the GPUs lets it start
    await world.deployments.undeploy(*(await _ids(world, first)), graceful=False)
    await world.until(lambda: len(world.scheduler.ready_instances(second)) == 1)


async def _ids(world: World, vid: str) -> tuple[str, str]:
    v = await world.functions.get_version(vid)
    assert v is not None
    return v.function_id, vid


async def test_mig_devices_are_separate_units(world: World) -> None:
    _, vid = await world.deploy(gpu="A100_MIG_1g.5gb", instance_type="A100_MIG_1g.5gb.GPU.2x")
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 1)
    (inst,) = world.scheduler.views(vid)
    assert sorted(inst.gpu_uuids) == ["SIM-A100_MIG_1g.5gb-0", "SIM-A100_MIG_1g.5gb-1"]


async def test_physical_gpus_get_a_device_request(world: World) -> None:
    _, vid = await world.deploy(gpu="H100", max_instances=1)
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 1)
    assert world.runtime.created[-1].gpu_device_ids == ["SIM-H100-0"]


async def test_cpu_instances_request_no_devices(world: World) -> None:
    _, vid = await world.deploy(gpu="CPU", instance_type="CPU.x1", min_instances=2)
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 2)
    assert all(
        s.gpu_device_ids is None and "NVIDIA_VISIBLE_DEVICES" not in s.env
        for s in world.runtime.created
    )


async def test_unknown_gpu_and_instance_type_list_the_offer(world: World) -> None:
    fid, vid = await world.function()
    with pytest.raises(Invalid, match="offers: L40"):
        await world.deployments.create(
            fid, vid, [SpecInput(gpu="B200", min_instances=1, max_instances=1)]
        )
    with pytest.raises(Invalid, match=r"L40\.GPU\.1x, L40\.GPU\.2x"):
        await world.deployments.create(
            fid,
            vid,
            [SpecInput(gpu="L40", instance_type="L40.GPU.4x", min_instances=1, max_instances=1)],
        )


async def test_failing_health_ends_in_error_with_the_reason(world: World) -> None:
    _, vid = await world.deploy("fake/unhealthy")
    await world.until(lambda: _is(world, vid, FunctionStatus.ERROR), limit_s=8)
    d = await world.repo.by_version(vid)
    assert d is not None and "health check timed out" in d.health_info[0].error
    assert "answered 500" in d.health_info[0].error
    # nothing left running; the failed instances' containers are kept (stopped) for their logs
    await world.until(lambda: not world.scheduler.instances)
    kept = list(world.runtime.containers.values())
    assert kept and all(c.state == "exited" for c in kept)
    assert len(kept) <= world.config.docker.failed_containers_kept


async def test_exiting_container_reports_exit_code_and_logs(world: World) -> None:
    _, vid = await world.deploy("fake/exit")
    await world.until(lambda: _is(world, vid, FunctionStatus.ERROR), limit_s=8)
    d = await world.repo.by_version(vid)
    assert d is not None
    assert "exited with code 1" in d.health_info[0].error and "fatal" in d.health_info[0].error


async def test_missing_image_fails_with_the_docker_reason(world: World) -> None:
    _, vid = await world.deploy("fake/missing")
    await world.until(lambda: _is(world, vid, FunctionStatus.ERROR), limit_s=8)
    d = await world.repo.by_version(vid)
    assert d is not None and "could not be pulled" in d.health_info[0].error


async def _is(world: World, vid: str, status: FunctionStatus) -> bool:
    return await world.status(vid) == status


async def test_lost_instance_degrades_and_is_replaced_with_backoff(world: World) -> None:
    _, vid = await world.deploy(min_instances=1, max_instances=1)
    await world.until(lambda: _is(world, vid, FunctionStatus.ACTIVE))
    (inst,) = world.scheduler.views(vid)
    world.runtime.crash(inst.container_id or "")
    await world.until(lambda: _is(world, vid, FunctionStatus.DEGRADED))
    history = world.scheduler.history[inst.gpu_specification_id]
    assert history.failures == 1 and history.next_attempt > 0
    await world.until(lambda: _is(world, vid, FunctionStatus.ACTIVE))
    (new,) = world.scheduler.ready_instances(vid)
    assert new.instance_id != inst.instance_id


async def test_crash_loop_is_reported_and_backs_off(world: World) -> None:
    _, vid = await world.deploy(min_instances=1, max_instances=1)
    await world.until(lambda: _is(world, vid, FunctionStatus.ACTIVE))
    for _ in range(3):
        await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 1)
        (inst,) = world.scheduler.ready_instances(vid)
        world.runtime.crash(inst.container_id or "")
        await world.until(lambda i=inst: i.instance_id not in world.scheduler.instances)
    d = await world.repo.by_version(vid)
    assert d is not None and d.health_info[0].error.startswith("crash-looping: 3 failed starts")
    spec_id = d.specs[0].gpu_specification_id
    assert world.scheduler.history[spec_id].next_attempt - time.monotonic() > 0.05


async def test_strangers_are_reaped(world: World) -> None:
    await world.runtime.create_and_start(
        ContainerSpec(
            name="leftover",
            image="fake/echo",
            labels={LABEL_DEPLOYMENT: new_id(), LABEL_INSTANCE_ID: new_id()},
            ports=[8000],
        )
    )
    await world.until(lambda: not world.runtime.containers)


async def test_restart_adopts_running_instances_without_duplicates(world: World) -> None:
    _, vid = await world.deploy(min_instances=2)
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 2)
    before = {c.id for c in world.runtime.containers.values()}
    created = len(world.runtime.created)
    # a new scheduler (nvcf-lite restarted after SIGKILL) over the same store and engine
    await world.scheduler.shutdown(keep_instances=True)
    world.scheduler = world.new_scheduler()
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 2)
    assert {c.id for c in world.runtime.containers.values()} == before
    assert len(world.runtime.created) == created
    units = sorted(u for i in world.scheduler.views(vid) for u in i.gpu_uuids)
    assert units == ["SIM-L40-0", "SIM-L40-1"]  # GPU accounting rebuilt from labels


async def test_min_zero_is_active_with_no_containers(world: World) -> None:
    _, vid = await world.deploy(min_instances=0, max_instances=2)
    assert await world.status(vid) == FunctionStatus.ACTIVE
    await world.scheduler.tick()
    assert world.runtime.containers == {}


async def test_update_min_removes_extras_and_undeploy_removes_all(world: World) -> None:
    fid, vid = await world.deploy(min_instances=2)
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 2)
    await world.deployments.update(fid, vid, [SpecInput(min_instances=1, max_instances=2)])
    await world.until(lambda: len(world.runtime.containers) == 1)
    assert await world.status(vid) == FunctionStatus.ACTIVE
    await world.deployments.undeploy(fid, vid, graceful=True)
    assert await world.status(vid) == FunctionStatus.INACTIVE
    await world.until(lambda: not world.runtime.containers and not world.scheduler.instances)
    await world.until(lambda: _gone(world, vid))


async def _gone(world: World, vid: str) -> bool:
    return await world.repo.by_version(vid) is None


async def test_secrets_are_mounted_read_only(world: World) -> None:
    fid, vid = await world.function(secrets={"token": "s3cr3t"})
    await world.deployments.create(
        fid, vid, [SpecInput(gpu="CPU", min_instances=1, max_instances=1)]
    )
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 1)
    spec = world.runtime.created[-1]
    (mount,) = [m for m in spec.mounts if m.target == "/var/secrets"]
    assert mount.read_only
    secrets_json = Path(mount.source) / "secrets.json"
    assert await asyncio.to_thread(secrets_json.read_text) == '{"token":"s3cr3t"}'
    modes = await asyncio.to_thread(
        lambda: (
            [p.stat().st_mode & 0o777 for p in (secrets_json.parent.parent, secrets_json)]
            + [secrets_json.parent.stat().st_mode & 0o777]
        )
    )
    assert modes == [0o700, 0o644, 0o755]  # no host user; any container user may read


async def test_secrets_updated_while_an_instance_starts_reach_it(world: World) -> None:
    """An update between reading the launch info and writing secrets.json is not lost."""
    fid, vid = await world.function(secrets={"token": "old"})
    # the store still says "old" (what the launch reads); the update arrives first
    await world.scheduler.life.refresh_secrets(vid, {"token": "new"})
    await world.deployments.create(
        fid, vid, [SpecInput(gpu="CPU", min_instances=1, max_instances=1)]
    )
    await world.until(lambda: len(world.scheduler.ready_instances(vid)) == 1)
    (mount,) = [m for m in world.runtime.created[-1].mounts if m.target == "/var/secrets"]
    secrets_json = Path(mount.source) / "secrets.json"
    assert await asyncio.to_thread(secrets_json.read_text) == '{"token":"new"}'
    await world.scheduler.life.refresh_secrets(vid, {"token": "newer"})  # running: replaced
    assert await asyncio.to_thread(secrets_json.read_text) == '{"token":"newer"}'
    names = await asyncio.to_thread(lambda: [p.name for p in secrets_json.parent.iterdir()])
    assert names == ["secrets.json"]  # no temp file left


async def test_a_pull_counts_against_no_deadline_and_shows_in_views_and_scaling(
    world: World,
) -> None:
    # the fake pull takes ~0.45 s, longer than the 0.4 s startup deadline
    _, vid = await world.deploy(image="fake/pull-model", max_instances=1)
    await world.until(lambda: any(i.image_pull for i in world.scheduler.views(vid)))
    (inst,) = world.scheduler.views(vid)
    assert inst.state == InstanceState.STARTING and inst.image_pull is not None
    assert inst.image_pull.image == "fake/pull-model" and inst.image_pull.layers_total == 2
    assert world.scheduler.held_units() == set(inst.gpu_uuids)
    (scaling,) = world.scheduler.spec_states(vid)
    assert scaling.image_pull is not None and scaling.state == "scaling"
    assert scaling.detail is not None and scaling.detail.startswith("pulling image fake/pull-model")
    await world.until(lambda: world.scheduler.ready_instances(vid))
    (ready,) = world.scheduler.views(vid)
    assert ready.instance_id == inst.instance_id and ready.image_pull is None
    assert world.scheduler.history[scaling.gpu_specification_id].failures == 0
    await world.until(lambda: world.status(vid))
    assert await world.status(vid) == FunctionStatus.ACTIVE
