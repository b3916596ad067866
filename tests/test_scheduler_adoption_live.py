"""A restarted server adopts its running containers (docs/ARCHITECTURE.md, README "Deployments").

A real `nvcf-lite serve` process (plain HTTP) in a Docker namespace of its own: deploy the echo
image, stop the server (SIGKILL, as after a crash, or SIGTERM), start it again over the same
data directory, and check that the containers found by their labels are taken over as they
are, that a missing one is replaced, and that a stray one of this namespace is removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import wait_for
from docker_support import (
    ECHO_IMAGE,
    namespace_containers,
)
from invocation_support import HEALTH
from server_support import ServerProcess

pytestmark = pytest.mark.docker


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(ns: str, **env: str) -> ServerProcess:
        settings = {
            "NVCF_LITE_DOCKER__NAMESPACE": ns,
            "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "2",
            "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.3",
            "NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S": "0.3",
            "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "20",
            **env,
        }
        server = ServerProcess(tmp_path / "server", settings)
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


def containers(dock: docker.DockerClient, ns: str, running_only: bool = True) -> list[Any]:
    found = namespace_containers(dock, ns)
    return [c for c in found if c.status == "running" or not running_only]


def started_at(dock: docker.DockerClient, container_id: str) -> str:
    return str(dock.api.inspect_container(container_id)["State"]["StartedAt"])


class Echo:
    """One registered echo function on a server, deployed on CPU."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        fn = server.json(
            "POST",
            "/v2/nvcf/functions",
            {
                "name": "echo",
                "inferenceUrl": "/echo",
                "containerImage": ECHO_IMAGE,
                "health": HEALTH,
            },
        )["function"]
        self.fid, self.vid = fn["id"], fn["versionId"]
        self.path = f"/v2/nvcf/deployments/functions/{self.fid}/versions/{self.vid}"

    def deploy(self, count: int) -> dict[str, Any]:
        spec = {
            "gpu": "CPU",
            "instanceType": "CPU.x1",
            "minInstances": count,
            "maxInstances": count,
        }
        body = {"deploymentSpecifications": [spec]}
        deployment: dict[str, Any] = self.server.json("POST", self.path, body)["deployment"]
        return deployment

    def deployment(self) -> dict[str, Any]:
        deployment: dict[str, Any] = self.server.json("GET", self.path)["deployment"]
        return deployment

    def status(self) -> str:
        path = f"/v2/nvcf/functions/{self.fid}/versions/{self.vid}"
        return str(self.server.json("GET", path)["function"]["status"])

    def ready(self, count: int) -> dict[str, str] | None:
        """{instance id: container id} once the version is ACTIVE with `count` ready instances."""
        d = self.deployment()
        ready = {i["instanceId"]: i["containerId"] for i in d["instances"] if i["state"] == "ready"}
        if d["functionStatus"] == "ACTIVE" and len(ready) == count and len(d["instances"]) == count:
            return ready
        return None

    def invoke(self) -> int:
        status, _, _ = self.server.call(
            "POST", f"/v2/nvcf/pexec/functions/{self.fid}", {"hello": "again"}
        )
        return status


def stray_container(dock: docker.DockerClient, ns: str) -> Any:
    """A leftover in our namespace, of a deployment this server does not know."""
    labels = {
        "nvcf-lite.managed": "true",
        "nvcf-lite.namespace": ns,
        "nvcf-lite.deployment": str(uuid.uuid4()),
        "nvcf-lite.instance-id": str(uuid.uuid4()),
        "nvcf-lite.function-id": str(uuid.uuid4()),
        "nvcf-lite.version-id": str(uuid.uuid4()),
    }
    return dock.containers.run(ECHO_IMAGE, detach=True, labels=labels)


