"""The one launcher of a real `nvcf-lite serve` for tests, and the one `free_port()`.

`ServerProcess` runs the server as a subprocess over one data_dir on a free port, plain HTTP or
TLS (`cert`), ready when /health answers: `start()`, `stop()` (SIGTERM), `kill()` (SIGKILL, as
after a crash), `start()` again over the same data_dir. As a context manager it starts (unless
started), prints the server's log when the body raises, and stops.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from conftest import ADMIN_KEY

LOG_TAIL = 5000  # characters of the server's log in a start failure


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nvcf_lite_command() -> list[str]:
    """The `nvcf-lite` console script of the environment running the tests."""
    script = Path(sys.executable).with_name("nvcf-lite")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nvcf_lite"]


def clean_environ() -> dict[str, str]:
    """os.environ without NVCF_LITE_* (any unknown one is a config error) nor NGC settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("NVCF_LITE_", "NGC_", "NVCF_SAK", "REQUESTS_CA_BUNDLE"))
    }


class ServerProcess:
    """`nvcf-lite serve` over `workdir`/data; `kill()` is SIGKILL of the whole process group.

    `key` is the bootstrap admin key (and the one `call` sends), `org` the account's org name;
    `cert` and `tls_key` serve HTTPS. `bare` runs `nvcf-lite` with no verb (the port then comes
    from the environment).
    """

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str] | None = None,
        *,
        key: str = ADMIN_KEY,
        org: str = "local",
        cert: Path | None = None,
        tls_key: Path | None = None,
        bare: bool = False,
    ) -> None:
        self.workdir, self.key, self.org, self.cert = workdir, key, org, cert
        self.port = free_port()
        self.url = f"{'https' if cert else 'http'}://127.0.0.1:{self.port}"
        self.env = {
            **clean_environ(),
            # An installed service's /etc/nvcf-lite/config.toml must not leak into a test server.
            "NVCF_LITE_SYSTEM_CONFIG": "/nonexistent/nvcf-lite/config.toml",
            "NVCF_LITE_STORE__DATA_DIR": str(self.data_dir),
            "NVCF_LITE_DOCKER__SECRETS_DIR": str(self.secrets_dir),
            "NVCF_LITE_AUTH__BOOTSTRAP_KEY": key,
            "NVCF_LITE_ACCOUNT__ORG_NAME": org,
            **({"NVCF_LITE_SERVER__TLS_CERT": str(cert)} if cert else {}),
            **({"NVCF_LITE_SERVER__TLS_KEY": str(tls_key)} if tls_key else {}),
            **({"NVCF_LITE_SERVER__PORT": str(self.port)} if bare else {}),
            **(env or {}),
        }
        self.args = [] if bare else ["serve", "--port", str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"
        context = ssl.create_default_context(cafile=str(cert) if cert else None)
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def secrets_dir(self) -> Path:
        """docker.secrets_dir: beside data_dir, as the default (/run/nvcf-lite) is outside it."""
        return self.workdir / "run-secrets"

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*nvcf_lite_command(), *self.args],
                cwd=self.workdir,  # no stray ./config.toml
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log()[-LOG_TAIL:]
                raise RuntimeError(f"nvcf-lite exited {self.process.returncode}:\n{tail}")
            try:
                with self._opener.open(f"{self.url}/health", timeout=2):
                    return self
            except urllib.error.HTTPError as exc:
                if exc.code == 503:  # degraded (no Docker, no NVML) is up too
                    return self
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"nvcf-lite not ready on {self.url}: {last}\n{self.log()[-LOG_TAIL:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as after a crash or OOM kill."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL: nothing it started may outlive a test."""
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

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            if error is not None:
                print(
                    f"--- nvcf-lite serve log ({self.log_path}) ---\n{self.log()}", file=sys.stderr
                )
        finally:
            self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request with the key; `body` is sent as JSON, `raw` as it is."""
        data = json.dumps(body).encode() if body is not None else raw
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with self._opener.open(request, timeout=timeout_s) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, _, data = self.call(method, path, body, **kw)
        assert status < 300, f"{method} {path}: {status} {data[:500]!r}"
        return json.loads(data) if data else None


@contextmanager
def serving(proc: ServerProcess) -> Iterator[ServerProcess]:
    """`proc` started, and stopped afterwards; a test that fails gets the server's log tail."""
    proc.start()
    try:
        yield proc
    except BaseException:
        print(proc.log()[-20000:])
        raise
    finally:
        proc.stop()
