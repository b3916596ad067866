"""nvcf_lite.workers.http_client against raw-byte servers on 127.0.0.1, on asyncio and uvloop.

Each test's server is an asyncio.Protocol that parses the request with httptools (so the test
sees exactly what arrived, and in how many reads) and answers with bytes the test writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import httptools  # type: ignore[import-untyped]
import pytest
import uvloop

from nvcf_lite.workers.http_client import (
    _HIGH_WATER,
    ConnectFailed,
    Pool,
    Response,
    UpstreamError,
    _Conn,
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_both_loops(
    fn: Callable[[], Coroutine[Any, Any, None]],
) -> Callable[[str], None]:
    """Run an async test once on each event loop (production runs uvloop)."""

    @pytest.mark.parametrize("loop", sorted(LOOPS))
    def test(loop: str) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(asyncio.wait_for(fn(), 20))

    test.__name__ = test.__qualname__ = fn.__name__
    test.__doc__ = fn.__doc__
    return test


# -- the raw server ----------------------------------------------------------------------------


@dataclass
class Req:
    method: str = ""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    reads: int = 0  # data_received calls it took to arrive


Handler = Callable[[Req, "Peer"], Coroutine[Any, Any, None]]


class Peer(asyncio.Protocol):
    """The server's side of one connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.req = Req()
        self.lost = asyncio.Event()
        self.paused = False
        self.resumed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.peers.append(self)

    def data_received(self, data: bytes) -> None:
        self.req.reads += 1
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.resumed.set()

    def pause_writing(self) -> None:
        self.paused = True
        self.resumed.clear()

    def resume_writing(self) -> None:
        self.paused = False
        self.resumed.set()

    def on_url(self, url: bytes) -> None:
        self.req.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.req.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.req.body += body

    def on_message_complete(self) -> None:
        req, self.req = self.req, Req()
        req.method = self.parser.get_method().decode()
        self.server.requests.append(req)
        task = asyncio.get_running_loop().create_task(self.server.handler(req, self))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0)."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.peers: list[Peer] = []
        self.requests: list[Req] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def connections(self) -> int:
        return len(self.peers)


@asynccontextmanager
async def serve(handler: Handler) -> Any:
    server = Server(handler)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Peer(server), "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        for task in list(server.tasks):
            task.cancel()
        srv.close()
        for peer in server.peers:
            if peer.transport is not None:
                peer.transport.abort()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def answer(data: bytes) -> Handler:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(data)

    return handler


async def until(cond: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + 3.0
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.005)


def soon(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def get(pool: Pool, target: bytes = b"/", *, deadline: float | None = None) -> Response:
    return await pool.request("GET", target, b"", b"", deadline=deadline or soon())


def only_conn(pool: Pool) -> _Conn:
    (conn,) = pool._conns
    return conn


class CountingTransport:
    """Wraps a client transport to count the writes of each request."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def writelines(self, data: Any) -> None:
        self.writes += 1
        self.inner.writelines(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def pending_deadline_timers(loop: asyncio.AbstractEventLoop) -> list[Any]:
    """Pending deadline timers (asyncio's loop only: uvloop does not expose its timers)."""
    scheduled = getattr(loop, "_scheduled", [])
    return [
        h
        for h in scheduled
        if not h.cancelled() and getattr(h._callback, "__name__", "") == "_on_deadline"
    ]


# -- requests on the wire ----------------------------------------------------------------------


@on_both_loops
async def test_request_has_host_content_length_and_goes_out_in_one_write() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await pool.request(
            "POST",
            b"/v1/run?x=1",
            b"Content-Type: application/json\r\nX-Dup: a\r\nX-Dup: b\r\n",
            b'{"in":1}',
            deadline=soon(),
        )
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        conn = pool._idle[-1]
        counting = CountingTransport(cast(asyncio.Transport, conn._transport))
        conn._transport = cast(asyncio.Transport, counting)
        resp = await pool.request("GET", b"/health", b"Accept: */*\r\n", b"", deadline=soon())
        await resp.read()
        resp.release()
        assert counting.writes == 1
        first, second = srv.requests
        assert (first.method, first.target, first.body) == ("POST", b"/v1/run?x=1", b'{"in":1}')
        assert first.headers == [
            (b"Host", b"127.0.0.1:%d" % srv.port),
            (b"Content-Length", b"8"),
            (b"Content-Type", b"application/json"),
            (b"X-Dup", b"a"),
            (b"X-Dup", b"b"),
        ]
        assert (second.method, second.target, second.body) == ("GET", b"/health", b"")
        assert (b"Content-Length", b"0") in second.headers
        assert (b"Accept", b"*/*") in second.headers
        # One write: the whole request arrived in the server's first read.
        assert first.reads == 1 and second.reads == 1
        pool.close()


@on_both_loops
async def test_large_request_body_arrives_whole() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port)
        body = bytes(range(256)) * 8192  # 2 MiB, sent without joining it to the head
        resp = await pool.request("PUT", b"/big", b"", body, deadline=soon())
        assert resp.status == 200
        await resp.read()
        resp.release()
        assert srv.requests[0].body == body
        assert (b"Content-Length", b"%d" % len(body)) in srv.requests[0].headers
        pool.close()


@on_both_loops
async def test_tcp_nodelay_is_set() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        await resp.read()
        sock = only_conn(pool)._transport.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        resp.release()
        pool.close()


# -- keep-alive --------------------------------------------------------------------------------


@on_both_loops
async def test_keepalive_reuses_one_connection() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port)
        for _ in range(3):
            resp = await get(pool)
            assert (resp.status, resp.reason) == (200, "OK")
            assert await resp.read() == b'{"ok":true}'
            resp.release()
            assert pool.idle == 1
        assert srv.connections == 1
        assert len(srv.requests) == 3
        pool.close()


