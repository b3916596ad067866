"""Instance types enforced on the real Docker engine, through the public HTTP API: a deployed
container's limits read back from `docker inspect` and from inside it (its cgroup files and
/dev/shm) equal its instance type's, and a deployment asking for more than fits runs what fits
while the rest waits, with the reason, until capacity frees.

`pytest -s tests/test_instance_limits_docker.py` prints the read-back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import bearer, make_config, wait_for
from docker_support import ECHO_IMAGE, namespace_containers
from invocation_support import function_body
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime
from nvcf_lite.domain.status import STATUS_PATH

pytestmark = pytest.mark.docker

MIB = 1024 * 1024
# The host as the test sets it (whatever this machine has): 2 cores and 1024 MiB for all
# instances; CPU.x1 gets 0.5 core, 400 MiB and a 128 MiB /dev/shm, so two fit, not three.
CPU_X1 = {"name": "CPU.x1", "cpu_cores": 0.5, "memory_mb": 400, "shm_size_mb": 128}
# Run inside the container: its cgroup files (v2 or v1) and the size of its /dev/shm.
READ_BACK = """
import json, os
files = ["cpu.max", "memory.max", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us",
         "memory/memory.limit_in_bytes"]
out = {}
for name in files:
    path = "/sys/fs/cgroup/" + name
    if os.path.exists(path):
        out[path] = open(path).read().strip()
shm = os.statvfs("/dev/shm")
out["/dev/shm"] = shm.f_blocks * shm.f_frsize
print(json.dumps(out))
"""


@pytest.fixture
def api(app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str) -> TestClient[Any]:
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_DOCKER__NAMESPACE=ns,
        NVCF_LITE_DOCKER__STOP_TIMEOUT_S="1",
        NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN="false",
        NVCF_LITE_SCHEDULER__TICK_INTERVAL_S="0.3",
        NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S="0.3",
        NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S="20",
        NVCF_LITE_RESOURCES__CPU_CORES="2",
        NVCF_LITE_RESOURCES__MEMORY_MB="1024",
        NVCF_LITE_RESOURCES__INSTANCE_TYPES=json.dumps([CPU_X1]),
    )
    return app_factory(config, runtime_factory=docker_runtime)


def deploy(api: TestClient[Any], instances: int) -> tuple[str, str]:
    r = api.post("/v2/nvcf/functions", json=function_body(image=ECHO_IMAGE), headers=bearer())
    assert r.status_code == 200, r.text
    fn = r.json()["function"]
    spec = {"gpu": "CPU", "instanceType": "CPU.x1", "minInstances": instances}
    body = {"deploymentSpecifications": [{**spec, "maxInstances": instances}]}
    path = f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    r = api.post(path, json=body, headers=bearer())
    assert r.status_code == 200, r.text
    return fn["id"], fn["versionId"]


def running(dock: docker.DockerClient, ns: str, vid: str) -> list[Any]:
    return [
        c
        for c in namespace_containers(dock, ns)
        if c.status == "running" and c.labels.get("nvcf-lite.version-id") == vid
    ]


def deployment(api: TestClient[Any], fid: str, vid: str) -> dict[str, Any]:
    r = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.status_code == 200, r.text
    return dict(r.json()["deployment"])


def test_limits_read_back_from_docker_inspect_and_inside_the_container(
    api: TestClient[Any], dock: docker.DockerClient, ns: str
) -> None:
    groups = api.get("/v2/nvcf/clusterGroups", headers=bearer()).json()["clusterGroups"]
    (cpu,) = [t for g in groups[0]["gpus"] if g["name"] == "CPU" for t in g["instanceTypes"]]
    assert (cpu["cpuCores"], cpu["memoryMb"], cpu["shmSizeMb"]) == (0.5, 400, 128)
    _, vid = deploy(api, 1)
    (container,) = wait_for(lambda: running(dock, ns, vid), what="a running container")
    host = container.attrs["HostConfig"]
    seen = {k: host.get(k) for k in ("NanoCpus", "CpuQuota", "CpuPeriod", "CpusetCpus")}
    seen.update({k: host.get(k) for k in ("Memory", "MemorySwap", "ShmSize")})
    inside_run = container.exec_run(["python3", "-c", READ_BACK])
    assert inside_run.exit_code == 0, inside_run.output
    inside = json.loads(inside_run.output)
    print(f"\nlimit read-back of {container.name} ({cpu['name']}: {cpu['description']})")
    print("docker inspect HostConfig:", json.dumps(seen))
    print("inside the container:", json.dumps(inside))

    assert seen["NanoCpus"] == 500_000_000
    assert seen["Memory"] == seen["MemorySwap"] == 400 * MIB  # no swap beyond the limit
    assert seen["ShmSize"] == 128 * MIB
    if "/sys/fs/cgroup/cpu.max" in inside:  # cgroup v2
        assert inside["/sys/fs/cgroup/cpu.max"] == "50000 100000"
        assert inside["/sys/fs/cgroup/memory.max"] == str(400 * MIB)
    else:  # cgroup v1 (this project's CI machines)
        quota = int(inside["/sys/fs/cgroup/cpu/cpu.cfs_quota_us"])
        assert quota / int(inside["/sys/fs/cgroup/cpu/cpu.cfs_period_us"]) == 0.5
        assert inside["/sys/fs/cgroup/memory/memory.limit_in_bytes"] == str(400 * MIB)
    assert inside["/dev/shm"] == 128 * MIB


def test_an_over_allocating_deployment_waits_for_capacity_instead_of_overcommitting(
    api: TestClient[Any], dock: docker.DockerClient, ns: str
) -> None:
    first_fid, first = deploy(api, 1)
    wait_for(lambda: running(dock, ns, first), what="the first instance")
    fid, vid = deploy(api, 3)  # 4 x 400 MiB asked for, 1024 MiB there: one more fits

    def reason() -> str:
        info = deployment(api, fid, vid).get("healthInfo") or [{}]
        return str(info[0].get("error", ""))

    wait_for(lambda: "not enough memory" in reason(), what="the capacity reason")
    assert reason().startswith("waiting for capacity: not enough memory; an instance of CPU.x1")
    assert "needs 0.5 CPU cores and 400 MiB of memory" in reason()
    time.sleep(1.5)  # several scheduler passes: still nothing beyond what fits
    assert len(running(dock, ns, vid)) == 1 and len(running(dock, ns, first)) == 1
    assert deployment(api, fid, vid)["functionStatus"] == "DEPLOYING"
    overview = api.get(STATUS_PATH, headers=bearer()).json()  # as `nvcf-lite status` shows it
    (version,) = [v for f in overview["functions"] for v in f["versions"] if v["versionId"] == vid]
    assert "not enough memory" in str(version)
    # the first deployment goes: its 400 MiB let a second instance start, never a third
    r = api.delete(f"/v2/nvcf/deployments/functions/{first_fid}/versions/{first}", headers=bearer())
    assert r.status_code == 200, r.text
    wait_for(lambda: len(running(dock, ns, vid)) == 2, what="a second instance")
    time.sleep(1.0)
    assert len(running(dock, ns, vid)) == 2
    assert "waiting for capacity" in reason()
    memory = [c.attrs["HostConfig"]["Memory"] for c in running(dock, ns, vid)]
    assert memory == [400 * MIB, 400 * MIB]
