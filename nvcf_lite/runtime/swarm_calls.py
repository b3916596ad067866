"""The blocking docker-py calls of SwarmRuntime (runtime/swarm.py runs each in a worker thread
through DockerRuntime.call, which translates Docker's exceptions): one replicated service of
one replica per instance, its newest task read back as the instance's container, and the
nodes with their `NVIDIA-GPU` generic resources as the GPU inventory.

A service is the unit because it is what Swarm places, restarts and removes as one; one per
instance (not one per version with N replicas) so that nvcf-lite keeps choosing each
instance's exact GPUs and node, its own id, and which instance goes on scale-down, exactly as
on the local engine. Its restart policy is `none`: the Scheduler replaces failed instances.
"""

from __future__ import annotations

import time
from typing import Any

import docker.errors
import docker.types
import msgspec

from nvcf_lite.runtime.base import LABEL_MANAGED, ContainerInfo, ContainerSpec, ImageNotFound
from nvcf_lite.runtime.docker_calls import epoch

GPU_KIND = "NVIDIA-GPU"  # NVIDIA's name for GPUs as Swarm generic resources
LABEL_NODE_NAME = "nvcf-lite.node-name"  # node label: the name nvcf-lite shows (else hostname)
LABEL_GPU_NAME = "nvcf-lite.gpu-name"  # node label: its GPUs' product name, as NVML says it
LABEL_GPU_MEMORY_MB = "nvcf-lite.gpu-memory-mb"  # node label: MiB of each of its GPUs
LABEL_PORTS = "nvcf-lite.ports"  # service label: its container ports (host networking)
_STARTING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"}
_STARTING |= {"starting"}
_DEFAULT_SHM = 64 * 1024 * 1024
Doc = dict[str, Any]


class SwarmNode(msgspec.Struct, frozen=True):
    id: str
    name: str
    address: str
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    role: str
    gpus: list[str]  # the UUIDs of its NVIDIA-GPU generic resources
    labels: dict[str, str]

    @property
    def usable(self) -> bool:
        return self.state == "ready" and self.availability == "active"

    def text(self) -> str:
        return f"node {self.name} ({self.address})"


def nodes(api: Any) -> list[SwarmNode]:
    return [_node(n) for n in api.nodes()]


def _node(doc: Doc) -> SwarmNode:
    spec, desc, status = doc.get("Spec") or {}, doc.get("Description") or {}, doc["Status"]
    labels = spec.get("Labels") or {}
    resources = (desc.get("Resources") or {}).get("GenericResources") or []
    gpus = [
        r["NamedResourceSpec"]["Value"]
        for r in resources
        if (r.get("NamedResourceSpec") or {}).get("Kind") == GPU_KIND
    ]
    return SwarmNode(
        id=doc["ID"],
        name=labels.get(LABEL_NODE_NAME) or desc.get("Hostname") or doc["ID"][:12],
        address=status.get("Addr") or "",
        state=status.get("State") or "unknown",
        availability=spec.get("Availability") or "active",
        role=spec.get("Role") or "worker",
        gpus=gpus,
        labels=labels,
    )


def create(api: Any, spec: ContainerSpec, stop_grace_s: float, start_timeout_s: float) -> Doc:
    """Create the service and wait until its task runs (or ended); returns the service."""
    placement = docker.types.Placement(constraints=_constraints(api, spec))
    task = docker.types.TaskTemplate(
        container_spec=_container_spec(spec, stop_grace_s),
        resources=_resources(spec),
        restart_policy=docker.types.RestartPolicy(condition="none"),
        placement=placement,
        networks=[{"Target": "host"}] if spec.network_mode == "host" else None,
    )
    ports = [] if spec.network_mode == "host" else spec.ports
    created = api.create_service(
        task,
        name=spec.name,
        labels={**spec.labels, LABEL_MANAGED: "true", LABEL_PORTS: ",".join(map(str, spec.ports))},
        mode=docker.types.ServiceMode("replicated", replicas=1),
        endpoint_spec={
            "Ports": [{"Protocol": "tcp", "TargetPort": p, "PublishMode": "host"} for p in ports]
        },
    )
    service_id: str = created["ID"]
    try:
        return _wait_started(api, service_id, start_timeout_s)
    except BaseException:
        remove(api, service_id)
        raise


def _constraints(api: Any, spec: ContainerSpec) -> list[str]:
    """The node that holds the instance's GPUs (nvcf-lite placed them), else any node."""
    if not spec.gpu_device_ids:
        return []
    wanted = set(spec.gpu_device_ids)
    for node in nodes(api):
        if wanted <= set(node.gpus):
            return [f"node.id=={node.id}"]
    raise docker.errors.APIError(f"no swarm node has the GPUs {sorted(wanted)}")


def _container_spec(spec: ContainerSpec, stop_grace_s: float) -> docker.types.ContainerSpec:
    mounts = [
        docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
        for m in spec.mounts
    ]
    if spec.shm_bytes is not None:
        mounts.append(docker.types.Mount("/dev/shm", None, type="tmpfs", tmpfs_size=spec.shm_bytes))
    return docker.types.ContainerSpec(
        spec.image,
        args=spec.args,
        env=dict(spec.env),
        labels={**spec.labels, LABEL_MANAGED: "true"},
        mounts=mounts,
        stop_grace_period=int(stop_grace_s * 1e9),
        stop_signal="SIGTERM",
    )


