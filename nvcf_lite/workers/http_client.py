"""A small HTTP/1.1 client for the invocation hot path: one request to one function container.

Every invocation is forwarded to a container on 127.0.0.1, so the client's own CPU cost is paid
once per request. aiohttp's ClientSession spends ~100 µs of Python per request (ClientSession.
_request, TimeoutHandle, StreamWriter, CIMultiDict header preparation); this client does the
same job in ~20 µs (user CPU, uvloop, small JSON answer on a kept-alive connection) with an
asyncio.Protocol per connection and the httptools (llhttp) C parser:

- the request goes out in one transport write: the request line, Host and Content-Length (always
  added), the caller's pre-encoded header block, the blank line and the body;
- the answer's head is one future, each wait for more body one future; the deadline is one
  loop.call_at timer per exchange (no asyncio.wait_for, no task per request);
- headers come back as a list of (name, value) in arrival order, nothing else is built;
- keep-alive connections are kept per host:port in a LIFO list; bodies are passed on as sent
  (no decompression) and reading pauses past ~1 MiB buffered and unread.

Errors: ConnectFailed when the container was never reached (safe to retry elsewhere),
UpstreamError for everything after connecting (broken connection, invalid HTTP, deadline).
A Response must end with release() or close(); a connection is reused only when its answer was
read to the end and the server allows it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools  # type: ignore[import-untyped]  # ships .pyi files but no py.typed

__all__ = ["ConnectFailed", "Pool", "Response", "UpstreamError"]

# Reading pauses past _HIGH_WATER bytes buffered and unread, resumes at _LOW_WATER.
_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18
# Bodies up to this size are copied into the head's buffer (one write); larger ones go out
# through writelines (uvloop sends both buffers with one writev, without the copy).
_INLINE_BODY = 1 << 16


class ConnectFailed(Exception):
    """The container was never reached (connection refused / connect failed / connect timed
    out): safe to retry elsewhere."""


class UpstreamError(Exception):
    """After connecting: the connection broke, the answer was not valid HTTP/1.1, or the deadline
    passed."""


class ConnectionClosed(UpstreamError):
    """The peer closed the connection before its answer was complete: its process died, or a
    proxy in front of it (docker-proxy) found nothing to connect to."""


class _Unexpected(Exception):
    """Raised from a parser callback to stop the parser on bytes that answer nothing."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection: the transport's protocol and the httptools parser's callbacks.

    State of the current exchange: `_busy` from send() to recycle; `_head` is the pending head
    future (None once the head is in); `_complete` once the whole answer is in; `_exc` once it
    failed. Body chunks wait in `_chunks` until Response reads them.
    """

    __slots__ = (
        "_buffered",
        "_busy",
        "_chunks",
        "_closed",
        "_complete",
        "_exc",
        "_final_headers",
        "_head",
        "_headers",
        "_idle_since",
        "_is_head",
        "_keep",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_reason",
        "_stale_parser",
        "_timer",
        "_transport",
        "_waiter",
    )

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._busy = False
        self._head: asyncio.Future[Response] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[str, str]] = []
        self._final_headers = self._headers  # the final answer's (later ones are trailers)
        self._reason = b""
        self._is_head = False
        # A HEAD answer ends at its headers, where llhttp may still expect a body: the next
        # exchange needs a fresh parser.
        self._stale_parser = False
        self._complete = False
        self._keep = False
        self._exc: UpstreamError | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._closed = False
        self._idle_since = 0.0

    # -- the exchange --------------------------------------------------------------------------

    def _send(
        self, data: bytes, body: bytes | None, deadline: float, is_head: bool
    ) -> asyncio.Future[Response]:
        head: asyncio.Future[Response] = self._loop.create_future()
        self._head = head
        self._busy = True
        self._is_head = is_head
        self._complete = self._keep = False
        self._exc = None
        self._timer = self._loop.call_at(deadline, self._on_deadline)
        transport = self._transport
        assert transport is not None
        if body is None:
            transport.write(data)
        else:
            transport.writelines((data, body))
        return head

    def _finish(self, keep: bool) -> None:
        self._complete = True
        self._keep = keep
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _fail(self, exc: UpstreamError) -> None:
        """End the exchange with `exc` (unless the answer is already complete) and drop the
        connection."""
        if self._busy and not self._complete and self._exc is None:
            self._set_error(exc)
        self._abort()

    def _set_error(self, exc: UpstreamError) -> None:
        self._exc = exc
        head = self._head
        if head is not None:
            self._head = None
            if not head.done():
                head.set_exception(exc)
        self._wake()

    def _abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._keep = False
        if not self._closed:
            self._closed = True
            self._pool._forget(self)
            if self._transport is not None:
                self._transport.abort()

    def _on_deadline(self) -> None:
        self._timer = None
        self._fail(UpstreamError("deadline passed before the answer was complete"))

    def _consumed(self) -> None:
        if self._paused and self._buffered <= _LOW_WATER and not self._closed:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()

    def _recycle(self) -> None:
        self._busy = False
        if self._stale_parser:
            self._stale_parser = False
            self._parser = httptools.HttpResponseParser(self)
        self._idle_since = self._loop.time()
        self._pool._put(self)

    def _eof_delimited(self) -> bool:
        """Whether the answer's body ends at EOF (neither Content-Length nor chunked)."""
        for name, value in self._final_headers:
            lname = name.lower()
            if lname == "content-length":
                return False
            if lname == "transfer-encoding" and "chunked" in value.lower():
                return False
        return True

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._pool._conns.add(self)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # Bytes while idle answer nothing we sent: the connection's state is unknown.
            self._abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, _Unexpected) else exc
            err = UpstreamError(f"invalid HTTP/1.1 answer: {cause}")
            err.__cause__ = exc
            self._fail(err)
        except httptools.HttpParserUpgrade as exc:
            err = UpstreamError("invalid HTTP/1.1 answer: protocol upgrade")
            err.__cause__ = exc
            self._fail(err)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._closed = True
            self._pool._forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._keep = False
        if not self._busy or self._complete or self._exc is not None:
            return
        if self._head is None and exc is None and self._eof_delimited():
            self._complete = True  # a close-delimited body ends here
            self._wake()
            return
        where = "before the answer" if self._head is not None else "in the answer's body"
        err = ConnectionClosed(f"connection closed {where}")
        err.__cause__ = exc
        self._set_error(err)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head is None:
            raise _Unexpected("bytes after the end of the answer")
        self._headers = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _Unexpected("101 Switching Protocols: upgrades are not supported")
            return  # an interim answer (100 Continue, 103 Early Hints): the final one follows
        head = self._head
        self._head = None
        headers = self._final_headers = self._headers
        self._headers = []  # trailers land here, unread
        resp = Response(self, status, self._reason.decode("latin-1"), headers)
        if self._is_head:
            self._stale_parser = True
            self._finish(parser.should_keep_alive())
        if head is not None and not head.done():
            head.set_result(resp)

    def on_body(self, body: bytes) -> None:
        if self._complete:
            raise _Unexpected("body bytes after the end of the answer")
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused:
            self._paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._head is not None or self._complete:
            return  # the end of an interim answer, or of a HEAD answer that ended at its headers
        self._finish(self._parser.should_keep_alive())


