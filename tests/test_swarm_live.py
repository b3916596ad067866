"""nvcf-lite on a three-node Docker Swarm (tests/swarm_support.py: one manager, two workers with
two simulated GPUs each, in network namespaces this module creates), through the public API:
the nodes' GPUs in clusterGroups, a GPU deployment placed on a worker and invoked, an input
asset read by an instance on a worker, scale to zero, and a worker killed while its instance
serves: the instance comes back on the other worker and the health info names the lost node.

Timings (swarm formation, first instance ACTIVE, failover) print as `SWARM ...` lines. Needs
root and the shared dockerd for the test images (CI runs as root).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import bearer, make_config, wait_for
from invocation_support import FAST, function_body
from litestar.testing import TestClient
from swarm_support import Node, SwarmCluster
from test_assets_docker import upload
from test_gpus import clean_env, nvcf_lite

from nvcf_lite.app import docker_runtime
from nvcf_lite.config import Config
from nvcf_lite.errors import CONNECTION_ERROR

pytestmark = pytest.mark.docker

GPU = "H100"


@pytest.fixture
def cluster(swarm_cluster: SwarmCluster) -> SwarmCluster:
    return swarm_cluster


def swarm_config(cluster: SwarmCluster, tmp_path: Path, ns: str, keep: bool = False) -> Config:
    return make_config(
        tmp_path / "data",
        **{
            **FAST,
            "NVCF_LITE_DOCKER__RUNTIME": "swarm",
            "NVCF_LITE_DOCKER__BASE_URL": cluster.url,
            "NVCF_LITE_DOCKER__NAMESPACE": ns,
            "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "true" if keep else "false",
            "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "2",
            "NVCF_LITE_GPUS__USE_NVML": "false",
            "NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S": "0.5",
            "NVCF_LITE_SCHEDULER__UNHEALTHY_THRESHOLD": "3",
            "NVCF_LITE_SCHEDULER__SCALE_DOWN_IDLE_S": "1",
            "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "60",
            "NVCF_LITE_SWARM__START_TIMEOUT_S": "60",
        },
    )


@pytest.fixture
def api(
    cluster: SwarmCluster, app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str
) -> Iterator[TestClient[Any]]:
    yield app_factory(swarm_config(cluster, tmp_path, ns), runtime_factory=docker_runtime)
    for s in cluster.services(ns):
        cluster.api().remove_service(s["ID"])


SECRET = "s3cr3t-" + os.urandom(6).hex()


def register(api: TestClient[Any]) -> tuple[str, str]:
    body = {
        **function_body(),
        "containerEnvironment": [{"key": "GREETING", "value": "hi"}],
        "secrets": [{"name": "TOKEN", "value": SECRET}],
    }
    r = api.post("/v2/nvcf/functions", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    f = r.json()["function"]
    return f["id"], f["versionId"]


def deploy(api: TestClient[Any], fid: str, vid: str, **spec: Any) -> None:
    body = {
        "deploymentSpecifications": [
            {"gpu": GPU, "instanceType": f"{GPU}.GPU.1x", "minInstances": 1, "maxInstances": 1}
            | spec
        ]
    }
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    r = api.post(path, json=body, headers=bearer())
    assert r.status_code == 200, r.text


def version(api: TestClient[Any], fid: str, vid: str) -> dict[str, Any]:
    r = api.get(f"/v2/nvcf/functions/{fid}/versions/{vid}", headers=bearer())
    return dict(r.json()["function"])


def deployment(api: TestClient[Any], fid: str, vid: str) -> dict[str, Any]:
    r = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    return dict(r.json()["deployment"])


def ready_instances(api: TestClient[Any], fid: str, vid: str) -> list[dict[str, Any]]:
    return [i for i in deployment(api, fid, vid)["instances"] if i["state"] == "ready"]


def running_task(cluster: SwarmCluster, ns: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (service,) = cluster.services(ns)
    tasks = cluster.api().tasks(filters={"service": service["ID"], "desired-state": "running"})
    (task,) = [t for t in tasks if t["Status"]["State"] == "running"]
    return service, task


def node_address(cluster: SwarmCluster, node_id: str) -> str:
    return str(cluster.api().inspect_node(node_id)["Status"]["Addr"])


def echo_on_gpu(api: TestClient[Any], cluster: SwarmCluster) -> tuple[str, str]:
    fid, vid = register(api)
    t0 = time.monotonic()
    deploy(api, fid, vid)
    wait_for(lambda: version(api, fid, vid)["status"] == "ACTIVE", 90, "ACTIVE")
    cluster.timings.setdefault("first instance ACTIVE", time.monotonic() - t0)
    return fid, vid


def test_cluster_groups_list_every_workers_gpus(
    api: TestClient[Any], cluster: SwarmCluster
) -> None:
    (group,) = api.get("/v2/nvcf/clusterGroups", headers=bearer()).json()["clusterGroups"]
    by_node = {c["name"]: c["gpuUuids"] for c in group["clusters"]}
    assert by_node == {w.name: w.gpus for w in cluster.workers}
    (h100,) = [g for g in group["gpus"] if g["name"] == GPU]
    # an instance's GPUs are on one node: two per worker, so no 4x across the two
    assert [t["name"] for t in h100["instanceTypes"]] == ["H100.GPU.1x", "H100.GPU.2x"]


def test_the_gpus_command_lists_every_nodes_gpus(cluster: SwarmCluster, tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, NVCF_LITE_DOCKER__RUNTIME="swarm", NVCF_LITE_DOCKER__BASE_URL=cluster.url
    )
    done = nvcf_lite("gpus", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for node in cluster.nodes:
        assert f"node {node.name}: {len(node.gpus)} GPU(s)" in lines
    for worker in cluster.workers:
        for uuid in worker.gpus:
            assert any(uuid in line and line.endswith(f"on node {worker.name}") for line in lines)
    assert "  H100: H100.GPU.1x, H100.GPU.2x" in lines


def test_a_gpu_instance_runs_on_a_worker_and_answers(
    api: TestClient[Any], cluster: SwarmCluster, ns: str
) -> None:
    fid, vid = echo_on_gpu(api, cluster)
    service, task = running_task(cluster, ns)
    labels = service["Spec"]["Labels"]
    assert labels["nvcf-lite.function-id"] == fid and labels["nvcf-lite.version-id"] == vid
    resources = service["Spec"]["TaskTemplate"]["Resources"]
    assert resources["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}
    ]
    limits, reserved = resources["Limits"], resources["Reservations"]
    assert limits["NanoCPUs"] and limits["MemoryBytes"]  # the instance type's, as on one host
    assert (reserved["NanoCPUs"], reserved["MemoryBytes"]) == (
        limits["NanoCPUs"],
        limits["MemoryBytes"],
    )
    worker = cluster.node_of(node_address(cluster, task["NodeID"]))
    assert worker in cluster.workers
    (inst,) = ready_instances(api, fid, vid)
    assert set(inst["gpuUuids"]) <= set(worker.gpus)
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}", json={"hello": 1, "readSecrets": True}, headers=bearer()
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["body"]["hello"] == 1
    assert seen["secrets"]["TOKEN"] == SECRET  # the mounted file, read on the worker
    assert SECRET not in json.dumps(service)  # never in the service spec
    assert seen["env"]["NVCF_FUNCTION_ID"] == fid
    env = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "GREETING=hi" in env and f"NVIDIA_VISIBLE_DEVICES={inst['gpuUuids'][0]}" in env


def test_four_instances_take_the_four_gpus_of_both_workers_once_each(
    api: TestClient[Any], cluster: SwarmCluster, ns: str
) -> None:
    fid, vid = register(api)
    deploy(api, fid, vid, minInstances=4, maxInstances=4)
    wait_for(lambda: version(api, fid, vid)["status"] == "ACTIVE", 90, "ACTIVE")
    ready = ready_instances(api, fid, vid)
    held = sorted(u for i in ready for u in i["gpuUuids"])
    assert held == sorted(g for w in cluster.workers for g in w.gpus)  # each GPU once
    for inst in ready:  # each on the node that has its GPU
        (worker,) = [w for w in cluster.workers if inst["gpuUuids"][0] in w.gpus]
        assert (inst["node"], inst["hostAddress"]) == (worker.name, worker.address)
    assert len(cluster.services(ns)) == 4


def test_an_instance_on_a_worker_reads_the_exact_asset_bytes(
    api: TestClient[Any], cluster: SwarmCluster
) -> None:
    fid, _ = echo_on_gpu(api, cluster)
    data = os.urandom(512 * 1024)
    asset = upload(api, data)
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}",
        json={"readAssets": True},
        headers={**bearer(), "NVCF-INPUT-ASSET-REFERENCES": asset},
    )
    assert r.status_code == 200, r.text
    got = r.json()["assets"][asset]
    assert got["sha256"] == hashlib.sha256(data).hexdigest() and got["size"] == len(data)


def test_large_results_written_on_a_worker_come_back_as_the_zip(
    api: TestClient[Any], cluster: SwarmCluster
) -> None:
    fid, _ = echo_on_gpu(api, cluster)
    files = {"result.bin": 300_000, "notes.txt": "from the worker"}
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}",
        json={"largeOutputFiles": files},
        headers={**bearer(), "NVCF-POLL-SECONDS": "30"},
        follow_redirects=False,
    )
    assert r.status_code == 302, r.text  # the zip nvcf-lite made of what the worker wrote
    url = urlsplit(r.headers["location"])
    got = api.get(f"{url.path}?{url.query}")  # the signed URL alone
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(got.content))
    assert z.read("result.bin") == (bytes(range(256)) * 1200)[:300_000]
    assert z.read("notes.txt") == b"from the worker"


def test_the_logs_of_an_instance_on_a_worker_come_through_the_manager(
    api: TestClient[Any], cluster: SwarmCluster
) -> None:
    fid, _ = echo_on_gpu(api, cluster)
    marker = f"from-the-worker-{os.urandom(4).hex()}"
    r = api.post(f"/v2/nvcf/pexec/functions/{fid}", json={"log": marker}, headers=bearer())
    assert r.status_code == 200, r.text

    def logged() -> bool:
        got = api.get(f"/v2/nvcf/functions/{fid}/logs?tail=5", headers=bearer())
        assert got.status_code == 200, got.text
        return marker in got.text

    wait_for(logged, 20, "the marker in the function's logs")


def test_a_restarted_server_adopts_its_service_on_the_worker(
    cluster: SwarmCluster, app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str
) -> None:
    config = swarm_config(cluster, tmp_path, ns, keep=True)
    first = app_factory(config, runtime_factory=docker_runtime)
    try:
        fid, vid = echo_on_gpu(first, cluster)
        (service,) = cluster.services(ns)
        (inst,) = ready_instances(first, fid, vid)
        first.__exit__(None, None, None)  # shut down, the service kept
        assert [s["ID"] for s in cluster.services(ns)] == [service["ID"]]
        second = app_factory(config, runtime_factory=docker_runtime)
        wait_for(lambda: ready_instances(second, fid, vid), 60, "the instance adopted")
        (adopted,) = ready_instances(second, fid, vid)
        assert adopted["instanceId"] == inst["instanceId"]
        assert adopted["containerId"] == service["ID"] and adopted["node"] == inst["node"]
        assert adopted["hostAddress"] == inst["hostAddress"] != "127.0.0.1"
        r = second.post(f"/v2/nvcf/pexec/functions/{fid}", json={"x": 1}, headers=bearer())
        assert r.status_code == 200, r.text
    finally:
        for s in cluster.services(ns):
            cluster.api().remove_service(s["ID"])


def test_scale_to_zero_removes_the_service_and_a_request_brings_one_back(
    api: TestClient[Any], cluster: SwarmCluster, ns: str
) -> None:
    fid, vid = register(api)
    deploy(api, fid, vid, minInstances=0, maxInstances=1)
    wait_for(lambda: version(api, fid, vid)["status"] == "ACTIVE", 60, "ACTIVE at zero")
    assert not cluster.services(ns)
    r = api.post(f"/v2/nvcf/pexec/functions/{fid}", json={"n": 1}, headers=bearer())
    while r.status_code == 202:
        rid = r.headers["nvcf-reqid"]
        r = api.get(f"/v2/nvcf/pexec/status/{rid}", headers=bearer())
    assert r.status_code == 200, r.text
    assert r.json()["body"] == {"n": 1}
    wait_for(lambda: not cluster.services(ns), 60, "scaled back to zero")


def test_a_killed_worker_is_replaced_on_the_other_and_named(
    api: TestClient[Any], cluster: SwarmCluster, ns: str
) -> None:
    fid, vid = echo_on_gpu(api, cluster)
    _, task = running_task(cluster, ns)
    lost = cluster.node_of(node_address(cluster, task["NodeID"]))
    (other,) = [w for w in cluster.workers if w is not lost]
    (before,) = ready_instances(api, fid, vid)
    t0 = time.monotonic()
    lost.kill()
    try:
        replaced_elsewhere(api, cluster, fid, vid, before, lost, other, t0)
    finally:
        lost.revive()  # for the tests after this one
        wait_for(lambda: node_ready(cluster, lost), 60, f"{lost.name} back")


def node_ready(cluster: SwarmCluster, node: Node) -> bool:
    found = [n for n in cluster.api().nodes() if n["Status"]["Addr"] == node.address]
    return any(n["Status"]["State"] == "ready" for n in found)


def replaced_elsewhere(
    api: TestClient[Any],
    cluster: SwarmCluster,
    fid: str,
    vid: str,
    before: dict[str, Any],
    lost: Node,
    other: Node,
    t0: float,
) -> None:

    def moved() -> list[dict[str, Any]]:
        return [
            i for i in ready_instances(api, fid, vid) if i["instanceId"] != before["instanceId"]
        ]

    (after,) = wait_for(moved, 90, "a replacement instance ready")
    cluster.timings["failover after a node is killed"] = time.monotonic() - t0
    assert set(after["gpuUuids"]) <= set(other.gpus)
    health = " ".join(h["error"] for h in deployment(api, fid, vid).get("healthInfo", []))
    assert lost.name in health, health
    # DEGRADED (refusing new requests) while no instance was ready; ACTIVE again once the
    # next tick counts the replacement
    wait_for(lambda: version(api, fid, vid)["status"] == "ACTIVE", 30, "ACTIVE again")
    r = api.post(f"/v2/nvcf/pexec/functions/{fid}", json={"after": True}, headers=bearer())
    assert r.status_code == 200, r.text


def test_draining_a_node_moves_its_instance_and_loses_no_queued_request(
    api: TestClient[Any], cluster: SwarmCluster, ns: str
) -> None:
    fid, vid = echo_on_gpu(api, cluster)
    _, task = running_task(cluster, ns)
    drained = cluster.node_of(node_address(cluster, task["NodeID"]))
    (other,) = [w for w in cluster.workers if w is not drained]
    path, wait_1s = f"/v2/nvcf/pexec/functions/{fid}", {**bearer(), "NVCF-POLL-SECONDS": "1"}
    slow = api.post(path, json={"delay": 10}, headers=wait_1s)  # holds the only slot
    assert slow.status_code == 202, slow.text
    queued = {}
    for n in range(4):
        r = api.post(path, json={"n": n}, headers=wait_1s)
        assert r.status_code == 202, r.text  # waiting behind the slow one
        queued[r.headers["nvcf-reqid"]] = n
    set_availability(cluster, drained, "drain")
    try:
        for rid, n in queued.items():
            got = wait_for(lambda rid=rid: finished(api, rid), 90, f"request {n}")
            assert got.status_code == 200, got.text
            assert got.json()["body"] == {"n": n}
        (inst,) = ready_instances(api, fid, vid)
        assert set(inst["gpuUuids"]) <= set(other.gpus)
        health = " ".join(h["error"] for h in deployment(api, fid, vid).get("healthInfo", []))
        assert drained.name in health, health
        # the one in flight when its node was drained: its result, or the connection problem
        end = wait_for(lambda: finished(api, slow.headers["nvcf-reqid"]), 60, "slow one")
        assert end.status_code == 200 or end.json()["type"] == CONNECTION_ERROR, end.text
    finally:
        set_availability(cluster, drained, "active")


def finished(api: TestClient[Any], rid: str) -> Any:
    r = api.get(f"/v2/nvcf/pexec/status/{rid}", headers={**bearer(), "NVCF-POLL-SECONDS": "1"})
    return None if r.status_code == 202 else r


def set_availability(cluster: SwarmCluster, node: Node, availability: str) -> None:
    (found,) = [n for n in cluster.api().nodes() if n["Status"]["Addr"] == node.address]
    spec = {**found["Spec"], "Availability": availability}
    cluster.api().update_node(found["ID"], found["Version"]["Index"], spec)


def test_an_engine_that_is_no_swarm_manager_is_reported_not_fatal(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str
) -> None:
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_DOCKER__RUNTIME="swarm",
        NVCF_LITE_DOCKER__BASE_URL="unix:///var/run/docker.sock",  # the shared engine: no swarm
        NVCF_LITE_DOCKER__NAMESPACE=ns,
        NVCF_LITE_GPUS__USE_NVML="false",
    )
    api = app_factory(config, runtime_factory=docker_runtime)
    health = api.get("/health").json()
    assert health["status"] == "degraded"
    docker = health["docker"]
    assert docker["status"] == "unavailable" and "is no swarm manager" in docker["detail"]
    assert "swarm nodes could not be listed" in health["gpus"]["detail"]
    fid, vid = register(api)
    r = api.post(
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        json={"deploymentSpecifications": [{"gpu": GPU, "minInstances": 1, "maxInstances": 1}]},
        headers=bearer(),
    )
    assert r.status_code == 400 and "swarm nodes could not be listed" in r.json()["detail"]
