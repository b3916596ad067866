"""A real `nvcf-lite serve` over plain HTTP, raw uploads to it, and its memory, for asset tests.

* `plain_server()` runs the server as a subprocess on a free port (no TLS) and stops it.
* `put_stream()` PUTs a body produced chunk by chunk (never held whole) with http.client.
* `put_half_then_close()` announces a Content-Length, sends half of it on a raw socket and
  closes the connection: an upload interrupted by the client.
* `RssSampler` samples VmRSS of the server's whole process tree (today one process, granian
  embedded; any child would count) from /proc while a test runs.
* `create()`, `upload()`, `local()` and `leftovers()` do the same in process, through the app's
  Litestar test client (test_assets_api, test_assets).
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conftest import bearer
from function_support import PLAIN
from litestar.testing import TestClient
from sdk_support import live_server, new_key
from server_support import ServerProcess

DESCRIPTION_HEADER = "x-amz-meta-nvcf-asset-description"


@contextmanager
def plain_server(
    workdir: Path, *, extra_env: dict[str, str] | None = None, start_timeout_s: float = 30.0
) -> Iterator[ServerProcess]:
    """`sdk_support.live_server` over plain HTTP, org `local`, no Docker and no NVML."""
    env = {
        "NVCF_LITE_AUTH__KEY_CACHE_SECONDS": "0",
        "NVCF_LITE_GPUS__USE_NVML": "false",
        "NVCF_LITE_DOCKER__BASE_URL": "unix:///nonexistent/docker.sock",
        **(extra_env or {}),
    }
    with live_server(
        workdir,
        None,
        None,
        api_key=new_key(),
        org="local",
        extra_env=env,
        start_timeout_s=start_timeout_s,
    ) as server:
        yield server


def zeros(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """`total` bytes in chunks, one buffer reused: the client holds `chunk` bytes at most."""
    block = b"\0" * chunk
    sent = 0
    while sent < total:
        piece = block if total - sent >= chunk else block[: total - sent]
        sent += len(piece)
        yield piece


def put_stream(
    url: str, headers: dict[str, str], chunks: Iterable[bytes], length: int
) -> tuple[int, bytes]:
    """PUT with a Content-Length, sending the body chunk by chunk; (status, response body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=300)
    try:
        conn.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(length)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for chunk in chunks:
            conn.send(chunk)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def put_half_then_close(url: str, headers: dict[str, str], length: int) -> None:
    """Announce `length` bytes, send half of them, close the socket."""
    parts = urlsplit(url)
    lines = [f"PUT {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in {**headers, "Content-Length": str(length)}.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as sock:
        sock.sendall(head)
        for chunk in zeros(length // 2):
            sock.sendall(chunk)
        time.sleep(0.3)  # let the server write some of it before the client goes away


def process_tree(pid: int) -> list[int]:
    found = [pid]
    i = 0
    while i < len(found):
        try:
            tasks = os.listdir(f"/proc/{found[i]}/task")
        except OSError:
            tasks = []
        for tid in tasks:
            try:
                text = Path(f"/proc/{found[i]}/task/{tid}/children").read_text()
            except OSError:
                continue
            found += [int(c) for c in text.split() if int(c) not in found]
        i += 1
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` and all its descendants, in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class RssSampler:
    """Samples `rss_kib(pid)` every `interval_s` in a thread, between start() and stop()."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kib(self.pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_kib(self.pid))


PNG = {"contentType": "image/png", "description": "red-cat-photo"}
PNG_HEADERS = {"Content-Type": "image/png", DESCRIPTION_HEADER: "red-cat-photo"}
Client = TestClient[Any]


def create(client: Client, prefix: str = PLAIN, key: str | None = None, **body: str) -> Any:
    r = client.post(f"{prefix}/assets", json=body or PNG, headers=bearer(key) if key else bearer())
    assert r.status_code == 200, r.text
    return r.json()


def local(url: str) -> str:
    """The path and query of a URL on this server (the test client has its own host)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def upload(client: Client, asset: dict[str, Any], data: bytes = b"\x89PNG cat", **hdrs: str) -> Any:
    return client.put(local(asset["uploadUrl"]), content=data, headers={**PNG_HEADERS, **hdrs})


def blob_dir(client: Client) -> Path:
    return Path(client.app.state.platform.config.store.data_dir) / "blobs" / "assets"


def leftovers(client: Client) -> list[str]:
    folder = blob_dir(client)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
