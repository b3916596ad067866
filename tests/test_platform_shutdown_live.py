"""A graceful stop is not held up by an open log follow: after SIGTERM the follow's answer
ends, the lifespan shutdown runs (the function's containers go, as
`keep_instances_on_shutdown = false` says) and the process exits 0 within seconds."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import ADMIN_KEY, wait_for
from docker_support import (
    docker_client_or_skip,
    ensure_test_images,
    namespace_containers,
    remove_namespace,
)
from invocation_support import docker_env, live_echo
from server_support import ServerProcess

pytestmark = pytest.mark.docker


def test_sigterm_ends_an_open_follow_and_shuts_down(tmp_path: Path) -> None:
    dock = docker_client_or_skip()
    ensure_test_images()
    ns = f"test-{uuid.uuid4().hex[:10]}"
    server = ServerProcess(tmp_path / "server", docker_env(ns)).start()
    try:
        fid, vid = live_echo(server.json, "follow-stop")
        assert namespace_containers(dock, ns)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        path = f"/v2/nvcf/functions/{fid}/versions/{vid}/logs?follow=true"
        conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        resp = conn.getresponse()
        assert resp.status == 200
        lines: list[bytes] = []
        ended = threading.Event()

        def read() -> None:
            try:
                for raw in iter(resp.readline, b""):
                    lines.append(raw)
            except Exception:  # a reset instead of a clean end: `ended` is set all the same
                lines.append(b"<error>")
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        wait_for(lambda: any(b"listening" in line for line in lines), what="the follow's tail")
        assert server.process is not None
        started = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)  # the one process, as `docker stop` does
        assert server.process.wait(timeout=20) == 0, server.log()
        took = time.monotonic() - started
        assert ended.wait(5), "the follow did not end"
        assert b"<error>" not in lines  # the chunked answer ended cleanly
        conn.close()
        log = server.log()
        assert "shutting down: ending open log streams" in log
        assert "nvcf_lite: shutdown completed" in log  # after the lifespan shutdown
        assert namespace_containers(dock, ns) == []  # the lifespan shutdown ran
        assert took < 15, f"shutdown took {took:.1f} s:\n{log}"
        server.process = None
    finally:
        server.kill()
        remove_namespace(dock, ns)
