"""I5 by host against a real echo container (spec §2.3.9).

`Host: {function-id}.invocation.localhost` (or `{version-id}.{function-id}...`) sends any
method, path, query and body to the function as they came, the platform's own paths included,
and the container's answer comes back unwrapped. Requests go to 127.0.0.1; only the Host header
names the function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer
from function_support import problem
from invocation_support import docker_config, echo
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime

pytestmark = pytest.mark.docker


@pytest.fixture
def api(
    ns: str, app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> TestClient[Any]:  # `ns` first: its cleanup runs after the app stops
    return app_factory(docker_config(tmp_path, ns), runtime_factory=docker_runtime)


def test_the_host_names_the_function_and_the_request_reaches_it_unchanged(
    api: TestClient[Any],
) -> None:
    fid, vid = echo(api)
    host = {"Host": f"{fid}.invocation.localhost:8080", **bearer()}
    r = api.put(
        "/v2/nvcf/functions?x=1&y=two",  # the platform's path, but this host is the function's
        content=b"plain text body",
        headers={**host, "Content-Type": "text/plain", "X-Custom": "yes"},
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    assert (seen["method"], seen["path"], seen["rawQuery"]) == (
        "PUT",
        "/v2/nvcf/functions",
        "x=1&y=two",
    )
    assert seen["body"] == "plain text body" and seen["headers"]["x-custom"] == "yes"
    assert "authorization" not in seen["headers"]
    assert seen["headers"]["nvcf-reqid"] == r.headers["nvcf-reqid"]
    assert seen["headers"]["nvcf-function-version-id"] == vid
    assert r.headers["nvcf-status"] == "fulfilled"
    r = api.get("/a%20b/c%2Fd?q=%41", headers=host)
    assert (r.json()["path"], r.json()["rawQuery"]) == ("/a%20b/c%2Fd", "q=%41")
    for method in ("GET", "DELETE", "PATCH", "OPTIONS"):
        r = api.request(method, "/", headers=host)
        assert r.status_code == 200, (method, r.text)
        assert (r.json()["method"], r.json()["path"]) == (method, "/")
    r = api.head("/v1/models", headers=host)
    assert r.status_code == 200 and r.content == b"" and r.headers["nvcf-reqid"]
    # the container's own error, not wrapped
    r = api.post("/v1/chat", json={"status": 404, "errorMessage": "no such model"}, headers=host)
    assert r.status_code == 404 and r.json() == {"error": "no such model"}


def test_a_version_host_picks_the_version(api: TestClient[Any]) -> None:
    fid, vid = echo(api)
    r = api.get("/v1/models", headers={"Host": f"{vid}.{fid}.invocation.localhost", **bearer()})
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["nvcf-function-version-id"] == vid
    other = "00000000-0000-4000-8000-000000000000"
    unknown = {"Host": f"{other}.{fid}.invocation.localhost", **bearer()}
    assert f"version '{other}'" in problem(api.get("/v1/models", headers=unknown), 404)["detail"]
    problem(api.get("/v1/models", headers={"Host": f"{fid}.invocation.localhost"}), 401)
