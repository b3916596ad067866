"""The mechanics under a log follow, on the fake runtime and stubs: new instances are looked for
on a deadline however chatty the others are, the server's `stopping` ends every follow, a stream
the consumer left while it was still opening is closed, and a shared image pull logs no
instance's ids."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fake_runtime import FakeRuntime

from nvcf_lite import logs
from nvcf_lite.runtime import docker_logs
from nvcf_lite.runtime.base import (
    LABEL_FUNCTION_ID,
    LABEL_INSTANCE_ID,
    LABEL_NAMESPACE,
    LABEL_VERSION_ID,
    ContainerSpec,
)
from nvcf_lite.runtime.container_logs import RESCAN_S, ContainerLogs
from nvcf_lite.runtime.docker import DockerRuntime

NS = "follow-tests"


async def started(runtime: FakeRuntime, fid: str, iid: str) -> str:
    labels = {
        LABEL_FUNCTION_ID: fid,
        LABEL_VERSION_ID: "v",
        LABEL_NAMESPACE: NS,
        LABEL_INSTANCE_ID: iid,
    }
    info = await runtime.create_and_start(ContainerSpec(name=iid, image="fake/echo", labels=labels))
    return info.id


async def until_in(needle: bytes, got: list[bytes], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while needle not in b"".join(got):
        assert time.monotonic() < deadline, f"{needle!r} not seen in {b''.join(got)[-300:]!r}"
        await asyncio.sleep(0.01)


async def test_a_replacement_is_found_while_another_instance_is_chatty() -> None:
    runtime, fid, now = FakeRuntime(), str(uuid.uuid4()), [0.0]
    chatty = await started(runtime, fid, "chatty")
    logs_ = ContainerLogs(runtime, NS, clock=lambda: now[0])
    got: list[bytes] = []

    async def read() -> None:
        async for line in logs_.lines(fid, await logs_.targets(fid), tail=0, follow=True):
            got.append(line)

    async def chatter() -> None:
        while True:
            runtime.containers[chatty].write("busy\n")
            await asyncio.sleep(0.005)  # far more often than the real RESCAN_S

    tasks = [asyncio.create_task(read()), asyncio.create_task(chatter())]
    try:
        await until_in(b"chatty | busy", got)
        await started(runtime, fid, "replacement")
        now[0] += RESCAN_S  # the deadline passes while lines keep arriving
        await until_in(b"replacement | function_server: listening", got)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_stopping_ends_every_follow() -> None:
    runtime, fid, stopping = FakeRuntime(), str(uuid.uuid4()), asyncio.Event()
    await started(runtime, fid, "quiet")
    logs_ = ContainerLogs(runtime, NS, stopping=stopping)
    got: list[bytes] = []

    async def read() -> None:
        async for line in logs_.lines(fid, await logs_.targets(fid), follow=True):
            got.append(line)

    reader = asyncio.create_task(read())
    await until_in(b"quiet | function_server: listening", got)
    assert not reader.done()  # a quiet function: the follow stays open
    stopping.set()
    await asyncio.wait_for(reader, 2)  # ended, not cancelled
    # a follow asked for once the server is stopping ends at once too
    targets = await logs_.targets(fid)

    async def late() -> list[bytes]:
        return [line async for line in logs_.lines(fid, targets, follow=True)]

    assert len(await asyncio.wait_for(late(), 2)) <= 1


class StubStream:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return iter([b"never read\n"])

    def close(self) -> None:
        self.closed.set()


async def test_a_stream_opened_after_the_consumer_left_is_closed() -> None:
    opening, release, stub = threading.Event(), threading.Event(), StubStream()

    def open_stream() -> StubStream:
        opening.set()
        release.wait(5)
        return stub

    chunks = docker_logs.stream(open_stream, lambda exc: exc)
    first = asyncio.ensure_future(chunks.__anext__())
    assert await asyncio.to_thread(opening.wait, 5)
    first.cancel()  # the client hung up while the engine had not answered yet
    await asyncio.gather(first, return_exceptions=True)
    await chunks.aclose()
    release.set()  # now the open returns: the thread must close what it got
    assert await asyncio.to_thread(stub.closed.wait, 5)


class Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.ids.append(logs.record_ids(record))


async def test_a_shared_pull_logs_no_instances_ids() -> None:
    runtime = DockerRuntime("unix:///nonexistent.sock", api_timeout_s=1, pull_timeout_s=1)
    seen, logger = Seen(), logging.getLogger("nvcf_lite.test_pull")
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)

    async def absent(image: str) -> bool:
        return False

    async def pull(image: str, auth: Any = None) -> None:
        logger.info("pulling %s", image)
        await asyncio.sleep(0.05)

    stubs: Any = runtime
    stubs.image_exists, stubs._pull = absent, pull

    async def launch(instance_id: str) -> None:
        logs.bind(instance_id=instance_id, function_id="f1")
        await runtime.ensure_image("nvcf-lite-test/shared:1")

    try:
        await asyncio.gather(asyncio.create_task(launch("i1")), asyncio.create_task(launch("i2")))
    finally:
        logger.removeHandler(seen)
    assert seen.ids == [{}]  # one pull for both, about neither instance
