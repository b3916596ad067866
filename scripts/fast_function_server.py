"""A fast NVCF test function: a single-threaded asyncio HTTP/1.1 server, the benchmark baseline.

Listens on 0.0.0.0:$PORT (default 8000). Keep-alive (HTTP/1.1 default; `Connection: close` and
HTTP/1.0 without keep-alive are honoured), request bodies by Content-Length (chunked bodies are
refused with 411). `GET|HEAD /health` (and /v2/health/ready) answer 200; any other request
that is not a POST answers 404. POST answers, each in one `transport.write` (the body shapes of
scripts/bench_invoke.py):

    /big        200, the request body echoed back (Content-Type: application/json)
    /sse        200, Content-Type: text/event-stream: SSE_EVENTS (64) events `data: {...}`, each
                ended by a blank line, the last one `data: {"index":63,"done":true}`
                (Content-Length, keep-alive)
    /sleep      the small JSON answer after 1 s (`/sleep/<ms>`: after <ms> ms), timed with
                loop.call_later so thousands can wait at once; the connection reads no further
                request until it is answered, and a closed connection cancels its timer
    any other   200, a small JSON echo, `{"ok":true,"path":...,"bytes":N}`

Stdlib only, so it runs in the FROM-scratch test image (scripts/build_test_images.py builds it
as `nvcf-lite-test/fast:1`).

    python3 scripts/fast_function_server.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

HEALTH_PATHS = frozenset({b"/health", b"/v2/health/ready"})
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"
SSE_EVENTS = 64
SLEEP_S = 1.0


def sse_body(events: int = SSE_EVENTS) -> bytes:
    """`events` SSE events; the last one carries `"done":true` (the bench checks for it)."""
    parts = [
        f'data: {{"index":{i},"token":"tok-{i:04d}","text":"lorem ipsum dolor sit"}}\n\n'
        for i in range(events - 1)
    ]
    parts.append(f'data: {{"index":{events - 1},"done":true}}\n\n')
    return "".join(parts).encode()


SSE_BODY = sse_body()


def response(
    status: bytes, body: bytes, keep_alive: bool, head: bool = False, ctype: bytes = JSON
) -> bytes:
    conn = b"keep-alive" if keep_alive else b"close"
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            ctype,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\nConnection: ",
            conn,
            b"\r\n\r\n",
            b"" if head else body,
        )
    )


class Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None  # a /sleep answer not yet written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._drain()

    def _drain(self) -> None:
        while self.timer is None and self.transport is not None and not self.transport.is_closing():
            if not self._one():
                return

    def _later(self, answer: bytes, keep_alive: bool) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(answer)
        if not keep_alive:
            self.transport.close()
            return
        self._drain()  # requests that arrived meanwhile

    def _one(self) -> bool:
        """Answers one complete request from the buffer; False when more bytes are needed."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._fail(b"431 Request Header Fields Too Large")
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        try:
            method, target, version = lines[0].split(b" ", 2)
        except ValueError:
            self._fail(b"400 Bad Request")
            return False
        length = 0
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self._fail(b"400 Bad Request")
                    return False
            elif name == b"transfer-encoding":
                self._fail(b"411 Length Required")
                return False
            elif name == b"connection":
                token = value.strip().lower()
                keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
        if length < 0 or length > MAX_BODY:
            self._fail(b"413 Content Too Large")
            return False
        total = end + 4 + length
        if len(self.buf) < total:
            return False
        path = target.split(b"?", 1)[0]
        body = bytes(self.buf[end + 4 : total]) if path == b"/big" else b""
        del self.buf[:total]
        assert self.transport is not None
        if method in (b"GET", b"HEAD") and path in HEALTH_PATHS:
            answer = response(b"200 OK", b'{"status":"ok"}', keep_alive, method == b"HEAD")
        elif method == b"POST" and path == b"/big":
            answer = response(b"200 OK", body, keep_alive)
        elif method == b"POST" and path == b"/sse":
            answer = response(b"200 OK", SSE_BODY, keep_alive, ctype=EVENT_STREAM)
        elif method == b"POST" and (path == b"/sleep" or path.startswith(b"/sleep/")):
            delay = SLEEP_S
            if path.startswith(b"/sleep/"):
                try:
                    delay = int(path[len(b"/sleep/") :]) / 1000
                except ValueError:
                    delay = SLEEP_S
            doc = {"ok": True, "path": path.decode("latin-1"), "bytes": length}
            answer = response(b"200 OK", json.dumps(doc).encode(), keep_alive)
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(delay, self._later, answer, keep_alive)
            return True
        elif method == b"POST":
            doc = {"ok": True, "path": path.decode("latin-1"), "bytes": length}
            answer = response(b"200 OK", json.dumps(doc).encode(), keep_alive)
        else:
            answer = response(b"404 Not Found", b'{"error":"not found"}', keep_alive)
        self.transport.write(answer)
        if not keep_alive:
            self.transport.close()
        return True

    def _fail(self, status: bytes) -> None:
        assert self.transport is not None
        self.transport.write(response(status, b'{"error":"bad request"}', False))
        self.transport.close()
        self.buf.clear()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    port = int(os.environ.get("PORT", "8000"))
    server = await loop.create_server(Protocol, "0.0.0.0", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fast function server on :{port}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve())
