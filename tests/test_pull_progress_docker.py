"""Image pulls for real: the Docker engine pulls from a registry on 127.0.0.1 (registry_support).

A pull fails only when it stops progressing for `docker.pull_timeout_s`: a throttled pull that
takes several times that long, progressing all the while, is not a failed start (with
`deploy_attempts` 1, one failed start would be ERROR), and its progress (layers, bytes) shows
in the deployment's health info, its instance and its scaling state while it runs. A registry
that sends part of a layer and then hangs fails the start after the stall window, with a
reason that says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, wait_for
from docker_support import ECHO_IMAGE
from invocation_support import deploy, docker_config, register
from litestar.testing import TestClient
from registry_support import TestRegistry

from nvcf_lite.app import docker_runtime
from nvcf_lite.runtime.docker import DockerRuntime

pytestmark = pytest.mark.docker

STALL_S = 2.0


def _api(app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str) -> TestClient[Any]:
    config = docker_config(
        tmp_path,
        ns,
        NVCF_LITE_DOCKER__PULL_TIMEOUT_S=str(STALL_S),
        NVCF_LITE_SCHEDULER__DEPLOY_ATTEMPTS="1",
    )
    return app_factory(config, runtime_factory=docker_runtime)


def _deployment(api: TestClient[Any], fid: str, vid: str) -> dict[str, Any]:
    r = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.status_code == 200, r.text
    deployment: dict[str, Any] = r.json()["deployment"]
    return deployment


def test_a_slow_pull_that_progresses_is_not_a_failure_and_shows_its_progress(
    app_factory: Callable[..., TestClient[Any]],
    tmp_path: Path,
    ns: str,
    dock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nvcf_lite.runtime")
    api = _api(app_factory, tmp_path, ns)
    # ~14 MB at 2 MB/s: about 7 s in all, three and a half stall windows
    with TestRegistry(dock, ECHO_IMAGE, rate_bytes_s=2_000_000) as registry:
        fid, vid = register(api, image=registry.image)
        started = time.monotonic()
        deploy(api, fid, vid)
        seen: list[dict[str, Any]] = []
        while True:
            d = _deployment(api, fid, vid)
            if d["functionStatus"] != "DEPLOYING":
                break
            if d.get("healthInfo"):
                seen.append(d)
            assert time.monotonic() - started < 60, d
            time.sleep(0.25)
        took = time.monotonic() - started
        assert d["functionStatus"] == "ACTIVE", d
    assert took > 2 * STALL_S  # it outlasted the stall window twice over, and did not fail
    assert len(seen) >= 4
    during = seen[len(seen) // 2]
    (health,) = during["healthInfo"]
    pull = health["imagePull"]
    assert pull["image"] == registry.image and pull["layersTotal"] == 2
    assert 0 < pull["bytesDone"] <= pull["bytesTotal"]
    assert health["error"].startswith(f"pulling image {registry.image}: ")
    assert health["icmsRequestId"] == during["deploymentSpecifications"][0]["gpuSpecificationId"]
    (inst,) = during["instances"]
    assert inst["state"] == "starting" and inst["imagePull"]["image"] == registry.image
    assert during["scaling"][0]["imagePull"]["layersTotal"] == 2
    done = [s["healthInfo"][0]["imagePull"]["bytesDone"] for s in seen]
    assert done == sorted(done) and done[0] < done[-1]
    # the instance that pulled is the one that became ready: no failed start, no retry
    (ready,) = d["instances"]
    assert ready["instanceId"] == inst["instanceId"] and ready["state"] == "ready"
    assert "healthInfo" not in d and d["scaling"][0]["state"] == "ok"
    assert "imagePull" not in ready
    # the log: milestones (each 10% of the bytes, each layer), not a line per chunk
    lines = [r.getMessage() for r in caplog.records if registry.image in r.getMessage()]
    assert any("(layer " in line and "pull complete" in line for line in lines), lines
    assert any(line.startswith(f"pulled image {registry.image}: 2 layers") for line in lines)
    assert 4 <= len(lines) <= 20, lines


def test_a_stalled_pull_fails_the_start_after_the_stall_window_with_the_reason(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str, dock: Any
) -> None:
    api = _api(app_factory, tmp_path, ns)
    with TestRegistry(dock, ECHO_IMAGE, stall_after_bytes=2_000_000) as registry:
        fid, vid = register(api, image=registry.image)
        started = time.monotonic()
        deploy(api, fid, vid)

        def settled() -> dict[str, Any] | None:
            d = _deployment(api, fid, vid)
            return d if d["functionStatus"] != "DEPLOYING" else None

        d = wait_for(settled, timeout=60, what="the deployment to give up")
        took = time.monotonic() - started
    assert d["functionStatus"] == "ERROR", d
    assert STALL_S <= took < STALL_S + 15
    (health,) = d["healthInfo"]
    assert f"pulling image '{registry.image}' stalled: no progress for 2 s" in health["error"]
    assert "docker.pull_timeout_s" in health["error"]
    assert "imagePull" not in health


def test_closing_the_runtime_ends_a_silent_pull_at_once(dock: Any) -> None:
    """Shutdown does not wait out the stall window: the pull's socket is shut down."""

    async def pull_then_close(image: str) -> BaseException | None:
        runtime = DockerRuntime.connect(None, pull_timeout_s=60)
        pulling = asyncio.create_task(runtime.ensure_image(image))
        await wait_async(lambda: runtime.pull_progress(image))
        await runtime.close()
        try:
            await pulling
        except BaseException as exc:  # the cancelled pull
            return exc
        return None

    with TestRegistry(dock, ECHO_IMAGE, stall_after_bytes=1_000_000) as registry:
        started = time.monotonic()
        # asyncio.run returns once the pulling thread has ended (it joins the executor)
        ended = asyncio.run(pull_then_close(registry.image))
        assert time.monotonic() - started < 20
    assert isinstance(ended, asyncio.CancelledError)
    assert not dock.images.list(name=registry.image.rsplit(":", 1)[0])


async def wait_async(cond: Callable[[], Any], limit_s: float = 15.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
