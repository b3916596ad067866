"""A function's container output, for `nvcf-lite logs` and `GET .../functions/{id}/logs`.

The containers are found by their labels alone (function, version, instance id and the
server's `docker.namespace`), so the CLI works from the engine while the server is down, and
the output covers every container that still exists: running instances, paused ones and the
stopped containers of failed instances the scheduler keeps (`docker.failed_containers_kept`).
Containers are shown oldest first; a line is prefixed with its instance id when more than
one container is shown (or may be, while following). `follow` shows what the running ones
print from then on, and picks up instances started meanwhile (a replacement after a crash),
until interrupted, or until the server's `stopping` event is set (an open follow must not hold
a shutdown up: granian drains open connections before the app's shutdown runs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection

import msgspec

from nvcf_lite.errors import Unavailable
from nvcf_lite.runtime.base import (
    LABEL_FUNCTION_ID,
    LABEL_INSTANCE_ID,
    LABEL_NAMESPACE,
    LABEL_VERSION_ID,
    ContainerRuntime,
    RuntimeFailure,
)

RUNNING = ("created", "running", "paused", "restarting")
RESCAN_S = 2.0  # while following: how often to look for new instances
_STOP = object()  # in a follow's queue: the server is shutting down


class LogTarget(msgspec.Struct, frozen=True):
    """One container whose output is shown."""

    container_id: str
    instance_id: str
    version_id: str
    state: str
    created: float


class ContainerLogs:
    def __init__(
        self,
        runtime: ContainerRuntime,
        namespace: str,
        *,
        stopping: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.stopping = stopping  # set: every follow ends (the server is shutting down)
        self.clock = clock

    async def targets(
        self,
        function_id: str,
        version_ids: Collection[str] | None = None,
        instance_id: str | None = None,
    ) -> list[LogTarget]:
        """The containers of the function (of these versions; of the instance whose id is or
        starts with `instance_id`), oldest first. Raises Unavailable without an engine."""
        found = []
        try:
            containers = await self.runtime.list_managed()
        except RuntimeFailure as exc:
            raise Unavailable(f"cannot list the function's containers: {exc}") from exc
        for c in containers:
            labels = c.labels
            if labels.get(LABEL_NAMESPACE, "default") != self.namespace:
                continue
            if labels.get(LABEL_FUNCTION_ID) != function_id:
                continue
            version, instance = labels.get(LABEL_VERSION_ID, ""), labels.get(LABEL_INSTANCE_ID, "")
            if version_ids is not None and version not in version_ids:
                continue
            if instance_id and not instance.startswith(instance_id):
                continue
            found.append(LogTarget(c.id, instance, version, c.state, c.created))
        return sorted(found, key=lambda t: (t.created, t.instance_id))

    async def lines(
        self,
        function_id: str,
        targets: list[LogTarget],
        *,
        version_ids: Collection[str] | None = None,
        instance_id: str | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[bytes]:
        """The output of `targets`, line by line (the last `tail` lines of each; None: all).

        With `follow`, the stopped containers' output comes first, then the running ones'
        as they print it, merged by line, until the iterator is closed (like `docker compose
        logs -f`) or `stopping` is set; the function's containers are looked up again every
        RESCAN_S (however much the others print) and new ones followed from their first line.
        """
        prefix = len(targets) > 1 or (follow and not instance_id)
        for target in targets:
            if not follow or target.state not in RUNNING:
                async for line in self._lines(target, tail, False, prefix):
                    yield line
        if not follow:
            return
        running = [t for t in targets if t.state in RUNNING]
        known = {t.container_id for t in targets}

        async def rescan() -> list[LogTarget]:
            now = await self.targets(function_id, version_ids, instance_id)
            new = [t for t in now if t.container_id not in known]
            known.update(t.container_id for t in new)
            return new

        async for line in self._follow(running, tail, prefix, rescan):
            yield line

    async def instance_lines(
        self, function_id: str, version_id: str, *, since: float
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Follow one version's output as (instance id, line without its newline), for the
        telemetry shipper: `lines` with `follow`, its instance prefix taken off again.

        Containers that exist already are followed from now on if any was created before
        `since` (epoch seconds: their earlier output is taken as shipped), else from their
        first line; instances started later always from their first line.
        """
        targets = await self.targets(function_id, {version_id})
        tail = 0 if any(t.created < since for t in targets) else None
        follow = self.lines(function_id, targets, version_ids={version_id}, tail=tail, follow=True)
        try:
            async for line in follow:  # a follow without an instance: every line is prefixed
                instance_id, _, text = line.partition(b" | ")
                yield instance_id.decode(), text.removesuffix(b"\n")
        finally:
            close = getattr(follow, "aclose", None)
            if close is not None:
                await close()

    async def _follow(
        self,
        running: list[LogTarget],
        tail: int | None,
        prefix: bool,
        rescan: Callable[[], Awaitable[list[LogTarget]]],
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1024)
        tasks: set[asyncio.Task[None]] = set()

        async def pump(target: LogTarget, lines: int | None) -> None:
            try:
                async for line in self._lines(target, lines, True, prefix):
                    await queue.put(line)
            except Exception as exc:
                await queue.put(exc)

        def start(target: LogTarget, lines: int | None) -> None:
            task = asyncio.create_task(pump(target, lines), name=f"logs {target.instance_id}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def stop_when_stopping(stopping: asyncio.Event) -> None:
            await stopping.wait()
            await queue.put(_STOP)

        if self.stopping is not None:
            watch = asyncio.create_task(stop_when_stopping(self.stopping), name="logs stopping")
            tasks.add(watch)
        for target in running:
            start(target, tail)
        try:
            rescan_at = self.clock() + RESCAN_S
            while True:
                wait_s = rescan_at - self.clock()
                if wait_s <= 0:
                    for target in await rescan():
                        start(target, None)  # a new instance: from its first line
                    rescan_at = self.clock() + RESCAN_S
                    continue
                try:  # not wait_for: on 3.11 it may swallow a cancel racing a line
                    async with asyncio.timeout(wait_s):
                        item = await queue.get()
                except TimeoutError:
                    continue
                if item is _STOP:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _lines(
        self, target: LogTarget, tail: int | None, follow: bool, prefix: bool
    ) -> AsyncIterator[bytes]:
        head = f"{target.instance_id} | ".encode() if prefix else b""
        pending = b""
        chunks = self.runtime.logs(target.container_id, tail=tail, follow=follow)
        try:
            async for chunk in chunks:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield head + line + b"\n"
        except RuntimeFailure as exc:
            raise Unavailable(
                f"cannot read the logs of instance {target.instance_id}: {exc}"
            ) from exc
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        if pending:
            yield head + pending + b"\n"
