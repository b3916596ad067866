"""Reading container output (runtime `logs`, `stop`, and runtime/container_logs.py), held to the
same assertions on the fake runtime, on Docker and on a Swarm (its instances reached at their
node's address): tails, a follow that sees a line printed
after it started and ends when closed, a stopped container that keeps its output, and the
selection of a function's containers by their labels with instance-id prefixes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable

from docker_support import http_request
from runtime_support import Kind, healthy, spec

from nvcf_lite.runtime.base import (
    LABEL_FUNCTION_ID,
    LABEL_INSTANCE_ID,
    LABEL_NAMESPACE,
    LABEL_VERSION_ID,
    ContainerSpec,
)
from nvcf_lite.runtime.container_logs import ContainerLogs


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def until_in(needle: bytes, got: list[bytes], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while needle not in b"".join(got):
        assert time.monotonic() < deadline, f"{needle!r} not seen in {b''.join(got)!r}"
        await asyncio.sleep(0.02)


def say(address: str, port: int, text: str) -> None:
    """Make the echo function print a line (its `log` control field)."""
    body = json.dumps({"log": text}).encode()
    answer = http_request(
        f"http://{address}:{port}/echo", "POST", body, {"Content-Type": "application/json"}
    )
    assert answer.status == 200


async def printed(kind: Kind, container_id: str, text: bytes) -> bytes:
    for _ in range(200):
        out = await collect(kind.runtime.logs(container_id))
        if text in out:
            return out
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} never printed")


async def test_tail_and_a_follow_that_sees_a_new_line(kind: Kind) -> None:
    info = await kind.runtime.create_and_start(spec(kind, "echo", "logs-a"))
    port = info.host_ports[8000]
    assert await healthy(port, info.address)
    everything = await printed(kind, info.id, b"listening on :8000")
    assert await collect(kind.runtime.logs(info.id, tail=0)) == b""
    assert await collect(kind.runtime.logs(info.id, tail=1)) == everything.splitlines(True)[-1]

    got: list[bytes] = []
    chunks = kind.runtime.logs(info.id, tail=0, follow=True)

    async def read() -> None:
        async for chunk in chunks:
            got.append(chunk)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)  # the follow is open before the line is printed
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(say, info.address, port, marker)
    await until_in(marker.encode(), got)
    assert b"listening" not in b"".join(got)  # tail=0: only what came after
    reader.cancel()
    await asyncio.wait_for(asyncio.gather(reader, return_exceptions=True), 5)
    # closing the follow closed the engine stream: no thread is left blocked reading it
    await until(lambda: not any(t.name == "container-logs" for t in threading.enumerate()))


async def until(cond: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_stopped_container_keeps_its_output(kind: Kind) -> None:
    info = await kind.runtime.create_and_start(spec(kind, "echo", "logs-b"))
    assert await healthy(info.host_ports[8000], info.address)
    await printed(kind, info.id, b"listening")
    await kind.runtime.stop(info.id, stop_timeout_s=1)
    stopped = await kind.runtime.inspect(info.id)
    assert stopped is not None and stopped.state == "exited"
    assert b"listening on :8000" in await collect(kind.runtime.logs(info.id))
    # a follow of a stopped container ends by itself
    out = await asyncio.wait_for(collect(kind.runtime.logs(info.id, follow=True)), 10)
    assert b"listening" in out
    await kind.runtime.stop(info.id, stop_timeout_s=1)  # stopped already: fine
    await kind.runtime.remove(info.id, stop_timeout_s=1)
    assert await collect(kind.runtime.logs(info.id)) == b""  # gone: nothing


def labelled(kind: Kind, name: str, fid: str, vid: str, ns: str) -> ContainerSpec:
    base = spec(kind, "echo", name)
    labels = {LABEL_FUNCTION_ID: fid, LABEL_VERSION_ID: vid, LABEL_NAMESPACE: ns}
    return ContainerSpec(
        name=base.name,
        image=base.image,
        labels={**base.labels, **labels, LABEL_INSTANCE_ID: f"{name}-{uuid.uuid4().hex[:6]}"},
        ports=[8000],
    )


async def test_a_functions_containers_are_found_by_labels_and_prefixed(kind: Kind) -> None:
    ns, fid, other = kind.images["run"], str(uuid.uuid4()), str(uuid.uuid4())
    v1, v2 = str(uuid.uuid4()), str(uuid.uuid4())
    first = await kind.runtime.create_and_start(labelled(kind, "i1", fid, v1, ns))
    second = await kind.runtime.create_and_start(labelled(kind, "i2", fid, v2, ns))
    await kind.runtime.create_and_start(labelled(kind, "i3", other, v1, ns))
    for c in (first, second):
        assert await healthy(c.host_ports[8000], c.address)
        await printed(kind, c.id, b"listening")
    logs = ContainerLogs(kind.runtime, ns)
    targets = await logs.targets(fid)
    assert [t.container_id for t in targets] == [first.id, second.id]
    assert [t.version_id for t in await logs.targets(fid, [v2])] == [v2]
    one = await logs.targets(fid, instance_id="i1-")
    assert [t.container_id for t in one] == [first.id]
    assert await logs.targets(fid, instance_id="nope") == []
    assert await ContainerLogs(kind.runtime, "another-namespace").targets(fid) == []

    text = (await collect(logs.lines(fid, targets))).decode()
    lines = text.splitlines()
    i1, i2 = targets[0].instance_id, targets[1].instance_id
    assert lines == [f"{i} | function_server: listening on :8000" for i in (i1, i2)]
    alone = (await collect(logs.lines(fid, one))).decode()
    assert alone == "function_server: listening on :8000\n"  # one container: no prefix


async def test_a_follow_picks_up_an_instance_started_after_it(kind: Kind) -> None:
    ns, fid, vid = kind.images["run"], str(uuid.uuid4()), str(uuid.uuid4())
    first = await kind.runtime.create_and_start(labelled(kind, "f1", fid, vid, ns))
    assert await healthy(first.host_ports[8000], first.address)
    logs = ContainerLogs(kind.runtime, ns)
    got: list[bytes] = []

    async def read() -> None:
        async for line in logs.lines(fid, await logs.targets(fid), tail=0, follow=True):
            got.append(line)

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.3)
        second = await kind.runtime.create_and_start(labelled(kind, "f2", fid, vid, ns))
        (target,) = [t for t in await logs.targets(fid) if t.container_id == second.id]
        # a new instance is followed from its first line, prefixed with its id
        await until_in(f"{target.instance_id} | function_server: listening".encode(), got)
        marker = f"first-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(say, first.address, first.host_ports[8000], marker)
        (first_target,) = [t for t in await logs.targets(fid) if t.container_id == first.id]
        await until_in(f"{first_target.instance_id} | function_server: -: {marker}".encode(), got)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_instance_lines_tags_each_line_with_its_instance(kind: Kind) -> None:
    """The telemetry shipper's follow: (instance id, line) pairs; containers created before
    `since` from then on, otherwise from their first line."""
    ns, fid, vid = kind.images["run"], str(uuid.uuid4()), str(uuid.uuid4())
    info = await kind.runtime.create_and_start(labelled(kind, "s1", fid, vid, ns))
    assert await healthy(info.host_ports[8000], info.address)
    await printed(kind, info.id, b"listening")
    logs = ContainerLogs(kind.runtime, ns)
    (target,) = await logs.targets(fid)
    got: list[tuple[str, bytes]] = []

    async def read(since: float) -> None:
        async for pair in logs.instance_lines(fid, vid, since=since):
            got.append(pair)

    async def seen(pair: tuple[str, bytes]) -> None:
        await until(lambda: pair in got, limit_s=10.0)

    reader = asyncio.create_task(read(since=time.time() + 60))  # created before: from now on
    try:
        await asyncio.sleep(0.3)
        marker = f"tagged-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(say, info.address, info.host_ports[8000], marker)
        await seen((target.instance_id, f"function_server: -: {marker}".encode()))
        assert all(b"listening" not in line for _, line in got)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    got.clear()
    reader = asyncio.create_task(read(since=0.0))  # created after: from its first line
    try:
        await seen((target.instance_id, b"function_server: listening on :8000"))
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
