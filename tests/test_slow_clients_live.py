"""Slow clients (slowloris) against a real `nvcf-lite serve`: connections that send their head
or their body a byte at a time, and ones that never finish, do not stall anyone else, and
nothing they half-sent is stored."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_support import ServerProcess

SLOW_HEADS = 200
SLOW_BODIES = 50
STALL_S = 10.0  # a request that takes this long is stalled (they take milliseconds)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "server").start()
    yield proc
    proc.stop()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=STALL_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def test_slow_heads_and_bodies_do_not_stall_other_clients(server: ServerProcess) -> None:
    heads = [connect(server.port) for _ in range(SLOW_HEADS)]
    bodies = [connect(server.port) for _ in range(SLOW_BODIES)]
    head = b"GET /v2/nvcf/functions HTTP/1.1\r\nHost: x\r\nX-Slow: "
    body_head = (
        b"POST /v2/nvcf/functions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + server.key.encode() + b"\r\nContent-Length: 100000\r\n\r\n{"
    )
    for s in heads:
        s.sendall(head)
    for s in bodies:
        s.sendall(body_head)
    stop = threading.Event()

    def trickle() -> None:  # one more byte on every slow connection, twice a second
        while not stop.wait(0.5):
            for s in heads + bodies:
                try:
                    s.send(b"a" if s in heads else b" ")
                except OSError:
                    pass

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        time.sleep(1.0)
        for _ in range(20):  # meanwhile every other client is answered as usual
            status, _, _ = server.call("GET", "/health", timeout_s=STALL_S)
            assert status == 200
            listed = server.json("GET", "/v2/nvcf/functions", timeout_s=STALL_S)
            assert listed == {"functions": []}
        fn = server.json(
            "POST",
            "/v2/nvcf/functions",
            {"name": "fast", "inferenceUrl": "/e", "containerImage": "x/y:1"},
            timeout_s=STALL_S,
        )["function"]
        assert fn["name"] == "fast"
    finally:
        stop.set()
        dripper.join(timeout=5)
        for s in heads + bodies:
            s.close()
    # the half-sent bodies registered nothing; the server still answers
    functions = server.json("GET", "/v2/nvcf/functions")["functions"]
    assert [f["name"] for f in functions] == ["fast"]
