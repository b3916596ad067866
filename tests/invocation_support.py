"""Helpers for the invocation tests: the echo function deployed through the public API.

On the in-process app (`register`, `deploy`, `wait_active` take a Litestar TestClient) and on
a live `nvcf-lite serve` (`live_echo` takes a ServerProcess). Short scheduler timings keep the
Docker tests fast; each test runs in its own Docker namespace so leftovers never mix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import bearer, make_config, wait_for
from docker_support import ECHO_IMAGE
from litestar.testing import TestClient

from nvcf_lite.config import Config

FAST = {
    "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "1",
    "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.3",
    "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "15",
    "NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S": "0.3",
    "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_INITIAL_S": "0.3",
    "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_MAX_S": "2",
    "NVCF_LITE_GPUS__USE_NVML": "false",
}
HEALTH = {
    "protocol": "HTTP",
    "uri": "/health",
    "port": 8000,
    "timeout": "PT2S",
    "expectedStatusCode": 200,
}


def docker_env(namespace: str, **env: str) -> dict[str, str]:
    return {
        **FAST,
        "NVCF_LITE_DOCKER__NAMESPACE": namespace,
        "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "false",
        **env,
    }


def docker_config(tmp_path: Path, namespace: str, **env: str) -> Config:
    return make_config(tmp_path / "data", **docker_env(namespace, **env))


def function_body(name: str = "echo", image: str = ECHO_IMAGE) -> dict[str, Any]:
    return {"name": name, "inferenceUrl": "/echo", "containerImage": image, "health": HEALTH}


def register(api: TestClient[Any], image: str = ECHO_IMAGE) -> tuple[str, str]:
    r = api.post("/v2/nvcf/functions", json=function_body(image=image), headers=bearer())
    assert r.status_code == 200, r.text
    f = r.json()["function"]
    return f["id"], f["versionId"]


def deploy_body(**spec: Any) -> dict[str, Any]:
    return {
        "deploymentSpecifications": [
            {"gpu": "CPU", "instanceType": "CPU.x1", "minInstances": 1, "maxInstances": 1, **spec}
        ]
    }


def deploy(api: TestClient[Any], fid: str, vid: str, **spec: Any) -> None:
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    r = api.post(path, json=deploy_body(**spec), headers=bearer())
    assert r.status_code == 200, r.text


def wait_active(api: TestClient[Any], fid: str, vid: str) -> None:
    def active() -> bool:
        r = api.get(f"/v2/nvcf/functions/{fid}/versions/{vid}", headers=bearer())
        status = r.json()["function"]["status"]
        assert status not in ("ERROR", "INACTIVE"), r.text
        return bool(status == "ACTIVE")

    wait_for(active, what=f"function {fid} ACTIVE")


def echo(api: TestClient[Any], **spec: Any) -> tuple[str, str]:
    """The echo function registered, deployed (one instance unless told) and ACTIVE."""
    fid, vid = register(api)
    deploy(api, fid, vid, **spec)
    wait_active(api, fid, vid)
    return fid, vid


JsonCall = Callable[..., Any]  # (method, path, body) -> the decoded JSON answer


def live_echo(call: JsonCall, name: str = "echo", **spec: Any) -> tuple[str, str]:
    """The same on a live server: `call` is ServerProcess.json."""
    f = call("POST", "/v2/nvcf/functions", function_body(name))["function"]
    fid, vid = f["id"], f["versionId"]
    call("POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", deploy_body(**spec))

    def active() -> bool:
        status = call("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]
        assert status["status"] not in ("ERROR", "INACTIVE"), status
        return bool(status["status"] == "ACTIVE")

    wait_for(active, what=f"function {fid} ACTIVE")
    return fid, vid
