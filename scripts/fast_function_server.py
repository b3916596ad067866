"""A fast NVCF test function: a single-threaded asyncio HTTP/1.1 server, the benchmark baseline.

Listens on 0.0.0.0:$PORT (default 8000). Keep-alive (HTTP/1.1 default; `Connection: close` and
HTTP/1.0 without keep-alive are honoured), request bodies by Content-Length (chunked bodies are
refused with 411). `GET|HEAD /health` (and /v2/health/ready) answer 200; any POST answers 200
with a small JSON echo, `{"ok":true,"path":...,"bytes":N}`, in one `transport.write`; anything
else answers 404. Stdlib only, so it runs in the FROM-scratch test image
(scripts/build_test_images.py builds it as `nvcf-lite-test/fast:1`).

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


def response(status: bytes, body: bytes, keep_alive: bool, head: bool = False) -> bytes:
    conn = b"keep-alive" if keep_alive else b"close"
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: application/json\r\nContent-Length: ",
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            if not self._one():
                return

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
        del self.buf[:total]
        path = target.split(b"?", 1)[0]
        assert self.transport is not None
        if method in (b"GET", b"HEAD") and path in HEALTH_PATHS:
            answer = response(b"200 OK", b'{"status":"ok"}', keep_alive, method == b"HEAD")
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
