"""Deployments on real NVIDIA GPUs (marker `gpu`; skipped unless NVML reports GPUs).

Needs the NVIDIA driver, Docker and the NVIDIA container toolkit; `scripts/gpu-check.sh` runs
these and an end-to-end check with `nvidia-smi` inside the container.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import bearer, make_config
from docker_support import (
    ECHO_IMAGE,
    docker_client_or_skip,
    ensure_test_images,
    remove_namespace,
)
from invocation_support import function_body
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime
from nvcf_lite.domain.placement import CPU
from nvcf_lite.runtime.nvml import read_inventory

pytestmark = [pytest.mark.gpu, pytest.mark.docker]


@pytest.fixture(scope="module")
def inventory() -> Any:
    found = read_inventory()
    if not found.gpus:
        pytest.skip(f"no NVIDIA GPU: {found.error or 'NVML lists none'}")
    return found


@pytest.fixture
def dock(inventory: Any) -> Iterator[docker.DockerClient]:
    client = docker_client_or_skip()
    ensure_test_images()
    yield client


@pytest.fixture
def ns(dock: docker.DockerClient) -> Iterator[str]:
    namespace = f"test-gpu-{uuid.uuid4().hex[:10]}"
    yield namespace
    remove_namespace(dock, namespace)


@pytest.fixture
def api(app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str) -> TestClient[Any]:
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_DOCKER__NAMESPACE=ns,
        NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN="false",
        NVCF_LITE_DOCKER__STOP_TIMEOUT_S="2",
        NVCF_LITE_SCHEDULER__TICK_INTERVAL_S="0.3",
        NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S="120",
    )
    return app_factory(config, runtime_factory=docker_runtime)


def offered(api: TestClient[Any]) -> dict[str, list[str]]:
    """GPU name -> instance type names, from G1 (real GPUs only)."""
    r = api.get("/v2/nvcf/clusterGroups", headers=bearer())
    assert r.status_code == 200, r.text
    gpus = r.json()["clusterGroups"][0]["gpus"]
    return {g["name"]: [t["name"] for t in g["instanceTypes"]] for g in gpus if g["name"] != CPU}


def register(api: TestClient[Any]) -> tuple[str, str]:
    r = api.post("/v2/nvcf/functions", json=function_body("gpu-echo"), headers=bearer())
    assert r.status_code == 200, r.text
    fn = r.json()["function"]
    return fn["id"], fn["versionId"]


def deploy(api: TestClient[Any], gpu: str, instance_type: str, count: int) -> tuple[str, str]:
    fid, vid = register(api)
    spec = {"gpu": gpu, "instanceType": instance_type, "minInstances": count}
    r = api.post(
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        json={"deploymentSpecifications": [{**spec, "maxInstances": max(count, 1)}]},
        headers=bearer(),
    )
    assert r.status_code == 200, r.text
    return fid, vid


def deployment(api: TestClient[Any], fid: str, vid: str) -> dict[str, Any]:
    r = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.status_code == 200, r.text
    d: dict[str, Any] = r.json()["deployment"]
    return d


def wait_ready(api: TestClient[Any], fid: str, vid: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 180
    while True:
        d = deployment(api, fid, vid)
        ready = [i for i in d["instances"] if i["state"] == "ready"]
        if d["functionStatus"] == "ACTIVE" and len(ready) == count:
            return ready
        assert d["functionStatus"] != "ERROR", d
        assert time.monotonic() < deadline, f"not ACTIVE with {count} ready instances: {d}"
        time.sleep(0.3)


def device_ids(dock: docker.DockerClient, container_id: str) -> list[list[str]]:
    host_config = dock.api.inspect_container(container_id)["HostConfig"]
    requests = host_config.get("DeviceRequests") or []
    assert all(r["Driver"] == "nvidia" and r["Capabilities"] == [["gpu"]] for r in requests)
    return [list(r["DeviceIDs"] or []) for r in requests]


def test_one_instance_gets_exactly_its_placed_gpu(
    api: TestClient[Any], dock: docker.DockerClient, inventory: Any
) -> None:
    gpus = offered(api)
    assert gpus, "NVML lists GPUs but G1 offers none"
    gpu = next(iter(gpus))
    assert gpus[gpu][0] == f"{gpu}.GPU.1x"
    fid, vid = deploy(api, gpu, f"{gpu}.GPU.1x", 1)
    (inst,) = wait_ready(api, fid, vid, 1)
    assert len(inst["gpuUuids"]) == 1
    known = {g.uuid for g in inventory.gpus} | {
        m.uuid for g in inventory.gpus for m in g.mig_devices
    }
    assert inst["gpuUuids"][0] in known
    assert device_ids(dock, inst["containerId"]) == [inst["gpuUuids"]]
    env = dict(
        e.split("=", 1) for e in dock.api.inspect_container(inst["containerId"])["Config"]["Env"]
    )
    assert env["NVIDIA_VISIBLE_DEVICES"] == inst["gpuUuids"][0]
    assert env["NVCF_INSTANCETYPE"] == f"{gpu}.GPU.1x"


def test_every_unit_goes_to_one_instance_and_then_capacity_waits(
    api: TestClient[Any], dock: docker.DockerClient
) -> None:
    gpus = offered(api)
    gpu = next(iter(gpus))
    units = len(gpus[gpu])
    fid, vid = deploy(api, gpu, f"{gpu}.GPU.1x", units)
    ready = wait_ready(api, fid, vid, units)
    placed = [i["gpuUuids"] for i in ready]
    assert sorted(u for p in placed for u in p) == sorted({u for p in placed for u in p})
    for inst in ready:
        assert device_ids(dock, inst["containerId"]) == [inst["gpuUuids"]]

    fid2, vid2 = deploy(api, gpu, f"{gpu}.GPU.1x", 1)
    deadline = time.monotonic() + 30
    while "waiting for capacity" not in str(deployment(api, fid2, vid2).get("healthInfo")):
        assert time.monotonic() < deadline, deployment(api, fid2, vid2)
        time.sleep(0.3)
    assert deployment(api, fid2, vid2)["functionStatus"] == "DEPLOYING"

    r = api.delete(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.status_code == 200
    wait_ready(api, fid2, vid2, 1)  # the freed unit goes to the waiting deployment


async def test_a_gpu_the_toolkit_does_not_know_is_refused_in_words(
    dock: docker.DockerClient, ns: str
) -> None:
    """What a user reads when NVML and the toolkit disagree (a GPU gone since the start)."""
    from nvcf_lite.runtime.base import LABEL_MANAGED, ContainerSpec, RuntimeFailure
    from nvcf_lite.runtime.docker import DockerRuntime

    runtime = DockerRuntime.connect(None, pull_timeout_s=30)
    spec = ContainerSpec(
        name=f"nvcf-lite-{ns}-unknown-gpu",
        image=ECHO_IMAGE,
        labels={LABEL_MANAGED: "true", "nvcf-lite.namespace": ns},
        ports=[8000],
        gpu_device_ids=["GPU-00000000-0000-0000-0000-00000000dead"],
    )
    try:
        with pytest.raises(RuntimeFailure) as caught:
            await runtime.create_and_start(spec)
    finally:
        await runtime.close()
    text = str(caught.value)
    assert text.startswith("the NVIDIA container toolkit refused: nvidia-container-cli:"), text
    assert "GPU-00000000-0000-0000-0000-00000000dead" in text
    assert dock.containers.list(all=True, filters={"name": spec.name}) == []
