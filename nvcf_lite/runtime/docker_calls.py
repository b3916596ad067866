"""The blocking docker-py calls of DockerRuntime (runtime/docker.py runs each in a worker
thread and translates its exceptions): create+start, inspect, list, stop+remove, logs, and
the streamed image pull with its per-layer progress."""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime
from typing import Any

import docker
import docker.auth
import docker.errors
import docker.types
import docker.utils
import requests

from nvcf_lite.runtime.base import LABEL_MANAGED, ContainerInfo, ContainerSpec, RegistryAuth
from nvcf_lite.runtime.pull_progress import PullStalled, PullStop, PullStopped, PullTracker

DEFAULT_STOP_SIGNAL = "SIGTERM"
_NEVER = "0001-01-01T00:00:00Z"  # Docker's zero time: never started / never finished
_EXITED = re.compile(r"^Exited \((-?\d+)\)")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$")
_IPV4_ANY = ("127.0.0.1", "0.0.0.0", "")  # bindings reachable on 127.0.0.1
Doc = dict[str, Any]
# What engines say when a registry refuses a pull for its credentials: "no basic auth
# credentials" (none sent), "unauthorized: authentication required" / "401 Unauthorized"
# (none or wrong ones), Docker Hub's "pull access denied ... may require 'docker login'".
_AUTH_REFUSED = re.compile(
    r"(?i)no basic auth credentials|unauthorized|authentication required|pull access denied"
    r"|denied: requested access|\b401\b"
)


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
        **_limits(spec),
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


def _limits(spec: ContainerSpec) -> dict[str, int]:
    """create_host_config's limit arguments; memswap = memory: no swap beyond the limit."""
    limits: dict[str, int] = {}
    if spec.nano_cpus is not None:
        limits["nano_cpus"] = spec.nano_cpus
    if spec.memory_bytes is not None:
        limits["mem_limit"] = limits["memswap_limit"] = spec.memory_bytes
    if spec.shm_bytes is not None:
        limits["shm_size"] = spec.shm_bytes
    return limits


def inspect(api: Any, container_id: str) -> ContainerInfo | None:
    try:
        doc: Doc = api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    state: Doc = doc.get("State") or {}
    status = str(state.get("Status", "unknown"))
    code = state.get("ExitCode")
    finished = status in ("exited", "dead") or bool(code)
    cpus, memory, shm = _held_limits(doc.get("HostConfig") or {})
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
        created=epoch(doc.get("Created")),
        nano_cpus=cpus,
        memory_bytes=memory,
        shm_bytes=shm,
    )


def _held_limits(host_config: Doc) -> tuple[int | None, int | None, int | None]:
    """NanoCpus, Memory and ShmSize; 0 (Docker's "none") is None."""
    return (
        host_config.get("NanoCpus") or None,
        host_config.get("Memory") or None,
        host_config.get("ShmSize") or None,
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
        created=float(row.get("Created") or 0),
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


def epoch(value: object) -> float:
    """Docker's RFC 3339 time (nanoseconds, Z) as epoch seconds; 0.0 if absent."""
    match = _RFC3339.match(str(value or ""))
    if match is None:
        return 0.0
    stamp = datetime.fromisoformat(f"{match.group(1)}{(match.group(2) or '')[:7]}+00:00")
    return stamp.timestamp()


def docker_time(value: object) -> str | None:
    return str(value) if value and value != _NEVER else None


# Image pulls ---------------------------------------------------------------------------------

log = logging.getLogger("nvcf_lite.runtime")


def pull(
    api: Any,
    tracker: PullTracker,
    connect_timeout_s: float,
    stall_s: float,
    stop: PullStop,
    auth: RegistryAuth | None = None,
) -> None:
    """POST /images/create streamed; raises PullStalled after `stall_s` without progress (also
    when nothing at all arrives for that long: the read timeout), PullStopped once `stop` is
    set, and docker's APIError for an error line. `auth` goes to the registry; without it, the
    credentials of this user's Docker config file for the image's registry, if any."""
    repo, tag = docker.utils.parse_repository_tag(tracker.image)
    registry, _ = docker.auth.resolve_repository_name(repo)
    headers = {}
    header = registry_auth_header(auth) if auth else docker.auth.get_config_header(api, registry)
    if header:
        headers["X-Registry-Auth"] = header
    url = f"{api.base_url}/v{api.api_version}/images/create"
    params = {"fromImage": repo, "tag": tag or "latest"}
    timeout = (connect_timeout_s, stall_s)
    with api.post(url, params=params, headers=headers, stream=True, timeout=timeout) as resp:
        try:
            resp.raise_for_status()
        except requests.exceptions.HTTPError as exc:
            docker.errors.create_api_error_from_http_exception(exc)  # raises APIError
        stop.attach(_raw_socket(api, resp))
        try:
            _follow(resp, tracker, stall_s, stop)
        except requests.exceptions.RequestException as exc:
            if stop.is_set():
                raise PullStopped(tracker.image) from exc
            if "timed out" not in str(exc).lower():
                raise
            raise PullStalled(_stalled(tracker, stall_s)) from exc
        if stop.is_set():  # the shut-down socket ended the stream early
            raise PullStopped(tracker.image)


def registry_auth_header(auth: RegistryAuth) -> str:
    """The engine's X-Registry-Auth header: base64url JSON (username, password, server)."""
    config = {"username": auth.username, "password": auth.password, "serveraddress": auth.registry}
    encoded: bytes = docker.auth.encode_header(config)
    return encoded.decode("ascii")


def refused_for_auth(engine_text: str) -> bool:
    """Whether the engine's pull error says the registry wanted (other) credentials."""
    return _AUTH_REFUSED.search(engine_text) is not None


def _raw_socket(api: Any, resp: Any) -> Any:
    try:
        raw = api._get_raw_response_socket(resp)  # docker-py's own way to a stream's socket
    except (AttributeError, docker.errors.DockerException):
        return None
    return getattr(raw, "_sock", raw)  # a unix socket's SocketIO wraps the socket


def _follow(resp: Any, tracker: PullTracker, stall_s: float, stop: PullStop) -> None:
    for raw in resp.iter_lines():
        if stop.is_set():
            raise PullStopped(tracker.image)
        line: dict[str, Any] = json.loads(raw) if raw else {}
        if "error" in line:
            raise docker.errors.APIError(tracker.image, resp, str(line["error"]))
        milestone = tracker.feed(line)
        if milestone:
            log.info("%s", milestone)
        if tracker.idle_s() > stall_s:
            raise PullStalled(_stalled(tracker, stall_s))


def _stalled(tracker: PullTracker, stall_s: float) -> str:
    p = tracker.snapshot()
    return (
        f"no progress for {stall_s:g} s (docker.pull_timeout_s) at {p.layers_done}/"
        f"{p.layers_total} layers, {p.bytes_done / 1e6:.1f} of {p.bytes_total / 1e6:.1f} MB, "
        f"last status {p.status!r}; is the registry reachable and answering?"
    )