@on_both_loops
async def test_idle_connections_are_lifo_and_concurrent_requests_open_more() -> None:
    gate = asyncio.Event()

    async def handler(req: Req, peer: Peer) -> None:
        await gate.wait()
        peer.write(ok(req.target))

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        tasks = [asyncio.ensure_future(get(pool, b"/%d" % i)) for i in range(3)]
        await until(lambda: len(srv.requests) == 3)
        gate.set()
        resps = await asyncio.gather(*tasks)
        for resp in resps:
            await resp.read()
            resp.release()
        assert srv.connections == 3 and pool.idle == 3
        last = pool._idle[-1]
        resp = await get(pool)
        assert only_conn_in_use(pool) is last
        await resp.read()
        resp.release()
        assert srv.connections == 3
        pool.close()


def only_conn_in_use(pool: Pool) -> _Conn:
    (conn,) = [c for c in pool._conns if c._busy]
    return conn


@on_both_loops
async def test_connection_close_answer_is_not_reused() -> None:
    async with serve(answer(ok(extra=b"Connection: close\r\n"))) as srv:
        pool = Pool("127.0.0.1", srv.port)
        for _ in range(2):
            resp = await get(pool)
            assert await resp.read() == b'{"ok":true}'
            resp.release()
            assert pool.idle == 0
        assert srv.connections == 2
        await until(lambda: all(p.lost.is_set() for p in srv.peers))


@on_both_loops
async def test_server_closing_an_idle_connection_drops_it_from_the_pool() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(ok())
        await asyncio.sleep(0.05)
        assert peer.transport is not None
        peer.transport.close()  # the container's own idle timeout

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        await resp.read()
        resp.release()
        assert pool.idle == 1
        await until(lambda: pool.idle == 0)
        resp = await get(pool)
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        assert srv.connections == 2
        pool.close()


@on_both_loops
async def test_idle_connections_close_after_keepalive_s() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port, keepalive_s=0.1)
        resp = await get(pool)
        await resp.read()
        resp.release()
        assert pool.idle == 1
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)
        assert pool.idle == 0 and not pool._conns
        resp = await get(pool)
        await resp.read()
        resp.release()
        assert srv.connections == 2
        pool.close()


@on_both_loops
async def test_unsolicited_bytes_on_an_idle_connection_drop_it() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(ok())
        await asyncio.sleep(0.05)
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        await resp.read()
        resp.release()
        await until(lambda: pool.idle == 0)
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)
        pool.close()


@on_both_loops
async def test_pool_close_closes_idle_and_busy_connections() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        if req.target == b"/slow":
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        else:
            peer.write(ok())

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        idle = await get(pool)
        slow = await get(pool, b"/slow")
        await idle.read()
        idle.release()
        assert pool.idle == 1
        pool.close()
        assert pool.idle == 0
        with pytest.raises(UpstreamError):
            await slow.read()
        slow.release()
        await until(lambda: all(p.lost.is_set() for p in srv.peers))
        resp = await get(pool)
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        assert srv.connections == 3
        pool.close()


# -- body framing ------------------------------------------------------------------------------


@on_both_loops
async def test_content_length_body_split_over_writes() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await asyncio.sleep(0.01)
        peer.write(b"ngth: 11\r\n\r\nhello")
        await asyncio.sleep(0.01)
        peer.write(b" world")

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        assert resp.headers == [("Content-Length", "11")]
        assert await resp.read() == b"hello world"
        resp.release()
        assert pool.idle == 1
        pool.close()


