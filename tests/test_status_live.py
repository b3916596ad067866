"""`nvcf-lite status` against a running `nvcf-lite serve`, over the API, as an operator runs it.

The server deploys the echo function on a simulated L40 (Docker containers for real); the
status table and `--json` show the version ACTIVE with its instance (its GPU unit, the same
one Docker's container was given), its age, the requests in flight and queued while two slow
requests share its one slot, the host's GPU units used and free, and the CPU and memory its
instances hold. An unreachable server,
a refused key and a missing key are clear errors with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_KEY, wait_for
from docker_support import namespace_containers
from invocation_support import docker_env, live_echo
from server_support import ServerProcess, free_port

SIMULATED = json.dumps([{"name": "L40", "count": 2, "memory_mb": 46068}])
EXE = str(Path(sys.executable).with_name("nvcf-lite"))


def status(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`nvcf-lite status ...` from a directory without a config, in a clean environment."""
    environ = {"PATH": "/usr/bin:/bin", "NVCF_LITE_SYSTEM_CONFIG": str(tmp_path / "none.toml")}
    if os.environ.get("PYTHONPATH"):  # a checkout run through another checkout's venv
        environ["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [EXE, "status", *args],
        cwd=tmp_path,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def server(tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    env = docker_env(
        ns,
        NVCF_LITE_GPUS__SIMULATED=SIMULATED,
        NVCF_LITE_RESOURCES__CPU_CORES="2",  # a share of each L40 unit: 1 core, 2048 MiB
        NVCF_LITE_RESOURCES__MEMORY_MB="4096",
    )
    env["NVCF_LITE_SYSTEM_CONFIG"] = str(tmp_path / "none.toml")
    proc = ServerProcess(tmp_path / "server", env=env).start()
    yield proc
    proc.stop()


def invoke_slowly(server: ServerProcess, fid: str, seconds: float) -> threading.Thread:
    def run() -> None:
        server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"delay": seconds}, timeout_s=60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.docker
def test_status_shows_the_function_its_instance_queue_and_gpu_units(
    server: ServerProcess, tmp_path: Path, dock: Any, ns: str
) -> None:
    spec = {"gpu": "L40", "instanceType": "L40.GPU.1x", "maxRequestConcurrency": 1}
    fid, vid = live_echo(server.json, name="status-echo", **spec)
    # the URL from the config (here its environment), the key from $NVCF_LITE_API_KEY
    port = str(server.port)
    table = status(tmp_path, NVCF_LITE_SERVER__PORT=port, NVCF_LITE_API_KEY=ADMIN_KEY)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert f"at http://127.0.0.1:{port}: ok" in out and "docker ok" in out
    assert "GPU units: L40 1 used, 1 free (of 2)" in out
    assert "CPU and memory held by instances: 1 of 2 cores, 2048 of 4096 MiB" in out
    (row,) = [line for line in out.splitlines() if vid in line]
    assert row.split()[:6] == ["status-echo", fid, vid, "ACTIVE", "0", "1/1"]
    (inst_row,) = [line for line in out.splitlines() if vid[:8] in line and vid not in line]
    cells = inst_row.split()
    assert cells[1:5] == ["status-echo", vid[:8], "ready", "L40.GPU.1x"]
    assert cells[5].startswith("SIM-L40-") and cells[7] == "0/1"

    answer = status(tmp_path, "--json", "--url", server.url, "--api-key", ADMIN_KEY)
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout)
    assert report["gpus"] == [{"gpu": "L40", "total": 2, "used": 1, "free": 1}]
    assert report["resources"] == {
        "cpuCores": 2.0,
        "cpuCoresHeld": 1.0,
        "memoryMb": 4096,
        "memoryMbHeld": 2048,
    }
    (fn,) = [f for f in report["functions"] if f["functionId"] == fid]
    (version,) = fn["versions"]
    assert version["status"] == "ACTIVE" and version["queueDepth"] == 0
    assert "reason" not in version
    (inst,) = version["instances"]
    assert inst["state"] == "ready" and inst["inFlight"] == 0 and inst["ageS"] > 0
    assert inst["gpu"] == "L40" and inst["instanceType"] == "L40.GPU.1x"
    (container,) = namespace_containers(dock, ns)
    assert container.id == inst["containerId"]
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert inst["gpuUuids"] == [env["NVIDIA_VISIBLE_DEVICES"]]
    assert inst["instanceId"][:8] == cells[0]

    # two slow requests on one slot: one in flight, one queued
    threads = [invoke_slowly(server, fid, 4.0) for _ in range(2)]

    def busy() -> dict[str, Any] | None:
        done = status(tmp_path, "--json", "--url", server.url, "--api-key", ADMIN_KEY)
        v = json.loads(done.stdout)["functions"][0]["versions"][0]
        return v if v["instances"][0]["inFlight"] == 1 and v["queueDepth"] == 1 else None

    loaded = wait_for(busy, timeout=15, what="one request in flight and one queued")
    assert loaded["instances"][0]["maxRequestConcurrency"] == 1
    busy_table = status(tmp_path, "--url", server.url, "--api-key", ADMIN_KEY).stdout
    (row,) = [line for line in busy_table.splitlines() if vid in line]
    assert row.split()[3:5] == ["ACTIVE", "1"]
    (inst_row,) = [line for line in busy_table.splitlines() if " ready " in line]
    assert inst_row.split()[7] == "1/1"
    for thread in threads:
        thread.join(timeout=30)


@pytest.mark.docker
def test_a_refused_key_is_a_clear_error(server: ServerProcess, tmp_path: Path) -> None:
    done = status(tmp_path, "--url", server.url, "--api-key", "nvapi-not-a-key")
    assert done.returncode == 1 and done.stdout == ""
    assert f"nvcf-lite status: the server at {server.url} did not accept the API key" in (
        done.stderr
    )


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = status(tmp_path, "--url", url, "--api-key", ADMIN_KEY)
    assert done.returncode == 1 and done.stdout == ""
    assert f"nvcf-lite status: cannot reach the nvcf-lite server at {url}" in done.stderr
    assert "is `nvcf-lite serve` running there?" in done.stderr


def test_a_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    done = status(tmp_path, "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert "no API key: pass --api-key KEY or set $NVCF_LITE_API_KEY or $NGC_API_KEY" in (
        done.stderr
    )
