"""I5 by host (spec §2.3.9): a Host of `{function-id}.invocation.<invocation.host_domain>` sends
every path to the function, the platform's own paths too; anything else routes as before.
(That the container then receives the request unchanged: tests/test_host_invocation_docker.py.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, make_config
from function_support import problem
from litestar.testing import TestClient

from nvcf_lite.api.host_routes import HostRoutes

FID = "6f9d9c3e-2f7a-4b1e-9d2a-0c6c4c1e5a10"
VID = "0b4f6d1e-8a3c-4e7b-9f21-5d6c7e8f9a0b"


def test_a_function_host_takes_every_path_and_checks_the_key_first(
    client: TestClient[Any],
) -> None:
    host = {"Host": f"{FID}.invocation.localhost:8080"}
    doc = problem(client.get("/v2/nvcf/functions", headers=host), 401)
    assert doc["instance"] == "/v2/nvcf/functions"  # the client's path, not the inner route's
    for path in ("/", "/v2/nvcf/functions", "/health", "/a/b?x=1"):
        doc = problem(client.get(path, headers={**host, **bearer()}), 404)
        assert doc["detail"].startswith(f"Function id '{FID}': Specified function"), doc
    # without the host, the same path is the platform's
    assert client.get("/v2/nvcf/functions", headers=bearer()).json() == {"functions": []}


@pytest.mark.parametrize(
    ("host", "detail"),
    [
        ("nope.invocation.localhost", "function id in the Host header 'nope'"),
        (f"v1.{FID}.INVOCATION.LocalHost", "function version id in the Host header 'v1'"),
    ],
)
def test_a_malformed_id_in_the_host_is_a_400_naming_it(
    client: TestClient[Any], host: str, detail: str
) -> None:
    doc = problem(client.post("/x", headers={"Host": host, **bearer()}, json={}), 400)
    assert doc["detail"] == f"Invalid request: {detail} is not a UUID"


def test_the_inner_route_is_no_way_in_and_other_hosts_route_as_before(
    client: TestClient[Any],
) -> None:
    problem(client.get("/_nvcf-lite/by-host/x", headers=bearer()), 404)
    for host in (f"{FID}.invocation.example.com", f"{FID}.localhost", "[::1]:8080"):
        r = client.get("/v2/nvcf/functions", headers={"Host": host, **bearer()})
        assert r.status_code == 200, (host, r.text)


def test_the_domain_is_configurable_and_empty_turns_it_off(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    env = {"NVCF_LITE_INVOCATION__HOST_DOMAIN": "api.nvcf.nvidia.com"}
    api = app_factory(make_config(tmp_path / "data", **env))
    hosted = {"Host": f"{VID}.{FID}.invocation.api.nvcf.nvidia.com", **bearer()}
    doc = problem(api.get("/v2/nvcf/functions", headers=hosted), 404)
    assert f"version '{VID}'" in doc["detail"]
    local = {"Host": f"{FID}.invocation.localhost", **bearer()}
    assert api.get("/v2/nvcf/functions", headers=local).status_code == 200
    off = {"type": "http", "headers": [(b"host", hosted["Host"].encode())]}
    assert HostRoutes("").match(off) is None


def test_host_matching() -> None:
    routes = HostRoutes("localhost")

    def ids(host: bytes) -> tuple[str, str | None] | None:
        return routes.match({"type": "http", "headers": [(b"host", host)]})

    assert ids(f"{FID}.invocation.localhost".encode()) == (FID, None)
    assert ids(f"{VID}.{FID}.invocation.localhost:443".encode()) == (FID, VID)
    assert ids(b"a.b.c.invocation.localhost") is None  # at most version.function
    assert ids(b"invocation.localhost") is None
    assert routes.match({"type": "http", "headers": []}) is None
