"""Invocation against a live `nvcf-lite serve` (granian, plain HTTP) and real containers:
what an in-process test client cannot show.

* SSE reaches the client as the container writes it (first event long before the last).
* A client that disconnects cancels its request: a stream's upstream connection is dropped
  (the instance's only slot is free again at once), and a queued request never runs.
* SIGKILL of nvcf-lite with 50 requests queued and in flight, then a restart: every request
  reaches a terminal answer through its status endpoint; none is lost, and only the ones
  that were in flight at the kill may have reached a container twice.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_KEY
from invocation_support import docker_env, live_echo, wait_for
from server_support import ServerProcess

pytestmark = pytest.mark.docker

RECORDS = "/var/inf/records/runs.log"  # the container appends each NVCF-REQID it gets here


@pytest.fixture
def server(tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "srv", env=docker_env(ns))
    proc.start()
    try:
        yield proc
    except BaseException:
        print(proc.log())
        raise
    finally:
        proc.stop()


def runs(server: ServerProcess) -> Counter[str]:
    path = server.workdir / "data" / "inf" / "records" / "runs.log"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def open_request(
    server: ServerProcess, path: str, body: Any, headers: dict[str, str]
) -> socket.socket:
    """Send one HTTP/1.1 request on a raw socket; the caller reads (or drops) the answer."""
    data = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Authorization: Bearer {ADMIN_KEY}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    return sock


def read_until(sock: socket.socket, marker: bytes, buffer: bytearray) -> float:
    """Read into `buffer` until `marker` is in it; the monotonic time it arrived."""
    while marker not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {bytes(buffer)!r}")
        buffer += chunk
    return time.monotonic()


def test_sse_events_reach_the_client_as_they_are_written(server: ServerProcess) -> None:
    fid, _ = live_echo(server.json)
    started = time.monotonic()
    sock = open_request(
        server,
        f"/v2/nvcf/pexec/functions/{fid}",
        {"events": 6, "interval": 0.5},
        {"Accept": "text/event-stream"},
    )
    buffer = bytearray()
    try:
        first = read_until(sock, b'data: {"i": 0}', buffer) - started
        # its id cannot be polled: the answer belongs to this connection (and is not cut)
        rid = bytes(buffer).lower().split(b"nvcf-reqid: ", 1)[1][:36].decode()
        status, _, body = server.call("GET", f"/v2/nvcf/pexec/status/{rid}")
        assert status == 404 and b"streamed" in body, body
        last = read_until(sock, b"data: [DONE]", buffer) - started
    finally:
        sock.close()
    head = bytes(buffer).split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 200"), head
    assert "content-type: text/event-stream" in head and "nvcf-status: fulfilled" in head
    assert "nvcf-reqid: " in head
    assert last >= 2.4, last  # five intervals of 0.5 s
    assert first < 1.0 and first < last / 2.5, (first, last)

    # path-preserving calls keep the path and query byte for byte through granian too
    target = "/a%20b/c%2Fd/%7Euser?q=%41&x=a+b"
    status, _, body = server.call("GET", target, headers={"Function-ID": fid})
    assert status == 200, body
    seen = json.loads(body)
    assert (seen["path"], seen["rawQuery"]) == ("/a%20b/c%2Fd/%7Euser", "q=%41&x=a+b")


def test_a_client_that_disconnects_cancels_its_request(server: ServerProcess) -> None:
    fid, _ = live_echo(server.json, maxRequestConcurrency=1)
    path = f"/v2/nvcf/pexec/functions/{fid}"
    # a long stream holds the only slot; the client reads one event and leaves
    sock = open_request(
        server, path, {"events": 400, "interval": 0.1}, {"Accept": "text/event-stream"}
    )
    read_until(sock, b'data: {"i": 0}', bytearray())
    sock.close()
    started = time.monotonic()
    status, _, body = server.call("POST", path, {"n": 1}, headers={"NVCF-POLL-SECONDS": "10"})
    assert status == 200, body
    assert time.monotonic() - started < 3, "the abandoned stream still held the instance"

    # a queued request whose client leaves never reaches the container
    status, headers, _ = server.call(
        "POST", path, {"delay": 3, "recordTo": RECORDS}, headers={"NVCF-POLL-SECONDS": "1"}
    )
    assert status == 202
    busy = headers["nvcf-reqid"]
    sock = open_request(server, path, {"recordTo": RECORDS, "n": "left"}, {})
    time.sleep(0.3)
    sock.close()
    status, headers, _ = server.call(
        "POST", path, {"recordTo": RECORDS, "n": 3}, headers={"NVCF-POLL-SECONDS": "1"}
    )
    assert status == 202 and headers["nvcf-status"] == "pending-evaluation"
    later = headers["nvcf-reqid"]
    status, _, body = server.call(
        "GET", f"/v2/nvcf/pexec/status/{later}", headers={"NVCF-POLL-SECONDS": "20"}
    )
    assert status == 200 and json.loads(body)["body"]["n"] == 3
    assert set(runs(server)) == {busy, later}


def test_sigkill_with_50_requests_queued_then_restart_loses_none(server: ServerProcess) -> None:
    fid, _ = live_echo(server.json, maxRequestConcurrency=2)
    path = f"/v2/nvcf/pexec/functions/{fid}"

    def send(n: int) -> tuple[int, dict[str, str], bytes]:
        body = {"n": n, "delay": 0.25, "recordTo": RECORDS}
        return server.call("POST", path, body, headers={"NVCF-POLL-SECONDS": "1"})

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, range(50)))
    server.kill()
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 202} and statuses[202] >= 20, statuses
    done_before = {h["nvcf-reqid"]: n for n, (s, h, _) in enumerate(answers) if s == 200}
    waiting = {h["nvcf-reqid"]: n for n, (s, h, _) in enumerate(answers) if s == 202}
    assert len(done_before) + len(waiting) == 50

    server.start()
    results: dict[str, int] = {}
    for rid in waiting:
        deadline = time.monotonic() + 60
        while True:
            status, _, body = server.call(
                "GET", f"/v2/nvcf/pexec/status/{rid}", headers={"NVCF-POLL-SECONDS": "30"}
            )
            if status != 202 or time.monotonic() > deadline:
                break
        assert status == 200, (rid, status, body)
        results[rid] = json.loads(body)["body"]["n"]
    assert results == waiting  # every one answered, each with its own result

    counts = wait_for(lambda: runs(server) if len(runs(server)) == 50 else None, 10, "50 runs")
    assert set(counts) == set(done_before) | set(waiting)
    assert all(counts[rid] == 1 for rid in done_before)  # delivered before the kill: once
    twice = [rid for rid, c in counts.items() if c > 1]
    assert max(counts.values()) <= 2 and len(twice) <= 2, counts  # only the two in flight
    for rid in [*done_before, *waiting]:
        status, _, _ = server.call("GET", f"/v2/nvcf/pexec/status/{rid}")
        assert status == 404  # collected (or delivered) once, then purged
