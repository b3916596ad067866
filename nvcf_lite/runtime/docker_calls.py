"""The blocking docker-py calls of DockerRuntime (runtime/docker.py runs each in a worker
thread and translates its exceptions): create+start, inspect, list, stop+remove, logs."""

from __future__ import annotations

import math
import re
from typing import Any

import docker
import docker.errors
import docker.types

from nvcf_lite.runtime.base import LABEL_MANAGED, ContainerInfo, ContainerSpec

DEFAULT_STOP_SIGNAL = "SIGTERM"
_NEVER = "0001-01-01T00:00:00Z"  # Docker's zero time: never started / never finished
_EXITED = re.compile(r"^Exited \((-?\d+)\)")
_IPV4_ANY = ("127.0.0.1", "0.0.0.0", "")  # bindings reachable on 127.0.0.1
Doc = dict[str, Any]


def image_exists(api: Any, image: str) -> bool:
    try:
        api.inspect_image(image)
    except docker.errors.NotFound:  # ImageNotFound is a NotFound
        return False
    return True


def create_and_start(api: Any, spec: ContainerSpec) -> ContainerInfo:
    host_network = spec.network_mode == "host"
    devices = None
    if spec.gpu_device_ids is not None:
        devices = [
            docker.types.DeviceRequest(
                driver="nvidia", device_ids=list(spec.gpu_device_ids), capabilities=[["gpu"]]
            )
        ]
    host_config = api.create_host_config(
        port_bindings=None if host_network else {p: ("127.0.0.1", None) for p in spec.ports},
        binds=[f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts],
        device_requests=devices,
        network_mode=spec.network_mode,
    )
    created = api.create_container(
        spec.image,
        command=spec.args,
        environment=dict(spec.env),
        labels={**spec.labels, LABEL_MANAGED: "true"},
        ports=None if host_network else list(spec.ports),
        host_config=host_config,
        name=spec.name,
        stop_signal=DEFAULT_STOP_SIGNAL,
        detach=True,
    )
    container_id: str = created["Id"]
    try:
        api.start(container_id)
    except BaseException:
        try:
            api.remove_container(container_id, force=True)
        except docker.errors.APIError:
            pass  # the start error is the one worth reporting
        raise
    info = inspect(api, container_id)  # host ports are bound only once started
    if info is None:
        raise docker.errors.NotFound(f"container {spec.name} vanished right after start")
    return info


def inspect(api: Any, container_id: str) -> ContainerInfo | None:
    try:
        doc: Doc = api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    state: Doc = doc.get("State") or {}
    status = str(state.get("Status", "unknown"))
    code = state.get("ExitCode")
    finished = status in ("exited", "dead") or bool(code)
    return ContainerInfo(
        id=doc["Id"],
        name=str(doc.get("Name", "")).lstrip("/"),
        labels=(doc.get("Config") or {}).get("Labels") or {},
        state=status,
        exit_code=int(code) if finished and code is not None else None,
        host_ports=host_ports((doc.get("NetworkSettings") or {}).get("Ports") or {}),
        error=state.get("Error") or None,
        started_at=docker_time(state.get("StartedAt")),
        finished_at=docker_time(state.get("FinishedAt")),
        oom_killed=bool(state.get("OOMKilled")),
    )


def info_from_summary(row: Doc) -> ContainerInfo:
    exited = _EXITED.match(str(row.get("Status", "")))
    ports = {
        int(p["PrivatePort"]): int(p["PublicPort"])
        for p in row.get("Ports") or []
        if p.get("PublicPort") and p.get("Type") == "tcp" and p.get("IP", "") in _IPV4_ANY
    }
    names = row.get("Names") or [""]
    return ContainerInfo(
        id=row["Id"],
        name=str(names[0]).lstrip("/"),
        labels=row.get("Labels") or {},
        state=str(row.get("State", "unknown")),
        exit_code=int(exited.group(1)) if exited else None,
        host_ports=ports,
    )


def host_ports(ports: dict[str, list[Doc] | None]) -> dict[int, int]:
    found: dict[int, int] = {}
    for key, bindings in ports.items():
        port, _, proto = key.partition("/")
        reachable = [b for b in bindings or [] if b.get("HostIp", "") in _IPV4_ANY]
        if proto == "tcp" and reachable and reachable[0].get("HostPort"):
            found[int(port)] = int(reachable[0]["HostPort"])
    return found


def stop_and_remove(api: Any, container_id: str, stop_timeout_s: float) -> None:
    try:
        api.stop(container_id, timeout=max(0, math.ceil(stop_timeout_s)))
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:
        pass  # e.g. a dead container: the forced removal below still ends it
    try:
        api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in explain(exc):
            raise


def logs_tail(api: Any, container_id: str, lines: int) -> str:
    try:
        raw: bytes = api.logs(container_id, stdout=True, stderr=True, tail=max(0, lines))
    except docker.errors.NotFound:
        return ""
    return raw.decode("utf-8", errors="replace")


def explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", errors="replace")
    return str(explanation or exc)


def docker_time(value: object) -> str | None:
    return str(value) if value and value != _NEVER else None
