"""DockerRuntime against the real Docker engine: containers, ports, logs, images, GPU refusal.

Every container made here carries LABEL_TEST=<session id> and is removed after each test and
again at the end of the session. Containers are reached only through 127.0.0.1 published ports.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from docker_support import ECHO_IMAGE, docker_client_or_skip, ensure_test_images
from server_support import free_port

from nvcf_lite.runtime import docker_calls
from nvcf_lite.runtime.base import (
    LABEL_FUNCTION_ID,
    LABEL_MANAGED,
    ContainerInfo,
    ContainerSpec,
    ImageNotFound,
    Mount,
    RuntimeFailure,
)
from nvcf_lite.runtime.docker import DockerRuntime
from nvcf_lite.runtime.pull_progress import PullTracker

pytestmark = pytest.mark.docker

SESSION = uuid.uuid4().hex[:8]
LABEL_TEST = "nvcf-lite.test-session"
MISSING_IMAGE = "nvcf-lite-test/never-built:1"
_names = itertools.count()

# Short programs for the test function image (its CMD is `python3 /app/function_server.py`).
SPEAK_AND_EXIT = (
    "import sys; print('probe: to stdout', flush=True); "
    "print('probe: to stderr', file=sys.stderr, flush=True); sys.exit(3)"
)
CAT_INPUT = "print(open('/data/in.txt').read())"
WRITE_OUTPUT = "open('/data/out.txt', 'w').write('written')"


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker_client_or_skip()
    ensure_test_images()
    yield client
    _remove_test_containers(client)


@pytest.fixture
async def runtime(docker_client: docker.DockerClient) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime.connect(None, pull_timeout_s=30)
    yield rt
    await rt.close()
    await asyncio.to_thread(_remove_test_containers, docker_client)


# Helpers ----------------------------------------------------------------------------------


def _remove_test_containers(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": f"{LABEL_TEST}={SESSION}"}):
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass


def python_spec(program: str, **fields: Any) -> ContainerSpec:
    return make_spec(ECHO_IMAGE, args=["python3", "-c", program], **fields)


def make_spec(image: str, **fields: Any) -> ContainerSpec:
    labels = {LABEL_TEST: SESSION, LABEL_FUNCTION_ID: "fn-test", **fields.pop("labels", {})}
    name = fields.pop("name", f"nvcf-lite-test-rt-{SESSION}-{next(_names)}")
    return ContainerSpec(name=name, image=image, labels=labels, **fields)


async def wait_for_state(
    rt: DockerRuntime, container_id: str, state: str, timeout_s: float = 20.0
) -> ContainerInfo:
    deadline = time.monotonic() + timeout_s
    while True:
        info = await rt.inspect(container_id)
        assert info is not None
        if info.state == state or time.monotonic() > deadline:
            assert info.state == state, info
            return info
        await asyncio.sleep(0.05)


async def wait_healthy(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
        while True:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no 200 from 127.0.0.1:{port}/health"
            await asyncio.sleep(0.05)


# Tests ------------------------------------------------------------------------------------


async def test_unreachable_daemon_is_not_fatal(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-docker.sock"
    rt = DockerRuntime.connect(url)
    reason = await rt.ping()
    assert reason is not None
    assert reason.startswith(f"Docker engine not reachable at {url}: ")
    with pytest.raises(RuntimeFailure, match="Docker engine not reachable"):
        await rt.create_and_start(make_spec("any:1"))
    with pytest.raises(RuntimeFailure, match="Docker engine not reachable"):
        await rt.ensure_image("any:1")
    await rt.close()


async def test_ping(runtime: DockerRuntime) -> None:
    assert await runtime.ping() is None


async def test_create_and_start_publishes_on_loopback(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    spec = make_spec(ECHO_IMAGE, env={"PORT": "8000", "GREETING": "hi"}, ports=[8000])
    info = await runtime.create_and_start(spec)

    assert info.state == "running"
    assert info.name == spec.name
    assert info.labels[LABEL_MANAGED] == "true"
    assert info.labels[LABEL_FUNCTION_ID] == "fn-test"
    assert info.started_at is not None and info.exit_code is None
    await wait_healthy(info.host_ports[8000])

    raw = docker_client.api.inspect_container(info.id)
    assert "GREETING=hi" in raw["Config"]["Env"]
    assert raw["Config"]["StopSignal"] == "SIGTERM"
    assert not raw["HostConfig"].get("Init")
    assert not raw["HostConfig"].get("DeviceRequests")
    binding = {"HostIp": "127.0.0.1", "HostPort": ""}
    assert raw["HostConfig"]["PortBindings"] == {"8000/tcp": [binding]}
    bound = raw["NetworkSettings"]["Ports"]["8000/tcp"]
    assert {b["HostIp"] for b in bound} == {"127.0.0.1"}

    listed = {c.id: c for c in await runtime.list_managed()}
    assert listed[info.id].state == "running"
    assert listed[info.id].host_ports == info.host_ports
    assert listed[info.id].labels[LABEL_TEST] == SESSION


async def test_args_and_mounts(runtime: DockerRuntime, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello-from-the-host")
    ro = [Mount(source=str(tmp_path), target="/data", read_only=True)]
    rw = [Mount(source=str(tmp_path), target="/data")]

    cat = await runtime.create_and_start(python_spec(CAT_INPUT, mounts=ro))
    assert (await wait_for_state(runtime, cat.id, "exited")).exit_code == 0
    assert "hello-from-the-host" in await runtime.logs_tail(cat.id)

    denied = await runtime.create_and_start(python_spec(WRITE_OUTPUT, mounts=ro))
    assert (await wait_for_state(runtime, denied.id, "exited")).exit_code == 1
    assert "Read-only file system" in await runtime.logs_tail(denied.id)

    wrote = await runtime.create_and_start(python_spec(WRITE_OUTPUT, mounts=rw))
    assert (await wait_for_state(runtime, wrote.id, "exited")).exit_code == 0
    assert (tmp_path / "out.txt").read_text() == "written"


async def test_exited_container_state_and_logs(runtime: DockerRuntime) -> None:
    info = await runtime.create_and_start(python_spec(SPEAK_AND_EXIT, ports=[8000]))
    done = await wait_for_state(runtime, info.id, "exited")
    assert done.exit_code == 3
    assert done.finished_at is not None and done.started_at is not None
    assert done.host_ports == {}
    assert not done.oom_killed

    logs = await runtime.logs_tail(info.id, lines=20)
    assert "probe: to stdout" in logs and "probe: to stderr" in logs
    assert len((await runtime.logs_tail(info.id, lines=1)).splitlines()) == 1

    listed = {c.id: c for c in await runtime.list_managed()}
    assert (listed[info.id].state, listed[info.id].exit_code) == ("exited", 3)


async def test_pause_unpause_and_remove(runtime: DockerRuntime) -> None:
    info = await runtime.create_and_start(make_spec(ECHO_IMAGE, ports=[8000]))
    await runtime.pause(info.id)
    await wait_for_state(runtime, info.id, "paused")
    await runtime.unpause(info.id)
    await wait_for_state(runtime, info.id, "running")
    await wait_healthy(info.host_ports[8000])

    await runtime.pause(info.id)
    started = time.monotonic()
    await runtime.remove(info.id, stop_timeout_s=2)  # a paused container goes too
    assert time.monotonic() - started < 10
    assert await runtime.inspect(info.id) is None
    await runtime.remove(info.id)  # idempotent
    await runtime.remove("nvcf-lite-test-no-such-container")
    assert await runtime.logs_tail(info.id) == ""
    with pytest.raises(RuntimeFailure, match="Docker pause failed"):
        await runtime.pause(info.id)


async def test_name_conflict(runtime: DockerRuntime) -> None:
    spec = make_spec(ECHO_IMAGE, ports=[8000])
    await runtime.create_and_start(spec)
    with pytest.raises(RuntimeFailure, match="already exists"):
        await runtime.create_and_start(spec)


async def test_host_network_publishes_nothing(runtime: DockerRuntime) -> None:
    port = free_port()
    spec = make_spec(ECHO_IMAGE, env={"PORT": str(port)}, ports=[port], network_mode="host")
    info = await runtime.create_and_start(spec)
    assert info.host_ports == {}
    await wait_healthy(port)


async def test_ensure_image_present(runtime: DockerRuntime) -> None:
    assert await runtime.image_exists(ECHO_IMAGE)
    assert not await runtime.image_exists(MISSING_IMAGE)
    assert await runtime.ensure_image(ECHO_IMAGE) is False


async def test_ensure_image_missing_shares_one_failed_pull(
    runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulls: list[str] = []
    real_pull = docker_calls.pull

    def counting_pull(api: Any, tracker: PullTracker, *args: Any) -> None:
        pulls.append(tracker.image)
        time.sleep(0.2)  # keep the pull in flight while the other callers join it
        real_pull(api, tracker, *args)

    monkeypatch.setattr(docker_calls, "pull", counting_pull)
    started = time.monotonic()
    results = await asyncio.gather(
        *(runtime.ensure_image(MISSING_IMAGE) for _ in range(3)), return_exceptions=True
    )
    assert time.monotonic() - started < 35
    assert pulls == [MISSING_IMAGE]
    prefix = f"image '{MISSING_IMAGE}' is not present locally and could not be pulled: "
    for result in results:
        assert isinstance(result, ImageNotFound), result
        assert str(result).startswith(prefix)
        assert len(str(result)) > len(prefix) + 10  # Docker's own words follow

    with pytest.raises(ImageNotFound):  # a failed pull is forgotten: the next call retries
        await runtime.ensure_image(MISSING_IMAGE)
    assert len(pulls) == 2


async def test_create_with_missing_image(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    spec = make_spec(MISSING_IMAGE, ports=[8000])
    with pytest.raises(ImageNotFound, match="could not be pulled"):
        await runtime.create_and_start(spec)
    assert docker_client.containers.list(all=True, filters={"name": spec.name}) == []


async def test_gpu_request_without_toolkit(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this Docker host has the NVIDIA runtime")
    gpu = "GPU-00000000-0000-0000-0000-000000000000"
    spec = make_spec(ECHO_IMAGE, ports=[8000], gpu_device_ids=[gpu])
    with pytest.raises(RuntimeFailure) as caught:
        await runtime.create_and_start(spec)
    assert "no NVIDIA container toolkit" in str(caught.value)
    assert docker_client.containers.list(all=True, filters={"name": spec.name}) == []
