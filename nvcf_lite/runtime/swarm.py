"""SwarmRuntime: instance containers as Docker Swarm services, on the nodes of one swarm.

nvcf-lite talks to one manager's engine (`docker.base_url`). Each instance is one service
(runtime/swarm_calls.py says why); its "container id" is the service id. Its inference and
health ports are published in host mode on the node that runs the task, so the dispatcher and
the prober reach `<node address>:<published port>`: the nvcf-lite host must route to the
nodes' addresses (Swarm's routing mesh is not used: it would hide which node answers and add
a hop). GPUs: each node declares its GPUs as `node-generic-resources` of kind `NVIDIA-GPU`,
value the GPU UUID; nvcf-lite places an instance on exact UUIDs (never two instances on one,
across all nodes), pins the service to the node that holds them, and reserves that many
`NVIDIA-GPU` resources there, so that Swarm's own accounting agrees.

Images are looked up and pulled on the manager (DockerRuntime does it); each node's engine
pulls its own copy when the task starts there. Services cannot be paused: pause and unpause
fail with a reason (keep `scheduler.warm_pool_s` at 0 with this runtime).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from nvcf_lite.runtime import docker_logs, swarm_logs
from nvcf_lite.runtime import swarm_calls as calls
from nvcf_lite.runtime.base import (
    ContainerInfo,
    ContainerSpec,
    PullProgress,
    RegistryAuth,
    RuntimeFailure,
)
from nvcf_lite.runtime.docker import DockerRuntime
from nvcf_lite.runtime.nvml import Gpu, GpuInventory
from nvcf_lite.runtime.swarm_calls import SwarmNode

NO_PAUSE = "a Swarm service cannot be paused (set scheduler.warm_pool_s = 0 with runtime swarm)"


class SwarmRuntime:
    """`ContainerRuntime` on a Docker Swarm, through one manager's engine."""

    def __init__(
        self, engine: DockerRuntime, *, stop_grace_s: float = 10.0, start_timeout_s: float = 120.0
    ) -> None:
        self.engine = engine
        self.stop_grace_s = stop_grace_s
        self.start_timeout_s = start_timeout_s

    @classmethod
    def connect(
        cls,
        base_url: str | None = None,
        *,
        pull_timeout_s: float = 120.0,
        stop_grace_s: float = 10.0,
        start_timeout_s: float = 120.0,
    ) -> SwarmRuntime:
        engine = DockerRuntime.connect(base_url, pull_timeout_s=pull_timeout_s)
        return cls(engine, stop_grace_s=stop_grace_s, start_timeout_s=start_timeout_s)

    async def ping(self) -> str | None:
        reason = await self.engine.ping()
        if reason is not None:
            return reason
        try:
            await self.nodes()
        except RuntimeFailure as exc:
            return f"the engine at {self.engine.base_url} is no swarm manager: {exc}"
        return None

    async def image_exists(self, image: str) -> bool:
        return await self.engine.image_exists(image)

    async def ensure_image(self, image: str, auth: RegistryAuth | None = None) -> bool:
        return await self.engine.ensure_image(image, auth)

    def pull_progress(self, image: str) -> PullProgress | None:
        return self.engine.pull_progress(image)

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        await self.ensure_image(spec.image)  # ImageNotFound before any service exists
        service = await self.engine.call(
            "service create",
            calls.create,
            spec,
            self.stop_grace_s,
            self.start_timeout_s,
            name=spec.name,
        )
        found = await self.inspect(service["ID"])
        if found is None:
            raise RuntimeFailure(f"service {spec.name} vanished as it started")
        return found

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        if not container_id:
            return None
        return await self.engine.call("service inspect", calls.inspect, container_id)

    async def list_managed(self) -> list[ContainerInfo]:
        return await self.engine.call("service list", calls.list_managed)

    async def remove(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        await self.engine.call("service remove", calls.remove, container_id)

    async def stop(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        await self.engine.call("service scale", calls.scale_to_zero, container_id)

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        return await self.engine.call("service logs", swarm_logs.logs_tail, container_id, lines)

    async def logs(
        self, container_id: str, *, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[bytes]:
        api = await self.engine.call("service logs", lambda api: api)
        if follow:
            # A service's log follow waits for the service's next task, so it never ends by
            # itself: a stopped task's logs are read to their end instead, as a container's
            # follow ends once it has stopped.
            info = await self.inspect(container_id)
            follow = info is not None and info.state == "running"
        chunks = docker_logs.stream(
            lambda: swarm_logs.open_logs(api, container_id, tail, follow),
            lambda exc: RuntimeFailure(f"Docker service logs failed: {exc}"),
        )
        async for chunk in chunks:
            yield chunk

    async def pause(self, container_id: str) -> None:
        raise RuntimeFailure(NO_PAUSE)

    async def unpause(self, container_id: str) -> None:
        raise RuntimeFailure(NO_PAUSE)

    async def nodes(self) -> list[SwarmNode]:
        return await self.engine.call("node list", calls.nodes)

    async def unavailable_units(self) -> set[str]:
        try:
            found = await self.nodes()
        except RuntimeFailure:
            return set()  # the manager is away: placement fails at create, with why
        return {uuid for node in found if not node.usable for uuid in node.gpus}

    async def gpu_inventory(self) -> GpuInventory:
        """Every node's GPUs (its generic resources), named and sized by its labels."""
        try:
            found = await self.nodes()
        except RuntimeFailure as exc:
            return GpuInventory(gpus=[], error=f"swarm nodes could not be listed: {exc}")
        gpus: list[Gpu] = []
        for node in sorted(found, key=lambda n: n.name):
            name = node.labels.get(calls.LABEL_GPU_NAME, "NVIDIA GPU")
            memory = int(node.labels.get(calls.LABEL_GPU_MEMORY_MB, "0") or 0)
            for uuid in sorted(node.gpus):
                gpus.append(
                    Gpu(index=len(gpus), uuid=uuid, name=name, memory_mb=memory, node=node.name)
                )
        error = None if gpus else f"no swarm node declares {calls.GPU_KIND} generic resources"
        return GpuInventory(gpus=gpus, error=error, nodes=[n.name for n in found])

    async def close(self) -> None:
        await self.engine.close()
