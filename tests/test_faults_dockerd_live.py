"""A restart of `dockerd` while instances run, on a private Docker daemon the test starts (the
shared one, which other tests use, is never touched): its own socket, data-root, exec-root,
pidfile and bridge, no iptables rules (published 127.0.0.1 ports go through docker-proxy), the
echo image copied into it from the shared daemon. It needs root (CI runs as root).

A live `nvcf-lite serve` points at it (docker.base_url); the echo function runs one instance
with two slots, both held by slow requests, and 30 requests wait in the queue. The daemon is
killed with SIGKILL (as in a crash of the engine) and started again. Then: the instance is
replaced (a new container) or recovered (the same one), the version is ACTIVE again and its
deployment's healthInfo names what failed; every queued request completes with its own
result; the two in flight end with their result or the inference-connection problem; none
is lost. Summary line: `FAULT dockerd-restart: ...`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import wait_for
from docker_support import ECHO_IMAGE, engine_answering
from fault_support import Answer, collect, invoke_all, summary
from invocation_support import docker_env, live_echo
from server_support import ServerProcess

from nvcf_lite.errors import CONNECTION_ERROR

pytestmark = pytest.mark.docker


class PrivateDockerd:
    """A dockerd of the test's own, under `root` (short: a unix socket path is <108 bytes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.bridge = f"nvcf{random.randrange(16**4):04x}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: docker.DockerClient | None = None

    def make_bridge(self) -> None:
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        (self.root / "daemon.json").write_text("{}")

    def start(self, timeout_s: float = 60) -> None:
        (self.root / "pid").unlink(missing_ok=True)
        with open(self.root / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    "dockerd",
                    f"--host={self.url}",
                    f"--data-root={self.root / 'data'}",
                    f"--exec-root={self.root / 'exec'}",
                    f"--pidfile={self.root / 'pid'}",
                    f"--config-file={self.root / 'daemon.json'}",
                    f"--bridge={self.bridge}",
                    "--iptables=false",
                    "--ip-masq=false",
                    "--ip-forward=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        what = "private dockerd"
        self.client = engine_answering(self.process, self.url, timeout_s, what, self.log)

    def kill(self) -> None:
        """SIGKILL of dockerd and of the containerd it runs, as in a crash of the engine (the
        containerd shims, and so the containers, live on until the next start decides)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None
        for pid in self.own_pids(b"containerd\0"):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.own_pids(b"containerd\0"), 10, "containerd gone")
        # Where pid 1 reaps no orphans (a container), the dead containerd stays a zombie that
        # its pid file names, and the next dockerd waits for it forever: a host's init reaps it.
        (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def load(self, shared: docker.DockerClient, image: str) -> None:
        assert self.client is not None
        data = b"".join(shared.images.get(image).save(named=image))
        self.client.images.load(data)

    def log(self) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def own_pids(self, program: bytes = b"") -> list[int]:
        """Processes whose command line names this daemon's directory (its containerd, its
        shims): only ones this test started; `program`: whose command line starts so."""
        found = []
        marker = str(self.root).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and cmdline.startswith(program):
                found.append(int(entry))
        return found

    def close(self) -> None:
        if self.process is None and self.sock.exists():
            try:
                self.start(timeout_s=20)  # to remove its containers cleanly
            except RuntimeError:
                pass
        if self.process is not None and self.client is not None:
            try:
                for c in self.client.containers.list(all=True):
                    c.remove(force=True)
            except Exception as exc:
                print(f"private dockerd: removing containers failed: {exc}")
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid in self.own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_dockerd(dock: docker.DockerClient) -> Iterator[PrivateDockerd]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("ip") is None:
        pytest.skip("a private dockerd needs root, dockerd and ip (CI has all three)")
    daemon = PrivateDockerd(Path(tempfile.mkdtemp(prefix="nvcfd-", dir="/tmp")))
    try:
        daemon.make_bridge()
        daemon.start()
        daemon.load(dock, ECHO_IMAGE)
        yield daemon
    except BaseException:
        print(f"--- private dockerd log ---\n{daemon.log()[-6000:]}")
        raise
    finally:
        daemon.close()


def deployment(server: ServerProcess, fid: str, vid: str) -> dict[str, Any]:
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    found: dict[str, Any] = server.json("GET", path)["deployment"]
    return found


def test_a_dockerd_restart_while_instances_run_loses_no_request(
    tmp_path: Path, ns: str, private_dockerd: PrivateDockerd
) -> None:
    env = docker_env(ns, NVCF_LITE_DOCKER__BASE_URL=private_dockerd.url)
    server = ServerProcess(tmp_path / "srv", env=env)
    with server:
        fid, vid = live_echo(server.json, maxRequestConcurrency=2)
        path = f"/v2/nvcf/pexec/functions/{fid}"
        (before,) = [i["containerId"] for i in deployment(server, fid, vid)["instances"]]
        assert private_dockerd.client is not None
        assert private_dockerd.client.containers.get(before).status == "running"

        slow = invoke_all(server, path, [{"n": "slow0", "delay": 4}, {"n": "slow1", "delay": 4}])
        bodies = [{"n": i} for i in range(30)]
        queued = invoke_all(server, path, bodies, poll=1, concurrency=30)
        answers = [a for a in [*slow, *queued] if isinstance(a, Answer)]
        assert len(answers) == 32, [*slow, *queued]
        assert Counter(a.status for a in answers) == {202: 32}

        private_dockerd.kill()
        time.sleep(1.0)  # the engine is gone for a moment: nvcf-lite's calls to it fail
        outage = server.json("GET", "/health")["docker"]
        assert outage["status"] == "unavailable", outage  # /health says the engine is gone
        private_dockerd.start()

        ended = collect(server, [a.request_id for a in answers], deadline_s=120)
        final = Counter(a.status for a in ended.values())
        for a, body in zip(queued, bodies, strict=True):
            assert isinstance(a, Answer)
            got = ended[a.request_id]
            assert got.status == 200, (got.status, got.body[:300])
            assert got.json()["body"]["n"] == body["n"]
        for a in slow:
            assert isinstance(a, Answer)
            got = ended[a.request_id]
            assert got.status in (200, 500), (got.status, got.body[:300])
            if got.status == 500:
                assert got.json()["type"] == CONNECTION_ERROR, got.body[:300]

        def active_again() -> dict[str, Any] | None:
            d = deployment(server, fid, vid)
            ready = [i for i in d["instances"] if i["state"] == "ready"]
            return d if d["functionStatus"] == "ACTIVE" and len(ready) == 1 else None

        after = wait_for(active_again, 60, "ACTIVE again with one ready instance")
        (now,) = [i["containerId"] for i in after["instances"]]
        replaced = now != before
        health_info = after.get("healthInfo") or []
        if replaced:
            # what happened is said: the failed instance's reason stays in healthInfo
            assert health_info and health_info[0]["error"], after
        again = invoke_all(server, path, [{"n": i} for i in range(5)], poll=30)
        assert [getattr(a, "status", a) for a in again] == [200] * 5
        assert server.json("GET", "/health")["docker"]["status"] == "ok"
    summary(
        "dockerd-restart",
        accepted=len(answers),
        in_flight=len(slow),
        queued=len(queued),
        terminal=len(ended),
        lost=len(answers) - len(ended),
        ok=final[200],
        connection_error=final[500],
        instance="replaced" if replaced else "recovered",
        health_docker_during_outage=outage["status"],
        health_info=json.dumps([h.get("error") for h in health_info])[:80].replace(" ", "_"),
    )