@on_both_loops
async def test_chunked_body_is_streamed_as_chunks_and_trailers_ignored() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.sleep(0.02)
        peer.write(b"6\r\n world\r\n")
        await asyncio.sleep(0.02)
        peer.write(b"0\r\nX-Trailer: yes\r\n\r\n")

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        assert [chunk async for chunk in resp] == [b"hello", b" world"]
        assert resp.headers == [("Transfer-Encoding", "chunked")]
        resp.release()
        assert pool.idle == 1
        resp = await get(pool)
        assert await resp.read() == b"hello world"
        resp.release()
        assert srv.connections == 1
        pool.close()


@on_both_loops
async def test_small_chunks_that_wait_unread_are_handed_over_as_one() -> None:
    """An SSE stream of one event per chunk, read by a consumer that fell behind: what has
    arrived goes on together (fewer writes downstream), in order, nothing waited for."""
    events = [b"data: %d\n\n" % i for i in range(50)]

    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        peer.write(b"5\r\nfirst\r\n")
        await asyncio.sleep(0.05)
        for event in events:
            peer.write(b"%x\r\n%s\r\n" % (len(event), event))
        peer.write(b"0\r\n\r\n")

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        got = []
        async for chunk in resp:
            got.append(chunk)
            if len(got) == 1:
                assert chunk == b"first"  # the first one leaves as soon as it is in
                await asyncio.sleep(0.3)  # meanwhile all 50 events arrive
        assert b"".join(got[1:]) == b"".join(events)
        assert len(got) < 10, len(got)
        resp.release()
        pool.close()


@on_both_loops
async def test_close_delimited_body_ends_at_eof_and_is_not_reused() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.02)
        peer.write(b"part two")
        assert peer.transport is not None
        peer.transport.close()

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        assert await resp.read() == b"part one, part two"
        resp.release()
        assert pool.idle == 0
        resp = await get(pool)
        assert [c async for c in resp] == [b"part one, ", b"part two"]
        resp.release()
        assert srv.connections == 2


@on_both_loops
async def test_body_is_passed_on_compressed() -> None:
    data = b"\x1f\x8b\x08\x00not really gzip"
    async with serve(answer(ok(data, b"Content-Encoding: gzip\r\n"))) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await pool.request("GET", b"/", b"Accept-Encoding: gzip\r\n", b"", deadline=soon())
        assert await resp.read() == data
        assert ("Content-Encoding", "gzip") in resp.headers
        resp.release()
        pool.close()


@on_both_loops
async def test_head_and_204_and_304_have_no_body_and_keep_the_connection() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        if req.method == "HEAD":
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        elif req.target == b"/head-chunked":
            peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        elif req.target == b"/204":
            peer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif req.target == b"/304":
            peer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n")
        else:
            peer.write(ok())

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await pool.request("HEAD", b"/", b"", b"", deadline=soon())
        assert resp.status == 200 and ("Content-Length", "1234") in resp.headers
        assert await resp.read() == b""
        resp.release()
        assert pool.idle == 1
        for target, status in [(b"/204", 204), (b"/304", 304), (b"/", 200)]:
            resp = await get(pool, target)
            assert resp.status == status
            body = await resp.read()
            assert body == (b'{"ok":true}' if status == 200 else b"")
            resp.release()
            assert pool.idle == 1
        resp = await pool.request("HEAD", b"/", b"", b"", deadline=soon())
        assert [c async for c in resp] == []
        resp.release()
        resp = await get(pool)
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        assert srv.connections == 1
        pool.close()


@on_both_loops
async def test_interim_answers_are_skipped() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0.02)
        peer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + ok())

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await pool.request(
            "POST", b"/", b"Expect: 100-continue\r\n", b"data", deadline=soon()
        )
        assert resp.status == 200
        assert [name for name, _ in resp.headers] == ["Content-Type", "Content-Length"]
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        assert pool.idle == 1
        pool.close()


@on_both_loops
async def test_headers_keep_order_duplicates_and_case() -> None:
    head = (
        b"HTTP/1.1 201 Very Fine\r\nX-B: 1\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n"
        b"x-A: caf\xe9\r\nContent-Length: 0\r\n\r\n"
    )
    async with serve(answer(head)) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        assert (resp.status, resp.reason) == (201, "Very Fine")
        assert resp.headers == [
            ("X-B", "1"),
            ("Set-Cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-A", "café"),
            ("Content-Length", "0"),
        ]
        resp.release()
        pool.close()


# -- flow control ------------------------------------------------------------------------------


