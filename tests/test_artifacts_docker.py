"""The model store's trees inside real containers (issue #16; spec §4.1): a deployed function
sees its models and resources at /config/models/{name} and /config/resources/{name}, byte for
byte (sha256 checked inside the container), and cannot write there; a model-only function runs
the configured default image and arguments.

The container is the stdlib probe server (scripts/store_probe_server.py), pushed into the store
as resource `probe` and run from its own mount, on the locally built echo image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from artifact_support import PROBE, PROBE_COMMAND, push, push_probe, sha256, store_path
from conftest import bearer
from docker_support import ECHO_IMAGE
from function_support import PLAIN, problem
from invocation_support import HEALTH, deploy, docker_config, wait_active
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime

pytestmark = pytest.mark.docker

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB
MODEL_FILES = {"1/model.plan": WEIGHTS, "config.pbtxt": b'name: "tiny"\n'}
DEFAULT_ARGS = f"{PROBE_COMMAND} --model-repository /config/models --marker=default-args"


def _api(factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str) -> TestClient[Any]:
    config = docker_config(
        tmp_path,
        ns,
        NVCF_LITE_MODELS__DEFAULT_IMAGE=ECHO_IMAGE,
        NVCF_LITE_MODELS__DEFAULT_ARGS=DEFAULT_ARGS,
    )
    return factory(config, runtime_factory=docker_runtime)


@pytest.fixture
def api(app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str) -> TestClient[Any]:
    return _api(app_factory, tmp_path, ns)


def register(api: TestClient[Any], **fields: Any) -> tuple[str, str]:
    body = {"name": "probe", "inferenceUrl": "/probe", "health": HEALTH, **fields}
    r = api.post(f"{PLAIN}/functions", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    fn = r.json()["function"]
    return fn["id"], fn["versionId"]


def probe(api: TestClient[Any], fid: str) -> dict[str, Any]:
    r = api.post(f"{PLAIN}/pexec/functions/{fid}", json={}, headers=bearer())
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    return report


def test_a_container_sees_its_models_read_only_with_the_pushed_bytes(
    api: TestClient[Any], tmp_path: Path
) -> None:
    push(api, "model", "tiny", "1", MODEL_FILES)
    push_probe(api)
    fid, vid = register(
        api,
        containerImage=ECHO_IMAGE,
        containerArgs=PROBE_COMMAND,
        # the uri names the stored model; it is mounted under the function's own name for it
        models=[{"name": "weights", "version": "1", "uri": "nvcf-lite://models/tiny/1"}],
        resources=[{"name": "probe", "version": "1", "uri": "ngc://org/probe:1"}],
    )
    deploy(api, fid, vid)
    wait_active(api, fid, vid)
    report = probe(api, fid)
    assert report["files"] == {
        "models/weights/1/model.plan": sha256(WEIGHTS),
        "models/weights/config.pbtxt": sha256(MODEL_FILES["config.pbtxt"]),
        "resources/probe/store_probe_server.py": sha256(PROBE.read_bytes()),
    }
    assert "Read-only file system" in report["writeError"], report
    assert not list((tmp_path / "data").rglob("written-by-the-container"))
    doc = problem(api.delete(store_path("model", "tiny", "1"), headers=bearer()), 409)
    assert vid in doc["detail"]


def test_a_model_only_function_runs_the_default_image_and_args(api: TestClient[Any]) -> None:
    push(api, "model", "tiny", "1", MODEL_FILES)
    push_probe(api)
    fid, vid = register(
        api,
        models=[{"name": "tiny", "version": "1", "uri": "ngc://org/tiny:1"}],
        resources=[{"name": "probe", "version": "1", "uri": "nvcf-lite://resources/probe/1"}],
    )
    deploy(api, fid, vid)
    wait_active(api, fid, vid)
    report = probe(api, fid)
    assert report["argv"] == DEFAULT_ARGS.split()[1:]  # python3 runs the script: argv[0] on
    assert report["files"]["models/tiny/1/model.plan"] == sha256(WEIGHTS)
