"""Who may call F1-F9 (spec §6.2 scopes, §6.3 key resources): the 401/403 matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import bearer
from function_support import BODY, PLAIN, add_version, create, problem, version_path
from litestar.testing import TestClient

from nvcf_lite.models import SCOPES

LIST_SCOPES = ("list_functions", "list_functions_details")
# endpoint -> the scopes that open it (any one suffices)
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "F1": ("register_function",),
    "F2": ("register_function",),
    "F3": LIST_SCOPES,
    "F4": LIST_SCOPES,
    "F5": LIST_SCOPES,
    "F6": LIST_SCOPES,
    "F7": ("delete_function",),
    "F8": ("update_function",),
    "F9": ("update_function",),
}


def request(client: TestClient[Any], name: str, fn: dict[str, Any], key: str | None) -> Any:
    headers = bearer(key) if key else {}
    fid, vpath = fn["id"], version_path(fn)
    meta = f"{PLAIN}/metadata/functions/{fid}/versions/{fn['versionId']}"
    method, path, payload = {
        "F1": ("POST", f"{PLAIN}/functions", BODY),
        "F2": ("POST", f"{PLAIN}/functions/{fid}/versions", BODY),
        "F3": ("GET", f"{PLAIN}/functions", None),
        "F4": ("GET", f"{PLAIN}/functions/ids", None),
        "F5": ("GET", f"{PLAIN}/functions/{fid}/versions", None),
        "F6": ("GET", vpath, None),
        "F7": ("DELETE", vpath, None),
        "F8": ("PUT", vpath, {"tags": ["a"]}),
        "F9": ("PUT", meta, {"tags": ["a"]}),
    }[name]
    return client.request(method, path, json=payload, headers=headers)


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_no_key_and_unknown_key_are_401(client: TestClient[Any], name: str) -> None:
    fn = create(client)
    problem(request(client, name, fn, None), 401)
    problem(request(client, name, fn, "nvapi-" + "Z" * 64), 401)
    r = client.get(version_path(fn), headers={"Authorization": "Basic abc"})
    problem(r, 401)


@pytest.mark.parametrize(("name", "scope"), [(n, s) for n in ENDPOINTS for s in SCOPES])
def test_each_scope_opens_only_its_endpoints(
    client: TestClient[Any], make_key: Callable[..., str], name: str, scope: str
) -> None:
    fn = create(client)
    r = request(client, name, fn, make_key(scope))
    if scope in ENDPOINTS[name]:
        assert r.status_code in (200, 204), r.text
    else:
        doc = problem(r, 403)
        assert "missing the required scope" in doc["detail"]
        assert doc["type"].endswith("forbidden")


def test_apikey_and_admin_scope_prefixes_count(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    fn = create(client)
    for scope in ("apikey:list_functions", "admin:list_functions"):
        assert request(client, "F6", fn, make_key(scope)).status_code == 200


def test_a_key_limited_to_one_function_sees_and_changes_only_it(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    mine, other = create(client), create(client)
    key = make_key(*SCOPES, functions=(mine["id"],))
    h = bearer(key)

    listed = client.get(f"{PLAIN}/functions", headers=h).json()["functions"]
    assert [f["id"] for f in listed] == [mine["id"]]
    ids = client.get(f"{PLAIN}/functions/ids", headers=h).json()["functionIds"]
    assert ids == [mine["id"]]
    assert client.get(f"{PLAIN}/functions/{mine['id']}/versions", headers=h).status_code == 200
    assert client.get(version_path(mine), headers=h).status_code == 200
    assert client.put(version_path(mine), json={"tags": ["ok"]}, headers=h).status_code == 200
    r = client.post(f"{PLAIN}/functions/{mine['id']}/versions", json=BODY, headers=h)
    assert r.status_code == 200

    denied = "Missing resource entry in ApiKey for the function"
    for name in ("F2", "F5", "F6", "F7", "F8", "F9"):
        doc = problem(request(client, name, other, key), 403)
        assert denied in doc["detail"], name
    r = client.post(f"{PLAIN}/functions", json=BODY, headers=h)  # a new function is not "mine"
    assert "cannot register a new function" in problem(r, 403)["detail"]
    # an unknown version is still 404, a known one of another function 403 (spec §8 item 11)
    problem(client.get(f"{PLAIN}/functions/{other['id']}/versions", headers=h), 403)
    assert client.get(version_path(other), headers=bearer()).status_code == 200  # untouched
    assert client.delete(version_path(mine), headers=h).status_code == 204


def test_a_key_limited_to_one_version(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    first = create(client)
    second = add_version(client, first["id"])
    key = make_key(
        "list_functions", "update_function", functions=(f"{first['id']}/{first['versionId']}",)
    )
    h = bearer(key)
    versions = client.get(f"{PLAIN}/functions/{first['id']}/versions", headers=h).json()
    assert [v["versionId"] for v in versions["functions"]] == [first["versionId"]]
    assert client.get(version_path(first), headers=h).status_code == 200
    problem(client.get(version_path(second), headers=h), 403)
    problem(client.put(version_path(second), json={"tags": ["a"]}, headers=h), 403)
    listed = client.get(f"{PLAIN}/functions", headers=h).json()["functions"]
    assert [f["versionId"] for f in listed] == [first["versionId"]]