@on_both_loops
async def test_large_body_is_read_in_chunks_with_bounded_buffering() -> None:
    size = 8 << 20
    payload = bytes(range(256)) * (size // 256)

    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        peer.write(payload)  # the server transport buffers what the socket will not take

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool, deadline=soon(15))
        conn = only_conn(pool)
        digest = hashlib.sha256()
        total, chunks, most = 0, 0, 0
        async for chunk in resp:
            digest.update(chunk)
            total += len(chunk)
            chunks += 1
            if chunks == 1:
                await asyncio.sleep(0.2)  # a slow consumer: the client must stop reading
                assert conn._paused
            most = max(most, conn._buffered)
        assert total == size and chunks > 8
        assert digest.digest() == hashlib.sha256(payload).digest()
        # bounded: the high-water mark plus at most one read past it
        assert most <= _HIGH_WATER + (1 << 20)
        resp.release()
        assert pool.idle == 1 and not conn._paused
        pool.close()


@on_both_loops
async def test_endless_body_pauses_reading_and_close_lets_the_server_see_the_client_leave() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        while not peer.lost.is_set():
            peer.write(block)
            if peer.paused:
                await peer.resumed.wait()
            await asyncio.sleep(0)

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        conn = only_conn(pool)
        it = aiter(resp)
        await anext(it)
        await until(lambda: conn._paused)
        await asyncio.sleep(0.1)
        assert conn._buffered <= _HIGH_WATER + (1 << 20)
        assert srv.peers[0].paused  # the server is held back, not the client's memory
        resp.close()
        resp.close()
        resp.release()
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)
        assert pool.idle == 0 and not pool._conns


@on_both_loops
async def test_release_without_reading_the_body_closes_the_connection() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        resp.release()
        resp.release()
        assert pool.idle == 0
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)
        resp = await get(pool)
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        assert srv.connections == 2 and pool.idle == 1
        assert await resp.read() == b""  # released: nothing left
        assert [c async for c in resp] == []
        pool.close()


# -- failures ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@on_both_loops
async def test_connection_refused_is_connect_failed() -> None:
    pool = Pool("127.0.0.1", free_port())
    with pytest.raises(ConnectFailed):
        await get(pool)
    assert pool.idle == 0 and not pool._conns