def test_sigkill_then_restart_adopts_the_same_containers(
    servers: Callable[..., ServerProcess], dock: docker.DockerClient, ns: str
) -> None:
    server = servers(ns).start()
    echo = Echo(server)
    assert echo.deploy(2)["functionStatus"] == "DEPLOYING"
    before = wait_for(lambda: echo.ready(2), what="ACTIVE with 2 ready instances")
    assert sorted(c.id for c in containers(dock, ns)) == sorted(before.values())
    started = {cid: started_at(dock, cid) for cid in before.values()}

    server.kill()
    assert sorted(c.id for c in containers(dock, ns)) == sorted(before.values())
    stray = stray_container(dock, ns)

    server.start()
    after = wait_for(lambda: echo.ready(2), what="ACTIVE again with 2 ready instances")
    assert after == before  # same instance ids on the same containers
    assert {cid: started_at(dock, cid) for cid in after.values()} == started  # not restarted
    wait_for(
        lambda: stray.id not in {c.id for c in containers(dock, ns, False)}, what="stray removed"
    )
    assert sorted(c.id for c in containers(dock, ns, running_only=False)) == sorted(before.values())
    assert echo.invoke() == 200
    d = echo.deployment()
    assert all(i["gpuUuids"] == [] and i["hostPort"] for i in d["instances"])
    assert "healthInfo" not in d
    assert "adopting running container" in server.log()


def test_a_container_removed_while_down_is_replaced(
    servers: Callable[..., ServerProcess], dock: docker.DockerClient, ns: str
) -> None:
    server = servers(ns).start()
    echo = Echo(server)
    echo.deploy(2)
    before = wait_for(lambda: echo.ready(2), what="ACTIVE with 2 ready instances")
    server.kill()
    gone_instance, gone_container = next(iter(before.items()))
    dock.containers.get(gone_container).remove(force=True)
    kept = {i: c for i, c in before.items() if i != gone_instance}
    kept_started = {c: started_at(dock, c) for c in kept.values()}

    server.start()
    after = wait_for(lambda: echo.ready(2), what="ACTIVE with 2 ready instances")
    assert kept.items() <= after.items()
    assert gone_instance not in after and gone_container not in after.values()
    assert {c: started_at(dock, c) for c in kept.values()} == kept_started
    assert len(containers(dock, ns, running_only=False)) == 2


def test_sigterm_keeps_instances_by_default_and_the_restart_adopts_them(
    servers: Callable[..., ServerProcess], dock: docker.DockerClient, ns: str
) -> None:
    server = servers(ns).start()  # docker.keep_instances_on_shutdown: true (the default)
    echo = Echo(server)
    echo.deploy(1)
    before = wait_for(lambda: echo.ready(1), what="ACTIVE")
    (cid,) = before.values()
    started = started_at(dock, cid)

    server.stop()  # SIGTERM: a clean shutdown
    assert [c.id for c in containers(dock, ns)] == [cid]
    assert "Traceback" not in server.log()

    server.start()
    assert wait_for(lambda: echo.ready(1), what="ACTIVE again") == before
    assert started_at(dock, cid) == started
    assert echo.invoke() == 200


def test_sigterm_removes_instances_when_told_to(
    servers: Callable[..., ServerProcess], dock: docker.DockerClient, ns: str
) -> None:
    server = servers(ns, NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN="false").start()
    echo = Echo(server)
    echo.deploy(1)
    wait_for(lambda: echo.ready(1), what="ACTIVE")
    server.stop()
    assert containers(dock, ns, running_only=False) == []

    server.start()  # the deployment is still wanted: a new container is started
    after = wait_for(lambda: echo.ready(1), what="ACTIVE again")
    assert [c.id for c in containers(dock, ns)] == list(after.values())


def test_adoption_does_not_flap_the_status(
    servers: Callable[..., ServerProcess], dock: docker.DockerClient, ns: str
) -> None:
    server = servers(ns).start()
    echo = Echo(server)
    echo.deploy(1)
    wait_for(lambda: echo.ready(1), what="ACTIVE")
    server.kill()
    mark = len(server.log_path.read_text(errors="replace"))
    server.start()
    wait_for(lambda: echo.ready(1), what="ACTIVE again")
    after = server.log_path.read_text(errors="replace")[mark:]
    changes = [line for line in after.splitlines() if "status changes" in line]
    assert not any("DEGRADED" in line or "DEGRADING" in line for line in changes), changes
