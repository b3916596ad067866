"""One function instance: its container spec, launch, health probing and failure reasons.

Probing starts a few tens of milliseconds apart and backs off to 0.5 s, so a fast container
is seen ready within ~50 ms of answering; after readiness it is probed every
`health_interval_s` and reported unhealthy after `unhealthy_threshold` misses in a row.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec

from nvcf_lite.config import DockerConfig
from nvcf_lite.domain.artifact_refs import ArtifactMount, ModelServer, container_command
from nvcf_lite.domain.function_fields import duration_seconds
from nvcf_lite.domain.instance_types import Limits
from nvcf_lite.domain.placement import GpuUnit
from nvcf_lite.models import (
    ColdStart,
    FunctionVersion,
    InstanceState,
    InstanceView,
    PullProgress,
    now_iso,
)
from nvcf_lite.runtime.base import (
    LABEL_DEPLOYMENT,
    LABEL_FUNCTION_ID,
    LABEL_INSTANCE_ID,
    LABEL_NAMESPACE,
    LABEL_VERSION_ID,
    ContainerSpec,
    Mount,
)
from nvcf_lite.workers.http_client import ConnectFailed, Pool, UpstreamError

LABEL_SPEC_ID = "nvcf-lite.spec-id"
LABEL_UNITS = "nvcf-lite.gpu-units"
LABEL_GPU = "nvcf-lite.gpu"
LABEL_INSTANCE_TYPE = "nvcf-lite.instance-type"
# the limits it was given, so that an adopted container counts what it holds, whatever the
# config says now
LABEL_CPU_MILLIS = "nvcf-lite.cpu-millis"
LABEL_MEMORY_MB = "nvcf-lite.memory-mb"
LABEL_SHM_MB = "nvcf-lite.shm-mb"
MIB = 1024 * 1024
SECRETS_DIR = "/var/secrets"  # the container reads /var/secrets/secrets.json (spec §2.8)
INF_DIR = "/var/inf"  # per-request asset and large-output folders live below this


class HealthSpec(msgspec.Struct, frozen=True):
    protocol: str
    uri: str
    port: int
    timeout_s: float
    expected_status: int


class LaunchInfo(msgspec.Struct, frozen=True):
    """What a container of one function version needs, read from the registry."""

    function_id: str
    version_id: str
    nca_id: str
    name: str
    inference_url: str
    image: str
    args: str | None
    env: dict[str, str]
    inference_port: int
    health: HealthSpec
    secrets: dict[str, object]
    # its models and resources, mounted read-only under /config (spec §4.1)
    mounts: tuple[ArtifactMount, ...] = ()
    # why it can never start as registered (a model missing from the store), if so
    unresolved: str | None = None


def launch_info(
    version: FunctionVersion,
    secrets: dict[str, object],
    *,
    mounts: Sequence[ArtifactMount] = (),
    unresolved: str | None = None,
    model_server: ModelServer | None = None,
) -> LaunchInfo:
    health = version.health
    image, args = container_command(version, model_server)
    return LaunchInfo(
        function_id=version.function_id,
        version_id=version.version_id,
        nca_id=version.nca_id,
        name=version.name,
        inference_url=version.inference_url,
        image=image,
        args=args,
        env={e.key: e.value for e in version.container_environment or ()},
        inference_port=version.effective_port,
        health=HealthSpec(
            protocol=health.protocol,
            uri=health.uri,
            port=health.port,
            timeout_s=duration_seconds(health.timeout),
            expected_status=health.expected_status_code,
        ),
        secrets=secrets,
        mounts=tuple(mounts),
        unresolved=unresolved,
    )


class Instance:
    """The Scheduler's live record of one instance (its container is the durable truth)."""

    def __init__(
        self,
        *,
        instance_id: str,
        deployment_id: str,
        function_id: str,
        version_id: str,
        spec_id: str,
        gpu: str,
        instance_type: str,
        units: list[GpuUnit],
        limits: Limits | None = None,
        container_id: str | None = None,
        host_port: int | None = None,
        health_port: int | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.deployment_id = deployment_id
        self.function_id = function_id
        self.version_id = version_id
        self.spec_id = spec_id
        self.gpu = gpu
        self.instance_type = instance_type
        self.units = units
        self.limits = limits  # None: no CPU or memory limits (a host without sizing)
        self.container_id = container_id
        self.host_port = host_port
        self.health_port = health_port
        # where its ports are published: 127.0.0.1, or its Swarm node's address (and name)
        self.address = "127.0.0.1"
        self.node: str | None = None
        self.state = InstanceState.STARTING
        self.error: str | None = None
        self.created_at = self.updated_at = now_iso()
        self.started = time.monotonic()
        self.in_flight = 0
        self.removing = False
        self.paused_at: float | None = None
        # cold-start timings (seconds): explained to the requests that waited for it
        self.cold_kind = "cold"
        self.launch_t0 = self.started
        self.pull_s = 0.0
        self.start_s = 0.0
        self.healthy_s = 0.0
        self.ready_mono = 0.0
        self.first_byte_s: float | None = None  # its first request's forward -> first byte
        self.slots = 1  # maxRequestConcurrency of its spec
        self.function_name = ""
        self.inference_url = "/"
        self.image: str | None = None  # the image its launch is making present (pulling)
        self.task: asyncio.Task[None] | None = None

    def log_ids(self) -> dict[str, str]:
        """The ids of this instance's log lines (`extra=`, or `logs.bind(**...)`)."""
        return {
            "function_id": self.function_id,
            "version_id": self.version_id,
            "instance_id": self.instance_id,
        }

    def set_state(self, state: InstanceState, error: str | None = None) -> None:
        self.state, self.error, self.updated_at = state, error, now_iso()

    @property
    def live(self) -> bool:
        return self.state in (InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY)

    @property
    def awaiting_image(self) -> str | None:
        """The image a starting instance waits for, until its container exists."""
        starting = self.state == InstanceState.STARTING and self.container_id is None
        return self.image if starting else None

    def view(self, image_pull: PullProgress | None = None) -> InstanceView:
        return InstanceView(
            instance_id=self.instance_id,
            function_id=self.function_id,
            version_id=self.version_id,
            deployment_id=self.deployment_id,
            gpu_specification_id=self.spec_id,
            gpu=self.gpu,
            instance_type=self.instance_type,
            state=self.state,
            gpu_uuids=[u.unit_id for u in self.units],
            container_id=self.container_id,
            host_port=self.host_port,
            host_address=self.address,
            node=self.node,
            error=self.error,
            created_at=self.created_at,
            updated_at=self.updated_at,
            age_s=round(time.monotonic() - self.started, 1),
            in_flight=self.in_flight,
            max_request_concurrency=self.slots,
            image_pull=image_pull,
            cold_start=self._cold_start(),
        )

    def _cold_start(self) -> ColdStart | None:
        if not self.ready_mono:
            return None
        return ColdStart(
            kind=self.cold_kind,
            image_pull_s=round(self.pull_s, 3),
            container_start_s=round(self.start_s, 3),
            first_healthy_s=round(self.healthy_s, 3),
            first_byte_s=None if self.first_byte_s is None else round(self.first_byte_s, 3),
        )


def container_spec(
    inst: Instance,
    info: LaunchInfo,
    docker: DockerConfig,
    secrets_dir: Path | None,
    inf_dir: Path,
) -> ContainerSpec:
    env = dict(info.env)
    env.update(
        {
            "NVCF_FUNCTION_ID": info.function_id,
            "NVCF_FUNCTION_VERSION_ID": info.version_id,
            "NVCF_FUNCTION_NAME": info.name,
            "NVCF_NCA_ID": info.nca_id,
            "NVCF_INSTANCETYPE": inst.instance_type,
            "NVCF_INSTANCETYPE_VALUE": inst.instance_type,
            "NVCF_INSTANCE_ID": inst.instance_id,
            "NVCF_BACKEND": "local",
            "NVCF_REGION": "local",
            "NVCF_ENV": "local",
            "NVCF_ASSET_DIR": f"{INF_DIR}/inputAssets",
            "NVCF_LARGE_OUTPUT_DIR": f"{INF_DIR}/response",
        }
    )
    if inst.units:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(u.unit_id for u in inst.units)
    physical = [u.unit_id for u in inst.units if u.physical]
    mounts = [Mount(source=str(inf_dir), target=INF_DIR)]
    if secrets_dir is not None:
        # The folder, not the file: an update renames a new secrets.json into it, which a
        # file bind mount would not show (it keeps the old inode).
        mounts.append(Mount(source=str(secrets_dir), target=SECRETS_DIR, read_only=True))
    mounts += [Mount(source=m.source, target=m.target, read_only=True) for m in info.mounts]
    ports = list(dict.fromkeys([info.inference_port, info.health.port]))
    slug = re.sub(r"[^a-zA-Z0-9_.-]", "-", info.name)[:40]
    limits = inst.limits
    return ContainerSpec(
        name=f"{docker.container_name_prefix}-{slug}-{inst.instance_id[:8]}",
        image=info.image,
        labels={
            LABEL_NAMESPACE: docker.namespace,
            LABEL_FUNCTION_ID: inst.function_id,
            LABEL_VERSION_ID: inst.version_id,
            LABEL_DEPLOYMENT: inst.deployment_id,
            LABEL_INSTANCE_ID: inst.instance_id,
            LABEL_SPEC_ID: inst.spec_id,
            LABEL_GPU: inst.gpu,
            LABEL_INSTANCE_TYPE: inst.instance_type,
            LABEL_UNITS: ",".join(f"{u.unit_id}" for u in inst.units),
            **limit_labels(limits),
        },
        env=env,
        args=shlex.split(info.args) if info.args else None,
        ports=ports,
        gpu_device_ids=physical or None,
        mounts=mounts,
        nano_cpus=limits.cpu_millis * 1_000_000 if limits else None,
        memory_bytes=limits.memory_mb * MIB if limits else None,
        shm_bytes=limits.shm_mb * MIB if limits else None,
    )


def limit_labels(limits: Limits | None) -> dict[str, str]:
    if limits is None:
        return {}
    return {
        LABEL_CPU_MILLIS: str(limits.cpu_millis),
        LABEL_MEMORY_MB: str(limits.memory_mb),
        LABEL_SHM_MB: str(limits.shm_mb),
    }


def labelled_limits(labels: dict[str, str]) -> Limits | None:
    """The limits a container was created with, from its labels (None: it has none)."""
    try:
        return Limits(
            cpu_millis=int(labels[LABEL_CPU_MILLIS]),
            memory_mb=int(labels[LABEL_MEMORY_MB]),
            shm_mb=int(labels[LABEL_SHM_MB]),
        )
    except (KeyError, ValueError):
        return None


class Prober:
    """HTTP health probes against <address>:<published port> (a fresh connection each, so a
    probe sees what a new client would)."""

    async def probe(self, port: int, health: HealthSpec, address: str = "127.0.0.1") -> int | None:
        """The status code the health URI answered, or None when nothing answered (a gRPC
        health check: `expected_status` when it answers SERVING)."""
        if health.protocol.lower() == "grpc":
            from nvcf_lite.workers.grpc_health import health_status  # grpcio, when needed

            return await health_status(address, port, health.timeout_s, health.expected_status)
        pool = Pool(address, port)
        deadline = asyncio.get_running_loop().time() + health.timeout_s
        try:
            resp = await pool.request(
                "GET", health.uri.encode("latin-1"), b"", b"", deadline=deadline
            )
            try:
                await resp.read()
            finally:
                resp.close()
            return resp.status
        except (ConnectFailed, UpstreamError, OSError, UnicodeEncodeError):
            return None
        finally:
            pool.close()

    async def close(self) -> None:
        pass


async def wait_ready(
    prober: Prober,
    port: int,
    health: HealthSpec,
    deadline_s: float,
    exited: Callable[[], Awaitable[str | None]] | None = None,
    address: str = "127.0.0.1",
) -> str | None:
    """Probe until ready; None when ready, else why it never became ready."""
    start = time.monotonic()
    delay, last_check, last_status = 0.02, start, None
    while True:
        last_status = await prober.probe(port, health, address)
        if last_status == health.expected_status:
            return None
        now = time.monotonic()
        if exited is not None and now - last_check >= 1.0:
            last_check = now
            reason = await exited()
            if reason:
                return reason
        if now - start > deadline_s:
            return _not_ready(health, last_status, deadline_s)
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _not_ready(health: HealthSpec, last_status: int | None, deadline_s: float) -> str:
    if health.protocol.lower() == "grpc":
        answered = "answered, not SERVING," if last_status else "did not answer"
        return (
            f"gRPC health check timed out: grpc.health.v1.Health/Check on port {health.port} "
            f"{answered} within {deadline_s:g} s"
        )
    answered = f"answered {last_status}" if last_status else "did not answer"
    return (
        f"health check timed out: {health.uri} on port {health.port} {answered} "
        f"(expected {health.expected_status}) within {deadline_s:g} s"
    )
