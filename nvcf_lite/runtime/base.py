"""The seam between the scheduler and a container engine.

`ContainerRuntime` is what the Scheduler needs from an engine; `DockerRuntime` implements it
for real and tests use a fake for scheduler unit tests. Engines translate their own exceptions
into `RuntimeFailure` at their edge, with a message a user can act on.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from nvcf_lite.models import PullProgress as PullProgress  # reported by runtimes
from nvcf_lite.models import RegistryAuth as RegistryAuth  # sent with pulls

LABEL_PREFIX = "nvcf-lite."
LABEL_MANAGED = "nvcf-lite.managed"
LABEL_FUNCTION_ID = "nvcf-lite.function-id"
LABEL_VERSION_ID = "nvcf-lite.version-id"
LABEL_DEPLOYMENT = "nvcf-lite.deployment"
LABEL_INSTANCE_ID = "nvcf-lite.instance-id"
LABEL_NAMESPACE = "nvcf-lite.namespace"  # docker.namespace of the server that owns it
DEFAULT_BASE_URL = "unix:///var/run/docker.sock"


def engine_url(base_url: str | None) -> str:
    """The engine to talk to: `docker.base_url`, else $DOCKER_HOST, else the local socket."""
    return base_url or os.environ.get("DOCKER_HOST") or DEFAULT_BASE_URL


class RuntimeFailure(Exception):
    """A container engine operation failed; `str(exc)` is the user-facing reason."""


class ImageNotFound(RuntimeFailure):
    """The image is neither local nor pullable."""


class PullRefused(ImageNotFound):
    """The registry refused the pull for authentication: it wants credentials, or it rejected
    the ones sent (`auth`). `detail` is what the engine said."""

    def __init__(self, image: str, auth: RegistryAuth | None, detail: str) -> None:
        sent = f"with the credentials for {auth.registry}" if auth else "without credentials"
        super().__init__(f"pull of {image} {sent} was refused by the registry: {detail}")
        self.image, self.auth, self.detail = image, auth, detail


class Mount(msgspec.Struct, frozen=True):
    source: str
    target: str
    read_only: bool = False


class ContainerSpec(msgspec.Struct, frozen=True):
    """Everything needed to create one instance container."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str] = {}
    args: list[str] | None = None
    ports: list[int] = []  # container ports to publish on 127.0.0.1 with ephemeral host ports
    gpu_device_ids: list[str] | None = None  # None: no DeviceRequest at all
    mounts: list[Mount] = []
    network_mode: str | None = None  # None: default bridge with published ports; "host" allowed
    # Limits (None: the engine's default, no limit): a CFS quota in billionths of a CPU
    # (Docker's NanoCpus), memory with no swap beyond it, and the size of /dev/shm.
    nano_cpus: int | None = None
    memory_bytes: int | None = None
    shm_bytes: int | None = None


class ContainerInfo(msgspec.Struct, frozen=True):
    id: str
    name: str
    labels: dict[str, str]
    state: str  # Docker's State.Status: created, running, paused, restarting, exited, dead
    exit_code: int | None = None
    host_ports: dict[int, int] = {}  # container port -> host port on `address`
    # where its ports are published: 127.0.0.1 on the local engine, the node's own address
    # for a Swarm task; `node` names that node (None on the local engine)
    address: str = "127.0.0.1"
    node: str | None = None
    error: str | None = None  # the engine's State.Error, if any
    started_at: str | None = None
    finished_at: str | None = None
    oom_killed: bool = False
    created: float = 0.0  # when the container was created, epoch seconds
    # its limits as the engine holds them (inspect only; None: none, or a listing)
    nano_cpus: int | None = None
    memory_bytes: int | None = None
    shm_bytes: int | None = None


class ContainerRuntime(Protocol):
    async def ping(self) -> str | None:
        """None when the engine answers, else why it does not."""
        ...

    async def image_exists(self, image: str) -> bool: ...

    async def ensure_image(self, image: str, auth: RegistryAuth | None = None) -> bool:
        """Make the image present locally, pulling it once if missing (sending `auth` to its
        registry when given).

        Returns True when a pull was needed. Raises PullRefused when the registry refuses it
        for authentication, ImageNotFound / RuntimeFailure otherwise. A pull fails only when
        it stops progressing (the engine's own stall window), never for being slow.
        """
        ...

    def pull_progress(self, image: str) -> PullProgress | None:
        """The progress of the pull of `image` under way now, or None when none is."""
        ...

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo: ...

    async def inspect(self, container_id: str) -> ContainerInfo | None: ...

    async def list_managed(self) -> list[ContainerInfo]:
        """Every container carrying LABEL_MANAGED, running or not."""
        ...

    async def remove(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        """Stop (SIGTERM, then SIGKILL after the timeout) and remove; absent is fine."""
        ...

    async def logs_tail(self, container_id: str, lines: int = 20) -> str: ...

    async def stop(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        """Stop (SIGTERM, then SIGKILL after the timeout) and keep the container (its logs);
        absent or already stopped is fine."""
        ...

    def logs(
        self, container_id: str, *, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[bytes]:
        """The container's output (stdout and stderr, in order), in chunks: the last `tail`
        lines (None: all), then with `follow` what it prints until it stops or the iterator
        is closed. Raises RuntimeFailure; a container that is gone yields nothing."""
        ...

    async def pause(self, container_id: str) -> None: ...

    async def unpause(self, container_id: str) -> None: ...

    async def unavailable_units(self) -> set[str]:
        """GPU unit ids that cannot take an instance now (on a node that is down or drained);
        a single-host engine has none."""
        ...

    async def close(self) -> None: ...


class UnavailableRuntime:
    """Stands in when no container engine is configured: every operation fails with why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def ping(self) -> str | None:
        return self.reason

    async def image_exists(self, image: str) -> bool:
        raise RuntimeFailure(self.reason)

    async def ensure_image(self, image: str, auth: RegistryAuth | None = None) -> bool:
        raise RuntimeFailure(self.reason)

    def pull_progress(self, image: str) -> PullProgress | None:
        return None

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        raise RuntimeFailure(self.reason)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        return None

    async def list_managed(self) -> list[ContainerInfo]:
        return []

    async def remove(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        return None

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        return ""

    async def stop(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        return None

    async def logs(
        self, container_id: str, *, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[bytes]:
        raise RuntimeFailure(self.reason)
        yield b""  # an async generator, like the real ones

    async def pause(self, container_id: str) -> None:
        raise RuntimeFailure(self.reason)

    async def unpause(self, container_id: str) -> None:
        raise RuntimeFailure(self.reason)

    async def unavailable_units(self) -> set[str]:
        return set()

    async def close(self) -> None:
        return None