class Response:
    """The answer's status line and headers, and its body still to read."""

    __slots__ = ("_conn", "headers", "reason", "status")

    def __init__(
        self, conn: _Conn, status: int, reason: str, headers: list[tuple[str, str]]
    ) -> None:
        self._conn: _Conn | None = conn
        self.status = status
        self.reason = reason
        self.headers = headers  # as received: order, duplicates and case kept

    async def read(self) -> bytes:
        """The whole remaining body."""
        conn = self._conn
        if conn is None:
            return b""  # released to the pool: the body had been read to the end
        chunks = conn._chunks
        parts: list[bytes] = []
        while True:
            if chunks:
                parts.extend(chunks)
                chunks.clear()
                conn._buffered = 0
                conn._consumed()
            if conn._complete:
                return b"".join(parts)
            if conn._exc is not None:
                raise conn._exc
            await _more(conn)

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The body's chunks as the parser hands them over."""
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration  # released to the pool: the body had been read to the end
        chunks = conn._chunks
        while True:
            if chunks:
                chunk = chunks.popleft()
                if chunks and len(chunk) < _COALESCE:
                    chunk = _coalesced(chunk, chunks)
                conn._buffered -= len(chunk)
                if conn._paused:
                    conn._consumed()
                return chunk
            if conn._complete:
                raise StopAsyncIteration
            if conn._exc is not None:
                raise conn._exc
            await _more(conn)

    def release(self) -> None:
        """Done with the answer: the connection goes back to the pool if the body was read to
        the end and the server keeps the connection, else it is closed. Idempotent."""
        conn = self._conn
        if conn is None:
            return
        if conn._complete and conn._keep and not conn._chunks and not conn._closed:
            self._conn = None
            conn._recycle()
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection now (the container sees the client leave). Idempotent."""
        conn = self._conn
        if conn is not None:
            conn._fail(UpstreamError("the response was closed"))


_COALESCE = 64 * 1024


def _coalesced(first: bytes, chunks: deque[bytes]) -> bytes:
    """`first` and the small chunks queued behind it, up to _COALESCE bytes, as one: a
    consumer slower than the container (an SSE stream of one event per write) then makes
    fewer, larger writes of what has arrived; nothing waits for more."""
    parts, size = [first], len(first)
    while chunks and size + len(chunks[0]) <= _COALESCE:
        part = chunks.popleft()
        parts.append(part)
        size += len(part)
    return b"".join(parts) if len(parts) > 1 else first


async def _more(conn: _Conn) -> None:
    """Wait for the parser to hand over more of the body (or its end, or an error); a cancel
    drops the connection, whose answer is then unusable."""
    w = conn._waiter = conn._loop.create_future()
    try:
        await w
    except BaseException:
        conn._fail(UpstreamError("reading the body was cancelled"))
        raise


class Pool:
    """Keep-alive connections to one host:port (one Pool per function instance)."""

    __slots__ = ("_conns", "_idle", "_request_fmt", "_sweep", "host", "keepalive_s", "port")

    def __init__(self, host: str, port: int, *, keepalive_s: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # method, target, content-length, header block; the body follows
        self._request_fmt = (
            b"%s %s HTTP/1.1\r\nHost: " + authority.encode("ascii") + b"\r\nContent-Length: %d"
            b"\r\n%s\r\n"
        )
        self._idle: list[_Conn] = []  # oldest first; handed out from the end (LIFO)
        self._conns: set[_Conn] = set()  # every open connection, idle or busy
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def request(
        self, method: str, target: bytes, header_block: bytes, body: bytes, *, deadline: float
    ) -> Response:
        """Send `method target HTTP/1.1` with Host, Content-Length, `header_block` (encoded header
        lines, each ending in CRLF) and `body` in one write; return once the final answer's head
        is in. `deadline` (a loop.time() value) bounds the whole exchange, body included."""
        size = len(body)
        data = self._request_fmt % (method.encode("ascii"), target, size, header_block)
        rest: bytes | None = body
        if size <= _INLINE_BODY:
            data, rest = data + body, None
        idle = self._idle
        if idle:
            conn = idle[-1]
            if deadline <= conn._loop.time():
                raise ConnectFailed("deadline passed before the request was sent")
            idle.pop()
        else:
            conn = await self._connect(deadline)
        head = conn._send(data, rest, deadline, method == "HEAD")
        try:
            return await head
        except BaseException:
            conn._fail(UpstreamError("the request was cancelled"))
            raise

    async def _connect(self, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            raise ConnectFailed("deadline passed before the request was sent")
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self, loop), self.host, self.port
                )
        except TimeoutError as exc:
            raise ConnectFailed(f"connecting to {where} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"connecting to {where} failed: {exc}") from exc
        if conn._closed:
            raise ConnectFailed(f"{where} closed the connection before the request was sent")
        return conn

    def _put(self, conn: _Conn) -> None:
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = conn._loop.call_at(
                conn._idle_since + self.keepalive_s, self._sweep_idle, conn._loop
            )

    def _sweep_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections idle for keepalive_s (one timer per pool, not per request)."""
        self._sweep = None
        idle = self._idle
        limit = loop.time() - self.keepalive_s
        while idle and idle[0]._idle_since <= limit:
            idle.pop(0)._abort()
        if idle:
            self._sweep = loop.call_at(
                idle[0]._idle_since + self.keepalive_s, self._sweep_idle, loop
            )

    def _forget(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        if not conn._busy and conn in self._idle:
            self._idle.remove(conn)

    def close(self) -> None:
        """Close every idle and busy connection; a later request() opens new ones."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._conns):
            conn._fail(UpstreamError("the pool was closed"))
        self._idle.clear()