def _resources(spec: ContainerSpec) -> docker.types.Resources:
    """Limits as the local engine gives them, reserved as well (so Swarm places by them), and
    the GPUs as a count of `NVIDIA-GPU` generic resources on the chosen node."""
    gpus = {GPU_KIND: len(spec.gpu_device_ids)} if spec.gpu_device_ids else None
    return docker.types.Resources(
        cpu_limit=spec.nano_cpus,
        mem_limit=spec.memory_bytes,
        cpu_reservation=spec.nano_cpus,
        mem_reservation=spec.memory_bytes,
        generic_resources=gpus,
    )


def _wait_started(api: Any, service_id: str, timeout_s: float) -> Doc:
    """Until its task runs or ended (a placement Swarm cannot make waits, up to timeout_s)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        task = newest_task(api.tasks(filters={"service": service_id}))
        status = (task or {}).get("Status") or {}
        state = status.get("State", "new")
        if task is not None and state not in _STARTING:
            err = status.get("Err") or ""
            if state == "rejected" and "No such image" in err:
                raise ImageNotFound(f"image is not present on the node: {err}")
            return dict(api.inspect_service(service_id))
        if time.monotonic() > deadline:
            why = status.get("Err") or status.get("Message") or "no task yet"
            raise docker.errors.APIError(
                f"no swarm node started the task within {timeout_s:g} s (task {state}: {why})"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def newest_task(tasks: list[Doc]) -> Doc | None:
    return max(tasks, key=lambda t: t.get("Version", {}).get("Index", 0), default=None)


def inspect(api: Any, service_id: str) -> ContainerInfo | None:
    try:
        service = api.inspect_service(service_id)
    except docker.errors.NotFound:
        return None
    tasks = api.tasks(filters={"service": service["ID"]})
    by_id = {n.id: n for n in nodes(api)}
    return info(service, newest_task(tasks), by_id, full=True)


def list_managed(api: Any) -> list[ContainerInfo]:
    services = api.services(filters={"label": f"{LABEL_MANAGED}=true"})
    if not services:
        return []
    tasks: dict[str, list[Doc]] = {}
    for t in api.tasks():
        tasks.setdefault(t.get("ServiceID", ""), []).append(t)
    by_id = {n.id: n for n in nodes(api)}
    return [info(s, newest_task(tasks.get(s["ID"], [])), by_id, full=False) for s in services]


def info(service: Doc, task: Doc | None, by_id: dict[str, SwarmNode], full: bool) -> ContainerInfo:
    """The service as an instance container: its newest task's state, node and ports."""
    spec = service["Spec"]
    status = (task or {}).get("Status") or {}
    node = by_id.get((task or {}).get("NodeID", ""))
    state, error = _state(status, node, (task or {}).get("DesiredState", ""))
    ports = {
        p["TargetPort"]: p["PublishedPort"]
        for p in (status.get("PortStatus") or {}).get("Ports") or []
        if p.get("PublishedPort")
    }
    networks = spec.get("TaskTemplate", {}).get("Networks") or []
    if any(n.get("Target") == "host" for n in networks):
        ports = {p: p for p in _exposed(spec)}
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    limits = _limits(spec) if full else (None, None, None)
    return ContainerInfo(
        id=service["ID"],
        name=spec.get("Name", ""),
        labels=spec.get("Labels") or {},
        state=state,
        exit_code=exit_code if state in ("exited", "dead") else None,
        host_ports=ports,
        error=error,
        created=epoch(service.get("CreatedAt")),
        address=node.address if node else "127.0.0.1",
        node=node.name if node else None,
        nano_cpus=limits[0],
        memory_bytes=limits[1],
        shm_bytes=limits[2],
    )


def _state(status: Doc, node: SwarmNode | None, desired: str) -> tuple[str, str | None]:
    """Docker's container states from a task's: a task on a node that is down or drained is
    `dead`, with the node named (its container may live on, unreachable)."""
    state = status.get("State", "new")
    err = status.get("Err") or None
    if node is not None and state != "complete":
        why = f" (Swarm: {err})" if err else ""
        if node.state != "ready":
            return "dead", f"{node.text()} is {node.state}: lost{why}"
        if node.availability == "drain" and state in _STARTING | {"running", "shutdown"}:
            return "dead", f"{node.text()} is drained{why}"
    if state in _STARTING:
        return "created", err
    if state == "running":
        return ("running", None) if desired in ("running", "") else ("exited", err)
    if state in ("rejected", "orphaned"):
        return "dead", err or f"task {state}"
    return "exited", err  # complete, failed, shutdown, remove


def _exposed(spec: Doc) -> list[int]:
    ports = spec.get("Labels", {}).get(LABEL_PORTS, "")
    return [int(p) for p in ports.split(",") if p]


def _limits(spec: Doc) -> tuple[int | None, int | None, int | None]:
    template = spec.get("TaskTemplate", {})
    limits = (template.get("Resources") or {}).get("Limits") or {}
    shm = _DEFAULT_SHM
    for m in template.get("ContainerSpec", {}).get("Mounts") or []:
        if m.get("Type") == "tmpfs" and m.get("Target") == "/dev/shm":
            shm = (m.get("TmpfsOptions") or {}).get("SizeBytes") or _DEFAULT_SHM
    return limits.get("NanoCPUs") or None, limits.get("MemoryBytes") or None, shm


def remove(api: Any, service_id: str) -> None:
    try:
        api.remove_service(service_id)
    except docker.errors.NotFound:
        return


def scale_to_zero(api: Any, service_id: str) -> None:
    """Stop the task but keep the service (its logs stay readable through the manager)."""
    try:
        service = api.inspect_service(service_id)
        api.update_service(
            service_id,
            version=service["Version"]["Index"],
            mode=docker.types.ServiceMode("replicated", replicas=0),
            fetch_current_spec=True,
        )
    except docker.errors.NotFound:
        return
