#!/usr/bin/env python3
"""Cold-start benchmark: how much nvcf-lite adds to starting a container.

In one run, n times each:
  (a) raw Docker: create+start the echo image (port published on 127.0.0.1) until /health
      answers 200 (polled every 5 ms);
  (b) nvcf-lite: the first invocation of a minInstances=0 function (no container running)
      until its 200 answer;
  (c) nvcf-lite with the warm pool: the same from a paused instance (an unpause).
Prints the medians and the ratios b/a and c/a (target b/a <= 1.5).

    .venv/bin/python scripts/bench_coldstart.py [-n 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "nvcf-lite-test/echo:1"
KEY = "nvapi-" + "B" * 60 + "bnch"


CPUS = len(os.sched_getaffinity(0))
UNTHROTTLED = {
    "NVCF_LITE_RESOURCES__CPU_CORES": str(16 * CPUS),
    "NVCF_LITE_RESOURCES__INSTANCE_TYPES": json.dumps([{"name": "CPU.x1", "cpu_cores": CPUS}]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()
    except OSError:
        return 0, {}, b""


def raw_docker(client: docker.DockerClient, label: str) -> float:
    t0 = time.perf_counter()
    c = client.containers.run(
        IMAGE, detach=True, ports={"8000/tcp": ("127.0.0.1", None)}, labels={label: "1"}
    )
    try:
        c.reload()
        port = int(c.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"])
        while http("GET", f"http://127.0.0.1:{port}/health")[0] != 200:
            time.sleep(0.005)
        return time.perf_counter() - t0
    finally:
        c.remove(force=True)


class Server:
    def __init__(self, workdir: Path, namespace: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")}
        env.update(
            {
                "NVCF_LITE_SYSTEM_CONFIG": "/nonexistent/nvcf-lite/config.toml",
                "NVCF_LITE_STORE__DATA_DIR": str(workdir / "data"),
                "NVCF_LITE_AUTH__BOOTSTRAP_KEY": KEY,
                "NVCF_LITE_DOCKER__NAMESPACE": namespace,
                "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "false",
                "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "1",
                "NVCF_LITE_SCHEDULER__SCALE_DOWN_IDLE_S": "0.3",
                "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.2",
                "NVCF_LITE_SERVER__LOG_LEVEL": "warning",
                # The functions run unthrottled, as before instance types had limits: a
                # CPU.x1 quota of every core (the baseline must not be slowed down), and
                # totals large enough that every deployment of the run is placed.
                **UNTHROTTLED,
            }
        )
        script = Path(sys.executable).with_name("nvcf-lite")
        self.proc = subprocess.Popen(
            [str(script), "serve", "--port", str(self.port)],
            cwd=workdir,
            env=env,
            stdout=open(workdir / "server.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while http("GET", f"{self.url}/health")[0] not in (200, 503):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("nvcf-lite did not start; see server.log")
            time.sleep(0.05)

    def call(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        return http(method, self.url + path, body, {"Authorization": f"Bearer {KEY}", **headers})

    def deploy(self, **extra: Any) -> tuple[str, str]:
        body = {
            "name": "cold",
            "inferenceUrl": "/echo",
            "containerImage": IMAGE,
            "healthUri": "/health",
        }
        f = json.loads(self.call("POST", "/v2/nvcf/functions", body)[2])["function"]
        spec = {"gpu": "CPU", "minInstances": 0, "maxInstances": 1, **extra}
        path = f"/v2/nvcf/deployments/functions/{f['id']}/versions/{f['versionId']}"
        code, _, text = self.call("POST", path, {"deploymentSpecifications": [spec]})
        assert code == 200, text
        return f["id"], f["versionId"]

    def states(self, fid: str, vid: str) -> list[str]:
        path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
        d = json.loads(self.call("GET", path)[2])["deployment"]
        return [i["state"] for i in d.get("instances") or []]

    def first_call(self, fid: str, vid: str, idle: list[str]) -> tuple[float, str]:
        deadline = time.monotonic() + 60
        while self.states(fid, vid) != idle:
            if time.monotonic() > deadline:
                raise SystemExit(f"never reached {idle}: {self.states(fid, vid)}")
            time.sleep(0.05)
        t0 = time.perf_counter()
        code, headers, _ = self.call(
            "POST", f"/v2/nvcf/pexec/functions/{fid}", {"x": 1}, **{"NVCF-POLL-SECONDS": "60"}
        )
        elapsed = time.perf_counter() - t0
        assert code == 200, code
        return elapsed, headers.get("NVCF-LITE-COLD-START", headers.get("nvcf-lite-cold-start", ""))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=10, help="runs of each kind (default 10)")
    args = parser.parse_args()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_test_images.py")],
        check=True,
        capture_output=True,
    )
    client = docker.from_env()
    label = f"nvcf-lite.bench-{uuid.uuid4().hex[:8]}"
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    raw_docker(client, label)  # warm the engine's caches once, like the others get
    a, b, c, notes_b, notes_c = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), namespace)
        try:
            fid_b, vid_b = server.deploy()
            fid_c, vid_c = server.deploy(warmPoolSeconds=3600)
            server.first_call(fid_c, vid_c, [])  # creates the instance the warm pool keeps
            for _ in range(args.n):
                a.append(raw_docker(client, label))
                t, note = server.first_call(fid_b, vid_b, [])
                b.append(t)
                notes_b.append(note)
                t, note = server.first_call(fid_c, vid_c, ["paused"])
                c.append(t)
                notes_c.append(note)
        finally:
            server.stop()
            for cont in client.containers.list(
                all=True, filters={"label": f"nvcf-lite.namespace={namespace}"}
            ):
                cont.remove(force=True)
    ma, mb, mc = (statistics.median(x) * 1000 for x in (a, b, c))
    print(f"runs per kind: {args.n}")
    rows = [
        ("(a) raw docker create+start -> first healthy 200", a, ma),
        ("(b) nvcf-lite first invocation, minInstances=0", b, mb),
        ("(c) nvcf-lite first invocation, paused instance", c, mc),
    ]
    for title, values, median in rows:
        low, high = min(values) * 1000, max(values) * 1000
        print(f"{title:50s}: median {median:7.1f} ms  (min {low:.1f}, max {high:.1f})")
    print(f"ratio b/a = {mb / ma:.2f}  (target <= 1.5: {'PASS' if mb / ma <= 1.5 else 'FAIL'})")
    print(f"ratio c/a = {mc / ma:.2f}")
    print(f"example breakdown (b): {notes_b[len(notes_b) // 2]}")
    print(f"example breakdown (c): {notes_c[len(notes_c) // 2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
