"""The asset flow of the real ngcsdk 3.151.0 (the last release with assets) against a real
`nvcf-lite serve` over plain HTTP (spec §2.5, §7.1, §9 item 7): upload (A1 + the signed PUT),
list, info, delete.

ngcsdk 3.x sends asset calls to a hard-coded NVCF URL table (`nvcf.constants.NVCF_URL_MAPPING`);
the script points its "prod" entry at the server, as spec §7.1 describes. Management calls
(get-caller-info) go to `NGC_CLI_API_URL`, which 3.x keeps as plain http. The SDK lives in its
own venv under `.sdk-venvs/` (its dependencies clash with ours).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asset_support import PlainServer, plain_server
from sdk_support import (
    _EPILOGUE,
    _PRELUDE,
    VENVS_DIR,
    SdkRun,
    _clean_environ,
    sdk_result,
    skip_or_fail,
)

pytestmark = pytest.mark.sdk

SDK3_VERSION = "3.151.0"
# ngcbase 3.x imports pkg_resources, which setuptools 81 dropped
REQUIREMENTS = [f"ngcsdk=={SDK3_VERSION}", "setuptools<81"]
SDK3_VENV = VENVS_DIR / f"ngcsdk-{SDK3_VERSION}"
MARKER = ".nvcf-lite-installed"


def _marker_text() -> str:
    return " ".join(REQUIREMENTS) + f"\npython {sys.version_info.major}.{sys.version_info.minor}\n"


def _ready(venv: Path) -> bool:
    marker = venv / MARKER
    return marker.is_file() and marker.read_text() == _marker_text()


def ensure_sdk3_venv(venv: Path = SDK3_VENV) -> Path:
    """The venv's python, built once (a lock serialises test sessions; the marker comes last)."""
    python = venv / "bin" / "python"
    if _ready(venv):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(venv):
            return python
        shutil.rmtree(venv, ignore_errors=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [*pip, "--no-input", *REQUIREMENTS],
            [str(python), "-c", "import ngcsdk, nvcf.api.asset, nvcf.constants"],
        ]
        for cmd in steps:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as exc:
                skip_or_fail(f"cannot build the ngcsdk {SDK3_VERSION} venv at {venv}: {exc}")
            if done.returncode != 0:
                lines = (done.stdout + done.stderr).splitlines()
                tail = "\n".join(ln for ln in lines if not ln.startswith("WARNING:"))[-2000:]
                skip_or_fail(f"cannot build the ngcsdk {SDK3_VERSION} venv at {venv}:\n{tail}")
        (venv / MARKER).write_text(_marker_text())
    return python


# Runs after the recording prelude: 3.x's asset client reads this table when it is built.
_POINT_AT_SERVER = """
import nvcf.constants
nvcf.constants.NVCF_URL_MAPPING["prod"] = ARGS["nvcf_url"]
"""


def run_sdk3(python: Path, server: PlainServer, script: str, home: Path, **args: Any) -> SdkRun:
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"sdk3_{time.monotonic_ns()}.py"
    path.write_text(_PRELUDE + _POINT_AT_SERVER + textwrap.dedent(script) + _EPILOGUE)
    env = {
        **_clean_environ(),
        "NGC_CLI_API_URL": server.url,
        "NGC_CLI_HOME": str(home),
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
    }
    payload = json.dumps({"api_key": server.key, "org": "local", "nvcf_url": server.url, **args})
    started = time.monotonic()
    done = subprocess.run(
        [str(python), str(path), payload],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=180,
    )
    return sdk_result(done, server.log(), time.monotonic() - started)


@pytest.fixture(scope="module")
def sdk3_python() -> Path:
    return ensure_sdk3_venv()


@pytest.fixture(scope="module")
def server(sdk3_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlainServer]:
    with plain_server(tmp_path_factory.mktemp("ngcsdk3") / "server") as live:
        yield live


FLOW = """
import os
def main(args):
    c = client()
    path = os.path.join(os.environ["HOME"], "red-cat.png")
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * 4096)
    assets = c.cloud_function.assets
    uploaded = assets.upload(path, "red-cat-photo")
    out = {"upload": uploaded, "list": assets.list(), "info": assets.info(uploaded["asset_id"])}
    out["delete"] = assets.delete(uploaded["asset_id"])
    out["list_after"] = assets.list()
    try:
        assets.info(uploaded["asset_id"])
        out["info_after"] = "found"
    except Exception as exc:
        out["info_after"] = type(exc).__name__ + ": " + str(exc)
    return out
"""


def test_ngcsdk3_asset_flow(sdk3_python: Path, server: PlainServer, tmp_path: Path) -> None:
    run = run_sdk3(sdk3_python, server, FLOW, tmp_path / "home")
    out = run.expect_ok()
    asset_id = out["upload"]["asset_id"]
    assert out["upload"] == {"asset_id": asset_id, "response_code": 200}
    entry = {
        "assetId": asset_id,
        "description": "red-cat-photo",
        "contentType": "image/png",
        "createdAt": out["info"]["asset"]["createdAt"],
    }
    assert out["list"] == {"assets": [entry]}
    assert out["info"] == {"asset": entry}
    assert out["delete"] is None
    assert out["list_after"] == {"assets": []}
    # 3.x prints only NGC's `requestStatus`, never a problem's detail: the type is what shows
    assert out["info_after"].startswith("ResourceNotFoundException"), out["info_after"]
    assert run.calls("GET", f"/v2/nvcf/assets/{asset_id}")[-1].status == 404

    put = run.calls("PUT", "/_nvcf-lite/uploads/assets/")
    assert len(put) == 1 and put[0].status == 200, run.describe()
    assert put[0].header("authorization") is None
    assert put[0].header("content-type") == "image/png"
    assert put[0].header("x-amz-meta-nvcf-asset-description") == "red-cat-photo"
    assert [c.status for c in run.calls("POST", "/v2/nvcf/assets")] == [200]
    assert [c.status for c in run.calls("DELETE", "/v2/nvcf/assets/")] == [204]
    assert not (server.data_dir / "blobs" / "assets" / asset_id).exists()


def test_ngcsdk3_upload_stores_the_exact_bytes(
    sdk3_python: Path, server: PlainServer, tmp_path: Path
) -> None:
    script = """
import os
def main(args):
    path = os.path.join(os.environ["HOME"], "notes.txt")
    with open(path, "wb") as f:
        f.write(args["data"].encode())
    return client().cloud_function.assets.upload(path, "meeting notes")
"""
    data = "hello from ngcsdk 3\n" * 1000
    out = run_sdk3(sdk3_python, server, script, tmp_path / "home", data=data).expect_ok()
    stored = server.data_dir / "blobs" / "assets" / out["asset_id"]
    assert stored.read_bytes() == data.encode()
    assert os.stat(stored).st_size == len(data)
