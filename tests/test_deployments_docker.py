"""Deployments on the real Docker engine, through the public HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import bearer, make_config, wait_for
from docker_support import (
    CRASH_IMAGE,
    ECHO_IMAGE,
    EXIT_IMAGE,
    UNHEALTHY_IMAGE,
    namespace_containers,
    wait_http,
)
from invocation_support import function_body
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime

pytestmark = pytest.mark.docker


def _config(tmp_path: Path, namespace: str, **env: str) -> Any:
    settings = {
        "NVCF_LITE_DOCKER__NAMESPACE": namespace,
        "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "2",
        "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "false",
        "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.3",
        "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "15",
        "NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S": "0.3",
        "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_INITIAL_S": "0.3",
        "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_MAX_S": "2",
        "NVCF_LITE_SCHEDULER__DEPLOY_ATTEMPTS": "2",
        **env,
    }
    return make_config(tmp_path / "data", **settings)


@pytest.fixture
def api(app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str) -> TestClient[Any]:
    return app_factory(_config(tmp_path, ns), runtime_factory=docker_runtime)


def containers(dock: docker.DockerClient, ns: str, running_only: bool = True) -> list[Any]:
    found = namespace_containers(dock, ns)
    return [c for c in found if c.status == "running" or not running_only]


def register(api: TestClient[Any], image: str = ECHO_IMAGE, **extra: Any) -> tuple[str, str]:
    body = {
        **function_body(image=image),
        "containerEnvironment": [{"key": "GREETING", "value": "hello"}],
        **extra,
    }
    r = api.post("/v2/nvcf/functions", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    f = r.json()["function"]
    return f["id"], f["versionId"]


def deploy(api: TestClient[Any], fid: str, vid: str, **spec: Any) -> dict[str, Any]:
    body = {
        "deploymentSpecifications": [{"gpu": "CPU", "minInstances": 1, "maxInstances": 2, **spec}]
    }
    r = api.post(
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", json=body, headers=bearer()
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["deployment"])


def status(api: TestClient[Any], fid: str, vid: str) -> str:
    r = api.get(f"/v2/nvcf/functions/{fid}/versions/{vid}", headers=bearer())
    return str(r.json()["function"]["status"])


def test_deploy_scale_and_undeploy_echo(
    api: TestClient[Any], dock: docker.DockerClient, ns: str
) -> None:
    fid, vid = register(api)
    d = deploy(api, fid, vid, minInstances=2, maxInstances=2)
    assert d["functionStatus"] == "DEPLOYING"
    wait_for(lambda: status(api, fid, vid) == "ACTIVE", what="ACTIVE")
    running = containers(dock, ns)
    assert len(running) == 2
    for c in running:
        labels = c.labels
        assert labels["nvcf-lite.function-id"] == fid and labels["nvcf-lite.version-id"] == vid
        assert labels["nvcf-lite.deployment"] == d["deploymentId"]
        env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
        assert env["NVCF_FUNCTION_ID"] == fid and env["NVCF_FUNCTION_VERSION_ID"] == vid
        assert env["NVCF_FUNCTION_NAME"] == "echo" and env["GREETING"] == "hello"
        assert env["NVCF_INSTANCETYPE"] == "CPU.x1" and env["NVCF_NCA_ID"]
        (binding,) = c.attrs["NetworkSettings"]["Ports"]["8000/tcp"]
        assert binding["HostIp"] == "127.0.0.1"
        wait_http(f"http://127.0.0.1:{binding['HostPort']}/health", 5)
        assert not c.attrs["HostConfig"].get("DeviceRequests")
    got = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer()).json()
    assert {i["state"] for i in got["deployment"]["instances"]} == {"ready"}
    details = api.get(f"/v2/nvcf/functions/{fid}/versions/{vid}", headers=bearer()).json()
    assert len(details["function"].get("activeInstances", [])) == 2

    spec_id = d["deploymentSpecifications"][0]["gpuSpecificationId"]
    r = api.put(
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        json={
            "deploymentSpecifications": [
                {"gpuSpecificationId": spec_id, "gpu": "CPU", "minInstances": 1, "maxInstances": 1}
            ]
        },
        headers=bearer(),
    )
    assert r.status_code == 200, r.text
    wait_for(lambda: len(containers(dock, ns, running_only=False)) == 1, what="one container")
    assert status(api, fid, vid) == "ACTIVE"

    r = api.delete(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.status_code == 200 and r.json()["function"]["status"] == "INACTIVE"
    wait_for(lambda: not containers(dock, ns, running_only=False), what="no containers")
    r = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.status_code == 404


def test_failing_health_ends_in_error_with_a_reason(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, dock: docker.DockerClient, ns: str
) -> None:
    api = app_factory(
        _config(tmp_path, ns, NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S="1.5"),
        runtime_factory=docker_runtime,
    )
    fid, vid = register(api, UNHEALTHY_IMAGE)
    deploy(api, fid, vid)
    wait_for(lambda: status(api, fid, vid) == "ERROR", what="ERROR")
    d = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer()).json()[
        "deployment"
    ]
    assert "health check timed out" in d["healthInfo"][0]["error"]
    assert "answered 500" in d["healthInfo"][0]["error"]
    wait_for(lambda: not containers(dock, ns), what="nothing running")
    # the failed instances' containers are kept, stopped, for `nvcf-lite logs` (the newest 3)
    kept = containers(dock, ns, running_only=False)
    assert 1 <= len(kept) <= 3 and all(c.status == "exited" for c in kept)
    r = api.post(
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        json={"deploymentSpecifications": [{"gpu": "CPU", "minInstances": 1, "maxInstances": 1}]},
        headers=bearer(),
    )
    assert r.status_code == 400 and "deployment with errors" in r.json()["detail"]


def test_exiting_image_reports_exit_code_and_logs(api: TestClient[Any], ns: str) -> None:
    fid, vid = register(api, EXIT_IMAGE)
    deploy(api, fid, vid)
    wait_for(lambda: status(api, fid, vid) == "ERROR", what="ERROR")
    d = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer()).json()[
        "deployment"
    ]
    assert "exited with code 1" in d["healthInfo"][0]["error"]


def test_crashing_image_is_replaced_with_backoff_and_reported(
    api: TestClient[Any], dock: docker.DockerClient, ns: str
) -> None:
    fid, vid = register(api, CRASH_IMAGE)
    deploy(api, fid, vid, minInstances=1, maxInstances=1)
    wait_for(lambda: status(api, fid, vid) == "ACTIVE", what="ACTIVE")
    seen: set[str] = set()

    def crash_looping() -> bool:
        seen.update(c.id for c in containers(dock, ns, running_only=False))
        d = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer()).json()
        info = d["deployment"].get("healthInfo") or []
        return bool(info) and info[0]["error"].startswith("crash-looping")

    wait_for(crash_looping, timeout=60, what="crash-looping report")
    assert len(seen) >= 3  # replaced, not restarted in place
    assert status(api, fid, vid) in ("ACTIVE", "DEGRADED", "DEGRADING")


def test_missing_image_fails_with_docker_error(api: TestClient[Any]) -> None:
    fid, vid = register(api, "nvcf-lite-test/does-not-exist:1")
    deploy(api, fid, vid)
    wait_for(lambda: status(api, fid, vid) == "ERROR", what="ERROR")
    d = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer()).json()[
        "deployment"
    ]
    assert "could not be pulled" in d["healthInfo"][0]["error"]


def test_simulated_gpus_place_without_device_requests(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, dock: docker.DockerClient, ns: str
) -> None:
    cfg = _config(
        tmp_path, ns, NVCF_LITE_GPUS__SIMULATED='[{"name": "L40", "count": 2, "memory_mb": 46068}]'
    )
    api = app_factory(cfg, runtime_factory=docker_runtime)
    groups = api.get("/v2/nvcf/clusterGroups", headers=bearer()).json()["clusterGroups"]
    gpus = {g["name"]: [t["name"] for t in g["instanceTypes"]] for g in groups[0]["gpus"]}
    assert gpus["L40"] == ["L40.GPU.1x", "L40.GPU.2x"] and gpus["CPU"] == ["CPU.x1"]
    fid, vid = register(api)
    deploy(api, fid, vid, gpu="L40", instanceType="L40.GPU.1x", minInstances=2, maxInstances=2)
    wait_for(lambda: status(api, fid, vid) == "ACTIVE", what="ACTIVE")
    visible = set()
    for c in containers(dock, ns):
        env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
        visible.add(env["NVIDIA_VISIBLE_DEVICES"])
        assert not c.attrs["HostConfig"].get("DeviceRequests")
    assert visible == {"SIM-L40-0", "SIM-L40-1"}
    fid2, vid2 = register(api)
    deploy(api, fid2, vid2, gpu="L40", minInstances=1, maxInstances=1)
    wait_for(
        lambda: (
            "waiting for capacity"
            in str(
                api.get(
                    f"/v2/nvcf/deployments/functions/{fid2}/versions/{vid2}", headers=bearer()
                ).json()
            )
        ),
        what="capacity report",
    )


def test_gpu_deployment_without_gpus_is_a_clear_400(api: TestClient[Any]) -> None:
    fid, vid = register(api)
    body = {"deploymentSpecifications": [{"gpu": "H100", "minInstances": 1, "maxInstances": 1}]}
    r = api.post(
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", json=body, headers=bearer()
    )
    assert r.status_code == 400
    assert "not available on this host" in r.json()["detail"] and "CPU" in r.json()["detail"]
    health = api.get("/health").json()
    assert health["gpus"]["status"] == "unavailable" and "NVML" in health["gpus"]["detail"]


def test_raising_min_instances_keeps_a_serving_function_invocable(
    api: TestClient[Any], dock: docker.DockerClient, ns: str
) -> None:
    fid, vid = register(api)
    d = deploy(api, fid, vid, minInstances=1, maxInstances=3)
    wait_for(lambda: status(api, fid, vid) == "ACTIVE", what="ACTIVE")
    spec_id = d["deploymentSpecifications"][0]["gpuSpecificationId"]
    r = api.put(
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        json={
            "deploymentSpecifications": [
                {"gpuSpecificationId": spec_id, "minInstances": 2, "maxInstances": 3}
            ]
        },
        headers=bearer(),
    )
    assert r.status_code == 200, r.text
    # the ready instance goes on serving while the second one starts (never DEPLOYING: 404)
    assert r.json()["deployment"]["functionStatus"] in ("ACTIVE", "DEGRADING")
    seen = set()

    def both_ready() -> bool:
        seen.add(status(api, fid, vid))
        r = api.post(f"/v2/nvcf/pexec/functions/{fid}", json={"x": 1}, headers=bearer())
        assert r.status_code == 200, r.text
        return len(containers(dock, ns)) == 2 and status(api, fid, vid) == "ACTIVE"

    wait_for(both_ready, what="two ready instances")
    assert seen <= {"ACTIVE", "DEGRADING"}, seen


def test_container_reads_its_secrets_and_sees_an_update(
    api: TestClient[Any], dock: docker.DockerClient, ns: str, tmp_path: Path
) -> None:
    secrets = [{"name": "TOKEN", "value": "first-x9"}, {"name": "db", "value": {"user": "u-x9"}}]
    fid, vid = register(api, secrets=secrets)
    deploy(api, fid, vid, minInstances=1, maxInstances=1)
    wait_for(lambda: status(api, fid, vid) == "ACTIVE", what="ACTIVE")
    (c,) = containers(dock, ns)
    (mount,) = [m for m in c.attrs["Mounts"] if m["Destination"] == "/var/secrets"]
    assert mount["RW"] is False

    def seen() -> Any:
        r = api.post(
            f"/v2/nvcf/pexec/functions/{fid}", json={"readSecrets": True}, headers=bearer()
        )
        assert r.status_code == 200, r.text
        return r.json()["secrets"]

    assert seen() == {"TOKEN": "first-x9", "db": {"user": "u-x9"}}
    # the host folder mounted at /var/secrets is not under data_dir, and no byte under data_dir
    # (the database, its WAL, request folders, backups) holds a value, while the instance runs
    data_dir = tmp_path / "data"
    assert data_dir not in Path(mount["Source"]).parents
    on_disk = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    assert b"first-x9" not in on_disk and b"u-x9" not in on_disk
    r = api.put(
        f"/v2/nvcf/secrets/functions/{fid}/versions/{vid}",
        json={"secrets": [{"name": "TOKEN", "value": "rotated"}, {"name": "NEW", "value": "n"}]},
        headers=bearer(),
    )
    assert r.status_code == 204 and r.content == b"", r.text
    # the running container reads the new values (merged by name), without a restart: a new
    # secrets.json is renamed into its mounted folder
    assert seen() == {"TOKEN": "rotated", "db": {"user": "u-x9"}, "NEW": "n"}
    assert [x.id for x in containers(dock, ns)] == [c.id]
