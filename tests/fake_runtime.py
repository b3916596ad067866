"""A fake container runtime for scheduler unit tests.

Each "container" is a tiny asyncio HTTP server on 127.0.0.1, so the Scheduler's real health
prober talks to it. The image name picks the behaviour:
- `fake/echo`: health answers 200;
- `fake/unhealthy`: health answers 500;
- `fake/exit`: the container exits at once with code 1;
- `fake/missing`: the image does not exist (ImageNotFound);
- `fake/pull...`: not present until `ensure_image` "pulls" it: two layers over ~0.4 s, with
  `pull_progress` reporting them meanwhile (then it runs like `fake/echo`);
- `fake/pull-private...`: the same, but its registry wants `PRIVATE_AUTH`'s username and
  password (PullRefused without them or with others).
`contract` tests hold this fake to the same assertions as DockerRuntime.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator

import msgspec

from nvcf_lite.runtime.base import (
    LABEL_MANAGED,
    ContainerInfo,
    ContainerSpec,
    ImageNotFound,
    PullProgress,
    PullRefused,
    RegistryAuth,
    RuntimeFailure,
)

IMAGES = {"fake/echo", "fake/unhealthy", "fake/exit"}
PULLABLE = "fake/pull"
PRIVATE = "fake/pull-private"
PRIVATE_AUTH = RegistryAuth(registry="docker.io", username="puller", password="right")
LAYER_BYTES = 1000
PULL_STEP_S = 0.05
DOCKER_SHM_BYTES = 64 * 1024 * 1024  # /dev/shm when a spec sets no size, as Docker's default


class _Container:
    def __init__(self, cid: str, spec: ContainerSpec) -> None:
        self.id = cid
        self.spec = spec
        self.state = "created"
        self.exit_code: int | None = None
        self.server: asyncio.Server | None = None
        self.host_ports: dict[int, int] = {}
        self.logs = ""
        self.created = time.time()
        self.wrote = asyncio.Event()  # new output, or the container stopped

    def write(self, text: str) -> None:
        """The container prints `text`."""
        self.logs += text
        self.wrote.set()

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            id=self.id,
            name=self.spec.name,
            labels=dict(self.spec.labels, **{LABEL_MANAGED: "true"}),
            state=self.state,
            exit_code=self.exit_code,
            host_ports=dict(self.host_ports),
            created=self.created,
            nano_cpus=self.spec.nano_cpus,
            memory_bytes=self.spec.memory_bytes,
            shm_bytes=self.spec.shm_bytes or DOCKER_SHM_BYTES,
        )


class FakeRuntime:
    def __init__(self) -> None:
        self.containers: dict[str, _Container] = {}
        self.created: list[ContainerSpec] = []
        self._ids = itertools.count(1)
        self.down: str | None = None  # set to make every call fail like a dead daemon
        self.pulls: dict[str, PullProgress] = {}
        self.pulled: set[str] = set()

    async def ping(self) -> str | None:
        return self.down

    async def image_exists(self, image: str) -> bool:
        return image in IMAGES or image in self.pulled

    async def ensure_image(self, image: str, auth: RegistryAuth | None = None) -> bool:
        self._check()
        if await self.image_exists(image):
            return False
        if not image.startswith(PULLABLE):
            raise ImageNotFound(f"image '{image}' is not present locally and could not be pulled")
        given = (auth.username, auth.password) if auth else None
        if image.startswith(PRIVATE) and given != (PRIVATE_AUTH.username, PRIVATE_AUTH.password):
            raise PullRefused(image, auth, "unauthorized: authentication required")
        for done in range(1, 9):  # two layers of LAYER_BYTES, a quarter at a time
            await asyncio.sleep(PULL_STEP_S)
            self.pulls[image] = PullProgress(
                image=image,
                layers_done=done // 4,
                layers_total=2,
                bytes_done=done * LAYER_BYTES // 4,
                bytes_total=2 * LAYER_BYTES,
                status="Pull complete" if done % 4 == 0 else "Downloading",
                elapsed_s=done * PULL_STEP_S,
                idle_s=0.0,
            )
        await asyncio.sleep(PULL_STEP_S)
        del self.pulls[image]
        self.pulled.add(image)
        return True

    def pull_progress(self, image: str) -> PullProgress | None:
        return self.pulls.get(image)

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        self._check()
        await self.ensure_image(spec.image)
        if any(c.spec.name == spec.name for c in self.containers.values()):
            raise RuntimeFailure(f"a container named '{spec.name}' already exists")
        c = _Container(f"fake{next(self._ids):060d}", spec)
        self.containers[c.id] = c
        self.created.append(spec)
        if spec.image == "fake/exit":
            c.state, c.exit_code, c.logs = "exited", 1, "fatal: cannot start\n"
            return c.info()
        healthy = spec.image == "fake/echo" or spec.image.startswith(PULLABLE)
        status = b"200 OK" if healthy else b"500 Internal Server Error"

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                _print_log_field(c, body)
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                )
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        c.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = c.server.sockets[0].getsockname()[1]
        c.host_ports = {p: port for p in spec.ports}
        c.state = "running"
        c.write(f"function_server: listening on :{spec.ports[0] if spec.ports else 8000}\n")
        return c.info()

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        self._check()
        c = self.containers.get(container_id)
        return c.info() if c else None

    async def list_managed(self) -> list[ContainerInfo]:
        self._check()
        # as Docker's listing: no limits (only inspect reads the HostConfig)
        unlimited = {"nano_cpus": None, "memory_bytes": None, "shm_bytes": None}
        return [msgspec.structs.replace(c.info(), **unlimited) for c in self.containers.values()]

    async def remove(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        c = self.containers.pop(container_id, None)
        if c and c.server:
            c.server.close()

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        c = self.containers.get(container_id)
        return c.logs if c else ""

    async def stop(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        c = self.containers.get(container_id)
        if c is not None and c.state in ("running", "paused"):
            if c.server:
                c.server.close()
            c.state, c.exit_code = "exited", 0
            c.wrote.set()

    async def logs(
        self, container_id: str, *, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[bytes]:
        self._check()
        c = self.containers.get(container_id)
        if c is None:
            return
        lines = c.logs.splitlines(keepends=True)
        shown = lines if tail is None else lines[len(lines) - tail :] if tail > 0 else []
        sent = len(c.logs)
        if shown:
            yield "".join(shown).encode()
        while follow and c.state in ("created", "running", "paused"):
            await c.wrote.wait()
            c.wrote.clear()
            if len(c.logs) > sent:
                yield c.logs[sent:].encode()
                sent = len(c.logs)

    async def pause(self, container_id: str) -> None:
        self.containers[container_id].state = "paused"

    async def unpause(self, container_id: str) -> None:
        self.containers[container_id].state = "running"

    async def unavailable_units(self) -> set[str]:
        return set()

    async def close(self) -> None:
        for c in self.containers.values():
            if c.server:
                c.server.close()

    def crash(self, container_id: str, code: int = 3) -> None:
        """Make a running container exit (as a crash would)."""
        c = self.containers[container_id]
        if c.server:
            c.server.close()
        c.state, c.exit_code = "exited", code
        c.write("crashed\n")

    def _check(self) -> None:
        if self.down:
            raise RuntimeFailure(self.down)


def _print_log_field(c: _Container, body: bytes) -> None:
    """As scripts/function_server.py: a JSON body's `log` field is printed to stderr."""
    try:
        doc = json.loads(body) if body.startswith(b"{") else None
    except ValueError:
        return
    if isinstance(doc, dict) and doc.get("log"):
        c.write(f"function_server: -: {doc['log']}\n")