@contextmanager
def full_backlog() -> Iterator[int]:
    """A listening port whose accept queue is full: further connects hang (SYNs dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.settimeout(0.2)
            fillers.append(s)
            try:
                s.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.skip("this kernel accepts past a full backlog")
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


@on_both_loops
async def test_deadline_during_connect_is_connect_failed() -> None:
    with full_backlog() as port:
        pool = Pool("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectFailed, match="timed out"):
            await get(pool, deadline=soon(0.2))
        assert loop.time() - start < 1.5
        assert not pool._conns


@on_both_loops
async def test_deadline_already_passed_sends_nothing() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port)
        with pytest.raises(ConnectFailed):
            await get(pool, deadline=soon(-1))
        assert srv.connections == 0
        resp = await get(pool)
        await resp.read()
        resp.release()
        with pytest.raises(ConnectFailed):
            await get(pool, deadline=soon(-1))
        assert pool.idle == 1 and len(srv.requests) == 1
        pool.close()


@on_both_loops
async def test_deadline_during_head_is_upstream_error_and_drops_the_connection() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        if req.target == b"/slow":
            await asyncio.sleep(10)
        peer.write(ok())

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        await resp.read()
        resp.release()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamError, match="deadline"):
            await get(pool, b"/slow", deadline=soon(0.2))
        assert 0.15 < loop.time() - start < 1.5
        assert pool.idle == 0 and not pool._conns
        assert not pending_deadline_timers(loop)
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)
        resp = await get(pool)
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        assert srv.connections == 2
        pool.close()


@on_both_loops
async def test_deadline_during_body_is_upstream_error_and_drops_the_connection() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool, deadline=soon(0.2))
        assert resp.status == 200
        with pytest.raises(UpstreamError, match="deadline"):
            await resp.read()
        resp.release()
        assert pool.idle == 0 and not pool._conns
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)
        resp = await get(pool, deadline=soon(0.2))
        assert await anext(aiter(resp)) == b"0123456789"
        with pytest.raises(UpstreamError, match="deadline"):
            await anext(aiter(resp))
        resp.release()
        assert srv.connections == 2 and pool.idle == 0


@on_both_loops
async def test_deadline_timer_is_cancelled_when_the_answer_is_complete() -> None:
    async with serve(answer(ok())) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool, deadline=soon(0.1))
        assert only_conn(pool)._timer is None
        assert not pending_deadline_timers(asyncio.get_running_loop())
        await asyncio.sleep(0.2)  # past the deadline: nothing happens to a finished answer
        assert await resp.read() == b'{"ok":true}'
        resp.release()
        assert pool.idle == 1
        pool.close()


def _broken_before_answer(how: str) -> Callable[[], Coroutine[Any, Any, None]]:
    async def scenario() -> None:
        async def handler(req: Req, peer: Peer) -> None:
            if req.target == b"/break":
                if how == "reset":
                    peer.reset()
                else:
                    assert peer.transport is not None
                    peer.transport.close()
            else:
                peer.write(ok())

        async with serve(handler) as srv:
            pool = Pool("127.0.0.1", srv.port)
            resp = await get(pool)
            await resp.read()
            resp.release()
            with pytest.raises(UpstreamError, match="before the answer"):
                await get(pool, b"/break")
            assert len(srv.requests) == 2  # not retried
            assert pool.idle == 0 and not pool._conns
            assert not pending_deadline_timers(asyncio.get_running_loop())
            pool.close()

    return scenario


test_reused_connection_eof_before_answer_is_upstream_error = on_both_loops(
    _broken_before_answer("eof")
)
test_reused_connection_reset_before_answer_is_upstream_error = on_both_loops(
    _broken_before_answer("reset")
)


@on_both_loops
async def test_reset_in_the_body_is_upstream_error() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome")
        await asyncio.sleep(0.02)
        peer.reset()

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        # close-delimited, but a reset is no clean end
        with pytest.raises(UpstreamError, match="body"):
            await resp.read()
        resp.release()


@on_both_loops
async def test_truncated_content_length_body_is_upstream_error() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        assert peer.transport is not None
        peer.transport.close()

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        with pytest.raises(UpstreamError, match="body"):
            await resp.read()
        resp.release()
        assert pool.idle == 0


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
)
def test_invalid_answer_is_upstream_error(data: bytes) -> None:
    async def scenario() -> None:
        async with serve(answer(data)) as srv:
            pool = Pool("127.0.0.1", srv.port)
            with pytest.raises(UpstreamError, match="invalid HTTP"):
                await get(pool)
            assert pool.idle == 0 and not pool._conns
            await asyncio.wait_for(srv.peers[0].lost.wait(), 2)

    for factory in LOOPS.values():
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(scenario(), 20))


@on_both_loops
async def test_invalid_chunk_in_the_body_is_upstream_error() -> None:
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    async with serve(answer(bad)) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        with pytest.raises(UpstreamError, match="invalid HTTP"):
            await resp.read()
        resp.release()
        assert pool.idle == 0
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)


@on_both_loops
async def test_bytes_past_the_answer_drop_the_connection_but_keep_the_answer() -> None:
    async with serve(answer(ok(b"abc") + b"HTTP/1.1 200 OK\r\n")) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        assert await resp.read() == b"abc"
        resp.release()
        assert pool.idle == 0
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)


# -- cancellation ------------------------------------------------------------------------------


@on_both_loops
async def test_cancel_while_waiting_for_the_head_closes_the_connection() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        if req.target != b"/hang":
            peer.write(ok())

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        resp = await get(pool)
        await resp.read()
        resp.release()
        conn = pool._idle[-1]
        task = asyncio.ensure_future(get(pool, b"/hang"))
        await until(lambda: len(srv.requests) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert conn._closed and conn._timer is None
        assert pool.idle == 0 and not pool._conns
        assert not pending_deadline_timers(asyncio.get_running_loop())
        await asyncio.wait_for(srv.peers[0].lost.wait(), 2)
        pool.close()


@on_both_loops
async def test_cancel_while_reading_the_body_closes_the_connection() -> None:
    async def handler(req: Req, peer: Peer) -> None:
        peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")

    async with serve(handler) as srv:
        pool = Pool("127.0.0.1", srv.port)
        for reader in ("read", "iterate"):
            resp = await get(pool)
            conn = only_conn(pool)

            async def consume(resp: Response = resp, reader: str = reader) -> None:
                if reader == "read":
                    await resp.read()
                else:
                    async for _ in resp:
                        pass

            task = asyncio.ensure_future(consume())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert conn._closed and conn._timer is None
            assert not pending_deadline_timers(asyncio.get_running_loop())
            resp.release()
            assert pool.idle == 0 and not pool._conns
        await until(lambda: all(p.lost.is_set() for p in srv.peers))
        assert srv.connections == 2


@on_both_loops
async def test_cancel_during_connect_leaves_nothing_behind() -> None:
    with full_backlog() as port:
        pool = Pool("127.0.0.1", port)
        task = asyncio.ensure_future(get(pool))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not pool._conns and pool.idle == 0
