"""A real `nvcf-lite serve` process on plain HTTP for end-to-end tests: start, SIGKILL, restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import ADMIN_KEY


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")}
    # An installed service's /etc/nvcf-lite/config.toml must not leak into a test server.
    return {**env, "NVCF_LITE_SYSTEM_CONFIG": "/nonexistent/nvcf-lite/config.toml"}


class ServerProcess:
    """`nvcf-lite serve` over one data_dir; `kill()` is SIGKILL of the whole process group."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **_environ(),
            "NVCF_LITE_STORE__DATA_DIR": str(workdir / "data"),
            "NVCF_LITE_AUTH__BOOTSTRAP_KEY": ADMIN_KEY,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        script = Path(sys.executable).with_name("nvcf-lite")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(script), "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nvcf-lite exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return self
            except urllib.error.HTTPError:
                return self  # 503 (degraded) is up too
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nvcf-lite did not start:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as after a crash or OOM kill."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {ADMIN_KEY}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, _, data = self.call(method, path, body, **kw)
        assert status < 300, f"{method} {path}: {status} {data[:500]!r}"
        return json.loads(data) if data else None
