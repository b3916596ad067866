"""The runtimes the runtime contract runs its assertions on (the FakeRuntime, Docker, and
Docker Swarm on the three-node cluster of swarm_support):
`Kind`, `open_kind()` (the `kind` fixture of conftest), `spec()` and `healthy()`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from docker_support import (
    ECHO_IMAGE,
    EXIT_IMAGE,
    docker_client_or_skip,
    ensure_test_images,
    http_request,
)
from fake_runtime import FakeRuntime

from nvcf_lite.runtime.base import (
    LABEL_INSTANCE_ID,
    LABEL_NAMESPACE,
    ContainerRuntime,
    ContainerSpec,
)

if TYPE_CHECKING:
    from swarm_support import SwarmCluster

LABEL = "nvcf-lite.contract"


class Kind:
    """One runtime under the contract: its name, the runtime, and its images by role."""

    def __init__(
        self,
        name: str,
        runtime: ContainerRuntime,
        images: dict[str, str],
        cluster: SwarmCluster | None = None,
    ) -> None:
        self.name, self.runtime, self.images = name, runtime, images
        self.cluster = cluster  # the swarm's, where its manager pulls from a test registry


@asynccontextmanager
async def open_kind(name: str, cluster: SwarmCluster | None = None) -> AsyncIterator[Kind]:
    """The runtime `name` ("fake", "docker" or "swarm": then on `cluster`) with its test
    images; on exit the containers this run labelled are removed and the runtime closed."""
    if name == "fake":
        images = {"echo": "fake/echo", "exit": "fake/exit", "missing": "fake/missing"}
        k = Kind("fake", FakeRuntime(), images)
    elif name == "swarm":
        from nvcf_lite.runtime.swarm import SwarmRuntime

        assert cluster is not None
        images = {"echo": ECHO_IMAGE, "exit": EXIT_IMAGE, "missing": "nvcf-lite-test/none:1"}
        runtime = SwarmRuntime.connect(cluster.url, pull_timeout_s=60, stop_grace_s=1)
        k = Kind("swarm", runtime, images, cluster)
    else:
        docker_client_or_skip()
        await asyncio.to_thread(ensure_test_images)
        from nvcf_lite.runtime.docker import DockerRuntime

        images = {"echo": ECHO_IMAGE, "exit": EXIT_IMAGE, "missing": "nvcf-lite-test/none:1"}
        k = Kind("docker", DockerRuntime.connect(None, pull_timeout_s=60), images)
    run = uuid.uuid4().hex[:8]
    k.images["run"] = run
    try:
        yield k
    finally:
        for c in await k.runtime.list_managed():
            if c.labels.get(LABEL) == run:
                await k.runtime.remove(c.id, stop_timeout_s=1)
        await k.runtime.close()


def spec(k: Kind, image: str, name: str) -> ContainerSpec:
    return ContainerSpec(
        name=f"contract-{k.images['run']}-{name}",
        image=k.images[image],
        # A namespace of its own: a server of the default namespace on the same engine treats
        # unlabelled managed containers as its leftovers and would reap these mid-test.
        labels={
            LABEL: k.images["run"],
            LABEL_INSTANCE_ID: name,
            LABEL_NAMESPACE: f"contract-{k.images['run']}",
        },
        ports=[8000],
        env={"GREETING": "hi"},
    )


async def healthy(port: int, address: str = "127.0.0.1") -> bool:
    for _ in range(200):
        try:
            answer = await asyncio.to_thread(http_request, f"http://{address}:{port}/health")
            if answer.status == 200:
                return True
        except OSError:
            pass
        await asyncio.sleep(0.02)
    return False
