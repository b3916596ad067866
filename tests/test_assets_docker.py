"""Input assets reach the container: a 1 MB binary asset, uploaded through the signed URL, is
read back by the echo function at <NVCF-ASSET-DIR>/<assetId> with the exact bytes (spec §2.5)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import bearer
from invocation_support import docker_config, echo
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime

pytestmark = pytest.mark.docker


@pytest.fixture
def api(ns: str, app_factory: Callable[..., TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    return app_factory(docker_config(tmp_path, ns), runtime_factory=docker_runtime)


def upload(api: TestClient[Any], data: bytes) -> str:
    headers = {"Content-Type": "application/octet-stream"}
    created = api.post(
        "/v2/nvcf/assets",
        json={"contentType": "application/octet-stream", "description": "blob"},
        headers=bearer(),
    ).json()
    url = urlsplit(created["uploadUrl"])
    put = api.put(
        f"{url.path}?{url.query}",
        content=data,
        headers={**headers, "x-amz-meta-nvcf-asset-description": "blob"},
    )
    assert put.status_code == 200, put.text
    return str(created["assetId"])


def test_the_container_reads_the_exact_asset_bytes(api: TestClient[Any], tmp_path: Path) -> None:
    fid, _ = echo(api)
    data = os.urandom(1024 * 1024)
    first, second = upload(api, data), upload(api, b"second asset")
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}",
        json={"readAssets": True},
        headers={**bearer(), "NVCF-INPUT-ASSET-REFERENCES": f" {first} ,, {second} "},
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    rid = r.headers["nvcf-reqid"]
    assert seen["headers"]["nvcf-function-asset-ids"] == f"{first},{second}"
    assert seen["headers"]["nvcf-asset-dir"] == f"/var/inf/inputAssets/{rid}"
    got = seen["assets"][first]
    assert got["sha256"] == hashlib.sha256(data).hexdigest() and got["size"] == len(data)
    assert got["path"] == f"/var/inf/inputAssets/{rid}/{first}"
    assert seen["assets"][second]["sha256"] == hashlib.sha256(b"second asset").hexdigest()


def test_bad_asset_references_are_refused_before_anything_runs(api: TestClient[Any]) -> None:
    fid, _ = echo(api)
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}",
        json={},
        headers={**bearer(), "NVCF-INPUT-ASSET-REFERENCES": "not-a-uuid"},
    )
    assert r.status_code == 400
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}",
        json={},
        headers={**bearer(), "NVCF-INPUT-ASSET-REFERENCES": "3e4666bf-d5e5-4aa7-b8ce-cefe41c7568a"},
    )
    assert r.status_code == 404
