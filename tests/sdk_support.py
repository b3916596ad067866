"""The real NGC SDK against a real `nvcf-lite serve` over HTTPS, for the `sdk` tests.

* `ensure_sdk_venv()` builds (once; later runs reuse it) a separate virtualenv with
  `ngcsdk==4.37.0` under `.sdk-venvs/` in the repo root. Its dependencies clash with ours, so it
  is never installed into `.venv`. A marker file written last says the install finished.
  `ensure_sdk3_venv()` does the same for ngcsdk 3.151.0 (the last release with invoke).
* `make_cert()` writes a self-signed certificate for 127.0.0.1 (openssl CLI; else the
  `cryptography` package the SDK venv brings).
* `live_server()` runs `nvcf-lite serve` (server_support.ServerProcess) with TLS and stops it.
* `run_sdk()` runs a script in the SDK venv, pointed at that server the way NVCF users point the
  SDK at a host (`NGC_CLI_API_URL`, `REQUESTS_CA_BUNDLE`), and returns its JSON result together
  with every HTTP request the SDK made (recorded inside the SDK process).
  `run_sdk3()` does it for ngcsdk 3.x, its hard-coded NVCF URL table pointed at the server.

When the SDK cannot be installed (no package index), the tests skip; with
NVCF_LITE_REQUIRE_SDK=1 (CI) that is a failure instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from server_support import ServerProcess, clean_environ, nvcf_lite_command

SDK_VERSION = "4.37.0"
SDK_REQUIREMENT = f"ngcsdk=={SDK_VERSION}"
REQUIRE_ENV = "NVCF_LITE_REQUIRE_SDK"
REPO_ROOT = Path(__file__).resolve().parents[1]
VENVS_DIR = REPO_ROOT / ".sdk-venvs"
SDK_VENV = VENVS_DIR / f"ngcsdk-{SDK_VERSION}"
SDK3_VERSION = "3.151.0"
# ngcbase 3.x imports pkg_resources, which setuptools 81 dropped
SDK3_REQUIREMENTS = [f"ngcsdk=={SDK3_VERSION}", "setuptools<81"]
SDK3_VENV = VENVS_DIR / f"ngcsdk-{SDK3_VERSION}"
MARKER = ".nvcf-lite-installed"
RESULT_PREFIX = "@@NVCF-LITE-SDK-RESULT@@ "
KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def sdk_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def skip_or_fail(reason: str) -> NoReturn:
    if sdk_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def new_key() -> str:
    """A well-formed nvapi- key: the prefix and 64 characters of [A-Za-z0-9_-]."""
    return "nvapi-" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(64))


# --- the SDK virtualenv -----------------------------------------------------------------------


def _marker_text(requirements: Sequence[str]) -> str:
    return " ".join(requirements) + f"\npython {sys.version_info.major}.{sys.version_info.minor}\n"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _venv_ready(venv: Path, requirements: Sequence[str]) -> bool:
    marker = venv / MARKER
    return (
        marker.is_file()
        and marker.read_text() == _marker_text(requirements)
        and _venv_python(venv).exists()
    )


def ensure_venv(venv: Path, requirements: Sequence[str], check: str) -> Path:
    """The python of a venv with `requirements`, built when missing or stale (else skip/fail).

    A lock file serialises concurrent test sessions; the marker (requirements and Python
    version) is written only after the install succeeded and `python -c check` works, so an
    interrupted build is redone on the next run. A ready venv costs one file read.
    """
    if _venv_ready(venv, requirements):
        return _venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _venv_ready(venv, requirements):
            _build_venv(venv, requirements, check)
    return _venv_python(venv)


def ensure_sdk_venv(venv: Path = SDK_VENV) -> Path:
    """The python of the ngcsdk 4.37.0 venv (`.sdk-venvs/ngcsdk-4.37.0`)."""
    return ensure_venv(venv, [SDK_REQUIREMENT], "import ngcsdk, nvcf.api.function")


def ensure_sdk3_venv(venv: Path = SDK3_VENV) -> Path:
    """The python of the ngcsdk 3.151.0 venv (the last release with invoke)."""
    return ensure_venv(venv, SDK3_REQUIREMENTS, "import ngcsdk, nvcf.api.asset, nvcf.constants")


def _build_venv(venv: Path, requirements: Sequence[str], check: str) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    python = str(_venv_python(venv))
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    pip += ["--timeout", "30", "--retries", "2"]  # an unreachable index fails in minutes
    steps: list[list[str]] = [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, "--no-input", *requirements],
        [python, "-c", check],
    ]
    what = " ".join(requirements)
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            skip_or_fail(f"cannot build the venv for {what} at {venv}: {exc}")
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()
            tail = "\n".join(line for line in output if not line.startswith("WARNING:"))[-2000:]
            skip_or_fail(
                f"cannot build the venv for {what} at {venv} "
                f"(`{' '.join(cmd[:4])} ...` exited {done.returncode}):\n{tail}"
            )
    (venv / MARKER).write_text(_marker_text(requirements))


# --- TLS ----------------------------------------------------------------------------------------


_CRYPTOGRAPHY_CERT = """
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5))
    .not_valid_after(now + datetime.timedelta(days=2))
    .add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
    )
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    .sign(key, hashes.SHA256())
)
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"""


def make_cert(directory: Path, fallback_python: Path | None = None) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (valid two days) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl:
        cmd = [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ]  # fmt: skip
    elif fallback_python is not None:
        cmd = [str(fallback_python), "-c", _CRYPTOGRAPHY_CERT, str(cert), str(key)]
    else:
        skip_or_fail("no openssl CLI and no python with `cryptography` to make a certificate")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"making a certificate failed:\n{done.stdout}{done.stderr}", pytrace=False)
    return cert, key


# --- the server ---------------------------------------------------------------------------------


@contextmanager
def live_server(
    workdir: Path,
    cert: Path | None,
    tls_key: Path | None,
    *,
    api_key: str,
    org: str,
    extra_env: dict[str, str] | None = None,
    start_timeout_s: float = 30.0,
) -> Iterator[ServerProcess]:
    """A ServerProcess as the SDK tests run it: https:// (http:// when `cert` is None), the
    access log on, `api_key` the bootstrap key of org `org`; its log is printed when the body
    raises."""
    env = {"NVCF_LITE_SERVER__ACCESS_LOG": "true", **(extra_env or {})}
    server = ServerProcess(workdir, env, key=api_key, org=org, cert=cert, tls_key=tls_key)
    with server.start(start_timeout_s):
        yield server


def admin(server: ServerProcess, *args: str) -> str:
    """Run `nvcf-lite ARGS` (an admin verb) on the live server's store; its stdout."""
    done = subprocess.run(
        [*nvcf_lite_command(), *args],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"nvcf-lite {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def mint_key(server: ServerProcess, *scopes: str) -> str:
    """A new API key with these NVCF scopes, made by `nvcf-lite keys create` on the live store."""
    scoped = [part for scope in scopes for part in ("--scope", scope)]
    out = admin(server, "keys", "create", "--description", "sdk test", *scoped)
    return out.strip().splitlines()[-1]


# --- running SDK scripts ------------------------------------------------------------------------


# Runs first in the SDK process: records every HTTP request the SDK makes (below `requests`,
# at the adapter, so get-caller-info and the management calls are all seen).
_PRELUDE = """
import json, sys, traceback
from urllib.parse import urlsplit
import requests.adapters

WIRE = []
_send = requests.adapters.HTTPAdapter.send

def _recording_send(self, request, *args, **kwargs):
    body = request.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    url = urlsplit(request.url)
    entry = {
        "method": request.method,
        "path": url.path,
        "query": url.query,
        "headers": {k: v for k, v in request.headers.items()},
        "body": body,
    }
    WIRE.append(entry)
    response = _send(self, request, *args, **kwargs)
    entry["status"] = response.status_code
    return response

requests.adapters.HTTPAdapter.send = _recording_send

ARGS = json.loads(sys.argv[1])


def client(api_key=None, org=None):
    import ngcsdk
    c = ngcsdk.Client()
    c.configure(api_key=api_key or ARGS["api_key"], org_name=org or ARGS["org"])
    return c
"""

_EPILOGUE = f"""
def _emit():
    out = {{"ok": True, "result": None, "error": None, "wire": WIRE}}
    try:
        out["result"] = main(ARGS)
    except BaseException as exc:
        out["ok"] = False
        out["error"] = {{
            "type": type(exc).__name__,
            "module": type(exc).__module__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }}
    print({RESULT_PREFIX!r} + json.dumps(out, default=str), flush=True)

_emit()
"""


@dataclass
class WireCall:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str | None
    status: int | None

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class SdkRun:
    ok: bool
    result: Any
    error: dict[str, str] | None
    wire: list[WireCall]
    stdout: str
    stderr: str
    elapsed_s: float
    server_log: str = field(repr=False, default="")

    def calls(self, method: str | None = None, prefix: str = "") -> list[WireCall]:
        return [
            c
            for c in self.wire
            if (method is None or c.method == method) and c.path.startswith(prefix)
        ]

    def describe(self) -> str:
        lines = [f"{c.method} {c.path}{'?' + c.query if c.query else ''} -> {c.status}"
                 for c in self.wire]  # fmt: skip
        err = json.dumps(self.error, indent=2) if self.error else ""
        return (
            f"SDK run ok={self.ok}\nerror: {err}\nwire:\n  " + "\n  ".join(lines)
            + f"\nstderr:\n{self.stderr[-4000:]}\nserver log (tail):\n{self.server_log[-4000:]}"
        )  # fmt: skip

    def expect_ok(self) -> Any:
        assert self.ok, self.describe()
        return self.result

    def expect_error(self, type_name: str) -> str:
        assert not self.ok, f"expected {type_name}, the SDK call succeeded:\n{self.describe()}"
        assert self.error is not None and self.error["type"] == type_name, self.describe()
        return self.error["message"]


def run_sdk(
    python: Path,
    server: ServerProcess,
    script: str,
    home: Path,
    timeout_s: float = 120.0,
    extra_env: dict[str, str] | None = None,
    **args: Any,
) -> SdkRun:
    """Run `script` (which defines `main(args) -> JSON-able`) in the SDK venv against `server`.

    `args` reach `main` with `api_key` and `org` defaulting to the server's; `client()` in the
    script returns an `ngcsdk.Client` configured with them (or with the ones given).
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"sdk_script_{time.monotonic_ns()}.py"
    path.write_text(_PRELUDE + textwrap.dedent(script) + _EPILOGUE)
    env = {
        **clean_environ(),
        "NGC_CLI_API_URL": server.url,
        **({"REQUESTS_CA_BUNDLE": str(server.cert)} if server.cert else {}),
        "NGC_CLI_HOME": str(home),
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **(extra_env or {}),
    }
    payload = json.dumps({"api_key": server.key, "org": server.org, **args})
    started = time.monotonic()
    done = subprocess.run(
        [str(python), str(path), payload],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=timeout_s,
    )
    return sdk_result(done, server.log(), time.monotonic() - started)


# Runs after the recording prelude: ngcsdk 3.x's clients read this table when they are built.
_POINT_AT_SERVER = """
import nvcf.constants
nvcf.constants.NVCF_URL_MAPPING["prod"] = ARGS["nvcf_url"]
"""


def run_sdk3(python: Path, server: ServerProcess, script: str, home: Path, **args: Any) -> SdkRun:
    """`run_sdk` for ngcsdk 3.x, its hard-coded NVCF URL table pointed at `server`."""
    return run_sdk(
        python,
        server,
        _POINT_AT_SERVER + textwrap.dedent(script),
        home,
        timeout_s=180.0,
        extra_env={"PYTHONWARNINGS": "ignore"},
        nvcf_url=server.url,
        **args,
    )


Sdk = Callable[..., SdkRun]


def sdk_runner(python: Path, server: ServerProcess, home: Path) -> Sdk:
    """`run_sdk` bound to one venv, one server and one NGC home: `sdk(script, **args)`."""

    def run(script: str, **args: Any) -> SdkRun:
        return run_sdk(python, server, script, home, **args)

    return run


def sdk_result(done: subprocess.CompletedProcess[str], server_log: str, elapsed_s: float) -> SdkRun:
    """The JSON result line an SDK script prints (with the calls it made), as an SdkRun."""
    line = next(
        (ln for ln in reversed(done.stdout.splitlines()) if ln.startswith(RESULT_PREFIX)), None
    )
    if line is None:
        raise AssertionError(
            f"SDK script exited {done.returncode} without a result\nstdout:\n{done.stdout}\n"
            f"stderr:\n{done.stderr}\nserver log:\n{server_log[-4000:]}"
        )
    out = json.loads(line[len(RESULT_PREFIX) :])
    wire = [
        WireCall(
            method=c["method"],
            path=c["path"],
            query=c["query"],
            headers=c["headers"],
            body=c["body"],
            status=c.get("status"),
        )
        for c in out["wire"]
    ]
    return SdkRun(
        ok=out["ok"],
        result=out["result"],
        error=out["error"],
        wire=wire,
        stdout=done.stdout,
        stderr=done.stderr,
        elapsed_s=elapsed_s,
        server_log=server_log,
    )
