"""G1 cluster groups and G2 supported GPUs (spec §2.6), derived from this host's inventory.

Each instance type also says what an instance of it gets: in its `description` text, and in
the nvcf-lite fields `cpuCores`, `memoryMb` and `shmSizeMb` (clients read only the names).
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

from litestar import Request, get

from nvcf_lite.api.security import scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.instance_types import MILLI
from nvcf_lite.domain.placement import CPU, Host


class InstanceTypeWire(Wire, kw_only=True):
    name: str
    description: str
    default: bool
    cpu_cores: float | None = None  # nvcf-lite: the CPU quota of each instance
    memory_mb: int | None = None  # nvcf-lite: its memory limit, MiB
    shm_size_mb: int | None = None  # nvcf-lite: its /dev/shm, MiB


class GpuWire(Wire, kw_only=True):
    name: str
    instance_types: list[InstanceTypeWire]


class ClusterWire(Wire, kw_only=True):
    k8s_version: str
    id: str
    name: str
    gpu_uuids: list[str] = []  # nvcf-lite: the GPUs on this node (runtime swarm)


class ClusterGroupWire(Wire, kw_only=True):
    id: str
    name: str
    nca_id: str
    authorized_nca_ids: list[str]
    gpus: list[GpuWire]
    clusters: list[ClusterWire]


class ClusterGroupsResponse(Wire, kw_only=True):
    cluster_groups: list[ClusterGroupWire]


def _gpu(host: Host, gpu: str) -> GpuWire:
    types = []
    for index, name in enumerate(host.instance_types(gpu)):
        if gpu == CPU:
            text = "one container with no GPU"
        else:
            units = index + 1
            text = f"{units}x {gpu} ({host.memory_mb(gpu) // 1024} GiB each)"
        limits = host.limits(name)
        if limits is None:
            types.append(InstanceTypeWire(name=name, description=text, default=index == 0))
            continue
        types.append(
            InstanceTypeWire(
                name=name,
                description=f"{text}; {limits.text()}",
                default=index == 0,
                cpu_cores=limits.cpu_millis / MILLI,
                memory_mb=limits.memory_mb,
                shm_size_mb=limits.shm_mb,
            )
        )
    return GpuWire(name=gpu, instance_types=types)


@get("/clusterGroups", opt=scopes("list_cluster_groups"), tags=["cluster groups"])
async def cluster_groups(request: Request[Any, Any, Any]) -> ClusterGroupsResponse:
    host: Host = services_of(request).host
    nca_id: str = services_of(request).nca_id
    hostname = socket.gethostname()
    group = ClusterGroupWire(
        id=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"nvcf-lite.{nca_id}.{hostname}")),
        name="local",
        nca_id=nca_id,
        # the server's one group, owned by the configured account, used by every account
        authorized_nca_ids=list(dict.fromkeys([nca_id, request.state.principal.nca_id])),
        gpus=[_gpu(host, g) for g in host.gpu_names()],
        clusters=_clusters(host, hostname),
    )
    return ClusterGroupsResponse(cluster_groups=[group])


def _clusters(host: Host, hostname: str) -> list[ClusterWire]:
    """This host; or with docker.runtime swarm each node with GPUs, and the GPUs on it."""
    nodes = [n for n in host.nodes() if n]
    if not nodes:
        return [ClusterWire(k8s_version="none (Docker)", id="local", name=hostname)]
    return [
        ClusterWire(
            k8s_version="none (Docker Swarm)",
            id=node,
            name=node,
            gpu_uuids=[u.unit_id for u in host.units if u.node == node],
        )
        for node in nodes
    ]


@get("/supportedGpus", opt=scopes("register_function"), tags=["cluster groups"])
async def supported_gpus(request: Request[Any, Any, Any]) -> list[dict[str, str]]:
    host: Host = services_of(request).host
    return [{"gpu": g, "backend": "local"} for g in host.gpu_names()]


CLUSTER_GROUP_HANDLERS = [cluster_groups, supported_gpus]
