"""Health, auth basics, problem+json for framework errors, NGC bootstrap endpoints, OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import ADMIN_KEY, bearer, call
from litestar.testing import TestClient


def test_health_needs_no_key(client: TestClient[Any]) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["store"] == {"status": "ok"}
    assert body["docker"]["status"] == "unavailable"


def test_unknown_route_is_problem_json(client: TestClient[Any]) -> None:
    r = client.get("/v2/nvcf/nothing-here", headers=bearer())
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 404 and body["title"] == "Not Found"
    assert body["instance"] == "/v2/nvcf/nothing-here"


def test_get_caller_info_accepts_a_valid_key(client: TestClient[Any]) -> None:
    r = client.post("/v3/keys/get-caller-info", data={"credentials": ADMIN_KEY})
    assert r.status_code == 200
    assert r.json()["type"] == "SERVICE_KEY"
    assert r.json()["orgName"] == "local"


def test_get_caller_info_rejects_unknown_keys(client: TestClient[Any]) -> None:
    r = client.post("/v3/keys/get-caller-info", data={"credentials": "nvapi-" + "b" * 64})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    r = client.post("/v3/keys/get-caller-info", data={})
    assert r.status_code == 401


def test_products_and_orgs(client: TestClient[Any]) -> None:
    assert client.get("/v2/products").status_code == 401
    r = client.get("/v2/products", headers=bearer())
    assert r.status_code == 200 and r.json()["products"][0]["name"]
    r = client.get("/v2/orgs", params={"page-size": 500}, headers=bearer())
    assert r.json()["organizations"][0]["name"] == "local"


def test_registry_lookup_without_docker_lets_the_sdk_go_on(client: TestClient[Any]) -> None:
    r = client.get("/v2/org/local/repos/echo/images/1", headers=bearer())
    assert r.status_code == 403  # ngcsdk warns on 403 and proceeds; 404 would abort
    assert "deploy time" in r.json()["detail"]


def test_openapi_is_served(client: TestClient[Any]) -> None:
    r = client.get("/openapi/openapi.json")
    assert r.status_code == 200
    assert "/health" in r.json()["paths"]


def test_revoked_key_is_401(client: TestClient[Any], make_key: Callable[..., str]) -> None:
    key = make_key("list_functions")
    assert client.get("/v2/products", headers=bearer(key)).status_code == 200
    keys = client.app.state.platform.keys
    listed = call(client, keys.list)
    kid = next(k.key_id for k in listed if k.key_prefix == key[:14])
    call(client, keys.revoke, kid)
    r = client.get("/v2/products", headers=bearer(key))
    assert r.status_code == 401
    assert r.json()["type"].endswith("unauthorized")


def test_malformed_authorization_is_401(client: TestClient[Any]) -> None:
    for header in ("Basic abc", "Bearer", "Bearer nvapi-short", ADMIN_KEY):
        r = client.get("/v2/products", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_options_lists_every_method_of_the_path(client: TestClient[Any]) -> None:
    # Litestar's own answer named only the methods of the first handler registered on a path
    for path, allow in [
        ("/v2/nvcf/functions", "GET, OPTIONS, POST"),
        ("/v2/orgs/local/nvcf/functions", "GET, OPTIONS, POST"),
        (f"/v2/nvcf/assets/{'0' * 8}-0000-4000-8000-{'0' * 12}", "DELETE, GET, OPTIONS"),
    ]:
        r = client.options(path)
        assert r.status_code == 204 and r.headers["allow"] == allow, (path, r.headers)
