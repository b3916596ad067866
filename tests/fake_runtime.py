"""A fake container runtime for scheduler unit tests.

Each "container" is a tiny asyncio HTTP server on 127.0.0.1, so the Scheduler's real health
prober talks to it. The image name picks the behaviour:
- `fake/echo`: health answers 200;
- `fake/unhealthy`: health answers 500;
- `fake/exit`: the container exits at once with code 1;
- `fake/missing`: the image does not exist (ImageNotFound).
`contract` tests hold this fake to the same assertions as DockerRuntime.
"""

from __future__ import annotations

import asyncio
import itertools

from nvcf_lite.runtime.base import (
    LABEL_MANAGED,
    ContainerInfo,
    ContainerSpec,
    ImageNotFound,
    RuntimeFailure,
)

IMAGES = {"fake/echo", "fake/unhealthy", "fake/exit"}


class _Container:
    def __init__(self, cid: str, spec: ContainerSpec) -> None:
        self.id = cid
        self.spec = spec
        self.state = "created"
        self.exit_code: int | None = None
        self.server: asyncio.Server | None = None
        self.host_ports: dict[int, int] = {}
        self.logs = ""

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            id=self.id,
            name=self.spec.name,
            labels=dict(self.spec.labels, **{LABEL_MANAGED: "true"}),
            state=self.state,
            exit_code=self.exit_code,
            host_ports=dict(self.host_ports),
        )


class FakeRuntime:
    def __init__(self) -> None:
        self.containers: dict[str, _Container] = {}
        self.created: list[ContainerSpec] = []
        self._ids = itertools.count(1)
        self.down: str | None = None  # set to make every call fail like a dead daemon

    async def ping(self) -> str | None:
        return self.down

    async def image_exists(self, image: str) -> bool:
        return image in IMAGES

    async def ensure_image(self, image: str) -> bool:
        self._check()
        if image not in IMAGES:
            raise ImageNotFound(f"image '{image}' is not present locally and could not be pulled")
        return False

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
        status = b"200 OK" if spec.image == "fake/echo" else b"500 Internal Server Error"

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
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
        return c.info()

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        self._check()
        c = self.containers.get(container_id)
        return c.info() if c else None

    async def list_managed(self) -> list[ContainerInfo]:
        self._check()
        return [c.info() for c in self.containers.values()]

    async def remove(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        c = self.containers.pop(container_id, None)
        if c and c.server:
            c.server.close()

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        c = self.containers.get(container_id)
        return c.logs if c else ""

    async def pause(self, container_id: str) -> None:
        self.containers[container_id].state = "paused"

    async def unpause(self, container_id: str) -> None:
        self.containers[container_id].state = "running"

    async def close(self) -> None:
        for c in self.containers.values():
            if c.server:
                c.server.close()

    def crash(self, container_id: str, code: int = 3) -> None:
        """Make a running container exit (as a crash would)."""
        c = self.containers[container_id]
        if c.server:
            c.server.close()
        c.state, c.exit_code, c.logs = "exited", code, "crashed\n"

    def _check(self) -> None:
        if self.down:
            raise RuntimeFailure(self.down)
