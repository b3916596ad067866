"""Scheduler unit tests: fake runtime (real HTTP health probes), real SQLite, tick() driven."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from scheduler_support import SchedulerBench

from nvcf_lite.domain.deployment_rules import SpecInput
from nvcf_lite.errors import Invalid
from nvcf_lite.models import FunctionStatus, InstanceState, new_id
from nvcf_lite.runtime.base import LABEL_DEPLOYMENT, LABEL_INSTANCE_ID, ContainerSpec


async def test_places_instances_on_distinct_simulated_gpus(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(min_instances=2)
    await bench.until(lambda: bench.status(vid), limit_s=3)
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    assert await bench.status(vid) == FunctionStatus.ACTIVE
    units = [u for i in bench.scheduler.views(vid) for u in i.gpu_uuids]
    assert sorted(units) == ["SIM-L40-0", "SIM-L40-1"]
    specs: list[ContainerSpec] = bench.runtime.created
    assert {s.env["NVIDIA_VISIBLE_DEVICES"] for s in specs} == {"SIM-L40-0", "SIM-L40-1"}
    assert all(s.gpu_device_ids is None for s in specs)  # simulated: no DeviceRequest
    assert all(s.env["NVCF_FUNCTION_VERSION_ID"] == vid for s in specs)


async def test_a_deployment_that_does_not_fit_is_reported(bench: SchedulerBench) -> None:
    _, first = await bench.deploy(min_instances=2)
    await bench.until(lambda: len(bench.scheduler.ready(first)) == 2)
    _, second = await bench.deploy(min_instances=1)
    await bench.until(lambda: bench.repo.by_version(second))
    await bench.scheduler.tick()
    d = await bench.repo.by_version(second)
    assert d is not None and "waiting for capacity" in d.health_info[0].error
    assert await bench.status(second) == FunctionStatus.DEPLOYING
    assert bench.live(second) == []
    # freeing the GPUs lets it start
    await bench.deployments.undeploy(*(await _ids(bench, first)), graceful=False)
    await bench.until(lambda: len(bench.scheduler.ready(second)) == 1)


async def _ids(bench: SchedulerBench, vid: str) -> tuple[str, str]:
    v = await bench.functions.get_version(vid)
    assert v is not None
    return v.function_id, vid


async def test_mig_devices_are_separate_units(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="A100_MIG_1g.5gb", instance_type="A100_MIG_1g.5gb.GPU.2x")
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    (inst,) = bench.scheduler.views(vid)
    assert sorted(inst.gpu_uuids) == ["SIM-A100_MIG_1g.5gb-0", "SIM-A100_MIG_1g.5gb-1"]


async def test_physical_gpus_get_a_device_request(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="H100", max_instances=1)
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    assert bench.runtime.created[-1].gpu_device_ids == ["SIM-H100-0"]


async def test_cpu_instances_request_no_devices(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(gpu="CPU", instance_type="CPU.x1", min_instances=2)
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    assert all(
        s.gpu_device_ids is None and "NVIDIA_VISIBLE_DEVICES" not in s.env
        for s in bench.runtime.created
    )


async def test_unknown_gpu_and_instance_type_list_the_offer(bench: SchedulerBench) -> None:
    fid, vid = await bench.function()
    with pytest.raises(Invalid, match="offers: L40"):
        await bench.deployments.create(
            fid, vid, [SpecInput(gpu="B200", min_instances=1, max_instances=1)]
        )
    with pytest.raises(Invalid, match=r"L40\.GPU\.1x, L40\.GPU\.2x"):
        await bench.deployments.create(
            fid,
            vid,
            [SpecInput(gpu="L40", instance_type="L40.GPU.4x", min_instances=1, max_instances=1)],
        )


async def test_failing_health_ends_in_error_with_the_reason(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy("fake/unhealthy")
    await bench.until(lambda: _is(bench, vid, FunctionStatus.ERROR), limit_s=8)
    d = await bench.repo.by_version(vid)
    assert d is not None and "health check timed out" in d.health_info[0].error
    assert "answered 500" in d.health_info[0].error
    # nothing left running; the failed instances' containers are kept (stopped) for their logs
    await bench.until(lambda: not bench.scheduler.instances)
    kept = list(bench.runtime.containers.values())
    assert kept and all(c.state == "exited" for c in kept)
    assert len(kept) <= bench.config.docker.failed_containers_kept


async def test_exiting_container_reports_exit_code_and_logs(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy("fake/exit")
    await bench.until(lambda: _is(bench, vid, FunctionStatus.ERROR), limit_s=8)
    d = await bench.repo.by_version(vid)
    assert d is not None
    assert "exited with code 1" in d.health_info[0].error and "fatal" in d.health_info[0].error


async def test_missing_image_fails_with_the_docker_reason(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy("fake/missing")
    await bench.until(lambda: _is(bench, vid, FunctionStatus.ERROR), limit_s=8)
    d = await bench.repo.by_version(vid)
    assert d is not None and "could not be pulled" in d.health_info[0].error


async def _is(bench: SchedulerBench, vid: str, status: FunctionStatus) -> bool:
    return await bench.status(vid) == status


async def test_lost_instance_degrades_and_is_replaced_with_backoff(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(min_instances=1, max_instances=1)
    await bench.until(lambda: _is(bench, vid, FunctionStatus.ACTIVE))
    (inst,) = bench.scheduler.views(vid)
    bench.runtime.crash(inst.container_id or "")
    await bench.until(lambda: _is(bench, vid, FunctionStatus.DEGRADED))
    history = bench.scheduler.history[inst.gpu_specification_id]
    assert history.failures == 1 and history.next_attempt > 0
    await bench.until(lambda: _is(bench, vid, FunctionStatus.ACTIVE))
    (new,) = bench.scheduler.ready(vid)
    assert new.instance_id != inst.instance_id


async def test_requests_waiting_for_a_crashed_instance_wait_for_its_replacement(
    bench: SchedulerBench,
) -> None:
    _, vid = await bench.deploy(min_instances=1, max_instances=1)
    await bench.until(lambda: _is(bench, vid, FunctionStatus.ACTIVE))
    queued_at = time.monotonic()  # a request waiting when the serving instance dies
    (inst,) = bench.scheduler.ready(vid)
    bench.runtime.crash(inst.container_id or "")
    await bench.until(lambda: inst.instance_id not in bench.scheduler.instances)
    # it was ready once: no failed start, so nothing is refused (a dockerd restart, a crash)
    assert bench.scheduler.start_failure(vid) is None
    assert bench.scheduler.refusal(vid, queued_at) is None
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    assert bench.scheduler.refusal(vid, queued_at) is None


async def test_crash_loop_is_reported_and_backs_off(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(min_instances=1, max_instances=1)
    await bench.until(lambda: _is(bench, vid, FunctionStatus.ACTIVE))
    for _ in range(3):
        await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
        (inst,) = bench.scheduler.ready(vid)
        bench.runtime.crash(inst.container_id or "")
        await bench.until(lambda i=inst: i.instance_id not in bench.scheduler.instances)
    d = await bench.repo.by_version(vid)
    assert d is not None and d.health_info[0].error.startswith("crash-looping: 3 failed starts")
    spec_id = d.specs[0].gpu_specification_id
    assert bench.scheduler.history[spec_id].next_attempt - time.monotonic() > 0.05


async def test_strangers_are_reaped(bench: SchedulerBench) -> None:
    await bench.runtime.create_and_start(
        ContainerSpec(
            name="leftover",
            image="fake/echo",
            labels={LABEL_DEPLOYMENT: new_id(), LABEL_INSTANCE_ID: new_id()},
            ports=[8000],
        )
    )
    await bench.until(lambda: not bench.runtime.containers)


async def test_restart_adopts_running_instances_without_duplicates(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(min_instances=2)
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    before = {c.id for c in bench.runtime.containers.values()}
    created = len(bench.runtime.created)
    # a new scheduler (nvcf-lite restarted after SIGKILL) over the same store and engine
    await bench.scheduler.shutdown(keep_instances=True)
    bench.scheduler = bench.new_scheduler()
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    assert {c.id for c in bench.runtime.containers.values()} == before
    assert len(bench.runtime.created) == created
    units = sorted(u for i in bench.scheduler.views(vid) for u in i.gpu_uuids)
    assert units == ["SIM-L40-0", "SIM-L40-1"]  # GPU accounting rebuilt from labels


async def test_min_zero_is_active_with_no_containers(bench: SchedulerBench) -> None:
    _, vid = await bench.deploy(min_instances=0, max_instances=2)
    assert await bench.status(vid) == FunctionStatus.ACTIVE
    await bench.scheduler.tick()
    assert bench.runtime.containers == {}


async def test_update_min_removes_extras_and_undeploy_removes_all(bench: SchedulerBench) -> None:
    fid, vid = await bench.deploy(min_instances=2)
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 2)
    await bench.deployments.update(fid, vid, [SpecInput(min_instances=1, max_instances=2)])
    await bench.until(lambda: len(bench.runtime.containers) == 1)
    assert await bench.status(vid) == FunctionStatus.ACTIVE
    await bench.deployments.undeploy(fid, vid, graceful=True)
    assert await bench.status(vid) == FunctionStatus.INACTIVE
    await bench.until(lambda: not bench.runtime.containers and not bench.scheduler.instances)
    await bench.until(lambda: _gone(bench, vid))


async def _gone(bench: SchedulerBench, vid: str) -> bool:
    return await bench.repo.by_version(vid) is None


async def test_secrets_are_mounted_read_only(bench: SchedulerBench) -> None:
    fid, vid = await bench.function(secrets={"token": "s3cr3t"})
    await bench.deployments.create(
        fid, vid, [SpecInput(gpu="CPU", min_instances=1, max_instances=1)]
    )
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    spec = bench.runtime.created[-1]
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
    # written beside data_dir's bytes, never among them (docker.secrets_dir: a tmpfs by default)
    assert secrets_json.parent.parent == bench.config.secrets_path
    assert bench.config.data_path not in secrets_json.parents


async def test_secrets_updated_while_an_instance_starts_reach_it(bench: SchedulerBench) -> None:
    """An update between reading the launch info and writing secrets.json is not lost."""
    fid, vid = await bench.function(secrets={"token": "old"})
    # the store still says "old" (what the launch reads); the update arrives first
    await bench.scheduler.life.refresh_secrets(vid, {"token": "new"})
    await bench.deployments.create(
        fid, vid, [SpecInput(gpu="CPU", min_instances=1, max_instances=1)]
    )
    await bench.until(lambda: len(bench.scheduler.ready(vid)) == 1)
    (mount,) = [m for m in bench.runtime.created[-1].mounts if m.target == "/var/secrets"]
    secrets_json = Path(mount.source) / "secrets.json"
    assert await asyncio.to_thread(secrets_json.read_text) == '{"token":"new"}'
    await bench.scheduler.life.refresh_secrets(vid, {"token": "newer"})  # running: replaced
    assert await asyncio.to_thread(secrets_json.read_text) == '{"token":"newer"}'
    names = await asyncio.to_thread(lambda: [p.name for p in secrets_json.parent.iterdir()])
    assert names == ["secrets.json"]  # no temp file left


async def test_a_pull_counts_against_no_deadline_and_shows_in_views_and_scaling(
    bench: SchedulerBench,
) -> None:
    # the fake pull takes ~0.45 s, longer than the 0.4 s startup deadline
    _, vid = await bench.deploy(image="fake/pull-model", max_instances=1)
    await bench.until(lambda: any(i.image_pull for i in bench.scheduler.views(vid)))
    (inst,) = bench.scheduler.views(vid)
    assert inst.state == InstanceState.STARTING and inst.image_pull is not None
    assert inst.image_pull.image == "fake/pull-model" and inst.image_pull.layers_total == 2
    assert bench.scheduler.held_units() == set(inst.gpu_uuids)
    (scaling,) = bench.scheduler.spec_states(vid)
    assert scaling.image_pull is not None and scaling.state == "scaling"
    assert scaling.detail is not None and scaling.detail.startswith("pulling image fake/pull-model")
    await bench.until(lambda: bench.scheduler.ready(vid))
    (ready,) = bench.scheduler.views(vid)
    assert ready.instance_id == inst.instance_id and ready.image_pull is None
    assert bench.scheduler.history[scaling.gpu_specification_id].failures == 0
    await bench.until(lambda: bench.status(vid))
    assert await bench.status(vid) == FunctionStatus.ACTIVE


async def test_a_version_deployed_since_the_last_tick_is_not_refused_as_undeployed(
    bench: SchedulerBench,
) -> None:
    """min 0 is ACTIVE at once: a request may come before the nudged tick reads the
    deployment; it waits for that tick instead of a 404 "undeployed before it ran"."""
    await bench.scheduler.tick()
    _, vid = await bench.deploy(min_instances=0, max_instances=1)
    assert await bench.status(vid) == FunctionStatus.ACTIVE
    bench.scheduler.deployments_changed()  # what a deploy calls (platform wiring)
    assert bench.scheduler.refusal(vid, time.monotonic()) is None
    await bench.scheduler.tick()
    assert vid in bench.scheduler.deployed
    assert bench.scheduler.refusal(vid, time.monotonic()) is None
    gone = new_id()  # never deployed, and no deploy asked for a tick since the last one
    refused = bench.scheduler.refusal(gone, time.monotonic())
    assert refused is not None and refused.status == 404
