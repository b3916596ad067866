"""`nvcf-lite logs` and `GET /v2/nvcf/functions/{id}/logs` on a real server and real containers:
a follow (CLI and HTTP) sees a line the function prints after it started, a replaced instance's
output stays readable while its container is kept, and user errors are problem+json."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import docker
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

NVCF_LITE = str(Path(sys.executable).with_name("nvcf-lite"))


class LiveEcho:
    """A live server in a Docker namespace of its own with the "logged" echo function deployed:
    its containers, its invocations and `nvcf-lite logs` against it."""

    def __init__(self, server: ServerProcess, dock: docker.DockerClient, ns: str) -> None:
        self.server, self.dock, self.ns = server, dock, ns
        self.fid, self.vid = live_echo(server.json, "logged")

    def instances(self, fid: str) -> dict[str, str]:
        """instance id -> container state, of the function's containers."""
        return {
            c.labels["nvcf-lite.instance-id"]: c.status
            for c in namespace_containers(self.dock, self.ns)
            if c.labels.get("nvcf-lite.function-id") == fid
        }

    def say(self, fid: str, text: str) -> None:
        self.server.json("POST", f"/v2/nvcf/pexec/functions/{fid}", {"log": text})

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NVCF_LITE, "logs", *args], env=self.env(), capture_output=True, text=True, timeout=60
        )

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")}
        return {**base, "NVCF_LITE_DOCKER__NAMESPACE": self.ns}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveEcho]:
    dock = docker_client_or_skip()
    ensure_test_images()
    ns = f"test-{uuid.uuid4().hex[:10]}"
    server = ServerProcess(tmp_path_factory.mktemp("logs") / "server", docker_env(ns)).start()
    try:
        yield LiveEcho(server, dock, ns)
    finally:
        server.kill()
        remove_namespace(dock, ns)


class Reader:
    """Lines of a stream, read by a thread, waited for with a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for raw in iter(stream.readline, b""):
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
        except Exception:  # the test hung up mid-read: the reader just stops
            pass

    def until(self, needle: str, timeout: float = 20.0) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if needle in line), None)

        line: str = wait_for(found, timeout=timeout, what=f"{needle!r} in {self.lines[-5:]}")
        return line


def test_cli_follow_sees_a_line_printed_after_it_started(live: LiveEcho) -> None:
    (iid,) = live.instances(live.fid)
    proc = subprocess.Popen(
        [NVCF_LITE, "logs", live.fid, "--follow", "--tail", "1"],
        env=live.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = Reader(proc.stdout)  # type: ignore[arg-type]
        err = Reader(proc.stderr)  # type: ignore[arg-type]
        err.until("1 container(s) (1 running)")
        out.until(f"{iid} | ")  # the tail arrived: the follow is open
        marker = f"printed-later-{uuid.uuid4().hex[:8]}"
        live.say(live.fid, marker)
        line = out.until(marker)
        assert line.startswith(f"{iid} | function_server: ") and line.endswith(f": {marker}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
        proc.wait()


def test_http_follow_streams_new_lines(live: LiveEcho) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=30)
    path = f"/v2/nvcf/functions/{live.fid}/versions/{live.vid}/logs?follow=true&tail=0"
    conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    resp = conn.getresponse()
    try:
        assert resp.status == 200
        assert resp.getheader("content-type", "").startswith("text/plain")
        assert resp.getheader("transfer-encoding") == "chunked"
        body = Reader(resp)  # type: ignore[arg-type]
        time.sleep(0.5)  # tail=0: nothing arrives until the function prints
        assert body.lines == []
        marker = f"streamed-{uuid.uuid4().hex[:8]}"
        live.say(live.fid, marker)
        assert body.until(marker).endswith(f": {marker}")
    finally:
        if conn.sock is not None:  # unblocks the reading thread: the client hangs up
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()


def test_http_logs_tail_and_user_errors(live: LiveEcho) -> None:
    base = f"/v2/nvcf/functions/{live.fid}/logs"
    marker = f"tailed-{uuid.uuid4().hex[:8]}"
    live.say(live.fid, marker)
    status, _, data = live.server.call("GET", f"{base}?tail=1")
    assert status == 200 and marker in data.decode() and data.count(b"\n") == 1
    (iid,) = live.instances(live.fid)
    status, _, data = live.server.call("GET", f"{base}?instanceId={iid[:8]}&tail=1")
    assert status == 200 and data.decode().startswith("function_server: ")  # one: no prefix
    org = f"/v2/orgs/local/nvcf/functions/{live.fid}/logs?tail=1"
    assert live.server.call("GET", org)[0] == 200

    def problem(path: str, status: int, **kw: Any) -> dict[str, Any]:
        got, headers, body = live.server.call("GET", path, **kw)
        assert got == status, body
        assert headers["content-type"].startswith("application/problem+json")
        doc: dict[str, Any] = json.loads(body)
        assert doc["status"] == status and doc["instance"] == path.split("?")[0]
        return doc

    assert "tail" in problem(f"{base}?tail=-1", 400)["detail"]
    problem(f"{base}?tail=many", 400)
    problem(f"{base}?follow=perhaps", 400)
    assert "nope" in problem(f"{base}?instanceId=nope", 404)["detail"]
    unknown = str(uuid.uuid4())
    problem(f"/v2/nvcf/functions/{unknown}/logs", 404)
    problem(f"/v2/nvcf/functions/{live.fid}/versions/{unknown}/logs", 404)
    problem(f"{base}", 401, headers={"Authorization": "Bearer nvapi-" + "Q" * 64})


def test_a_replaced_instance_keeps_its_logs(live: LiveEcho) -> None:
    fid, vid = live_echo(live.server.json, "crashy")
    (first,) = live.instances(fid)
    status, _, _ = live.server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"crash": True})
    assert status >= 400  # the container died answering

    def replaced() -> dict[str, str] | None:
        found = live.instances(fid)
        return found if found.get(first) == "exited" and len(found) == 2 else None

    states = wait_for(replaced, what="a replacement beside the kept container")
    (second,) = set(states) - {first}
    wait_for(lambda: live.instances(fid)[second] == "running", what="the replacement running")

    done = live.cli(fid)
    assert done.returncode == 0, done.stderr
    assert "2 container(s) (1 running)" in done.stderr
    lines = done.stdout.splitlines()
    assert f"{first} | function_server: crash requested: exiting with code 7" in lines
    assert lines[0].startswith(f"{first} | ")  # oldest first
    assert any(line.startswith(f"{second} | function_server: listening") for line in lines)

    only = live.cli(fid, "--version", vid, "--instance", first[:8], "--tail", "1")
    assert only.returncode == 0, only.stderr
    assert only.stdout == "function_server: crash requested: exiting with code 7\n"

    status, _, data = live.server.call("GET", f"/v2/nvcf/functions/{fid}/logs")
    over_http = data.decode().splitlines()
    # the same over HTTP, read a moment later: the replacement may have printed more since
    assert status == 200 and over_http[: len(lines)] == lines

    live.server.json("DELETE", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    wait_for(lambda: not live.instances(fid), what="every container removed on undeploy")
    gone = live.cli(fid)
    assert gone.returncode == 1 and "no containers of function" in gone.stderr


def test_cli_refuses_what_is_not_an_id(live: LiveEcho) -> None:
    done = live.cli("not-an-id")
    assert done.returncode == 2 and "is not an id" in done.stderr
    done = live.cli(live.fid, "--tail", "-3")
    assert done.returncode == 2 and "must be a number of lines" in done.stderr
