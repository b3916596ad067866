"""Function management over HTTP (spec §2.1, F1-F9): every endpoint in every path family,
response shapes, secrets, updates, visibility, errors and restarts, on a real SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, call, make_config
from function_support import (
    BODY,
    FAMILIES,
    ISO_INSTANT,
    PLAIN,
    SECRET_VALUE,
    UNKNOWN_ID,
    add_version,
    body,
    create,
    problem,
    version_path,
)
from litestar.testing import TestClient
from telemetry_support import create_telemetry

from nvcf_lite.models import ActiveInstance, FunctionStatus

REQUIRED_KEYS = {
    "id",
    "versionId",
    "ncaId",
    "name",
    "status",
    "inferenceUrl",
    "healthUri",
    "health",
    "createdAt",
    "functionType",
    "apiBodyFormat",
    "description",
}


# -- every endpoint in each path family --------------------------------------------------------


@pytest.mark.parametrize("prefix", FAMILIES)
def test_f1_to_f9_in_each_path_family(client: TestClient[Any], prefix: str) -> None:
    h = bearer()
    r = client.post(f"{prefix}/functions", json=BODY, headers=h)  # F1
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    first = r.json()["function"]
    r = client.post(f"{prefix}/functions/{first['id']}/versions", json=BODY, headers=h)  # F2
    assert r.status_code == 200
    second = r.json()["function"]
    assert second["id"] == first["id"] and second["versionId"] != first["versionId"]

    listed = client.get(f"{prefix}/functions", headers=h).json()["functions"]  # F3
    assert [f["versionId"] for f in listed] == [first["versionId"], second["versionId"]]
    ids = client.get(f"{prefix}/functions/ids", headers=h).json()  # F4
    assert ids == {"functionIds": [first["id"]]}
    versions = client.get(f"{prefix}/functions/{first['id']}/versions", headers=h).json()  # F5
    assert [v["versionId"] for v in versions["functions"]] == [
        first["versionId"],
        second["versionId"],
    ]
    got = client.get(version_path(second, prefix), headers=h).json()  # F6
    assert got == {"function": second}

    r = client.put(version_path(second, prefix), json={"tags": ["x"]}, headers=h)  # F8
    assert r.status_code == 200 and r.json()["function"]["tags"] == ["x"]
    meta = f"{prefix}/metadata/functions/{second['id']}/versions/{second['versionId']}"
    r = client.put(meta, json={"tags": ["y"]}, headers=h)  # F9
    assert r.status_code == 200 and r.json()["function"]["tags"] == ["y"]

    r = client.delete(version_path(second, prefix), headers=h)  # F7
    assert r.status_code == 204 and r.content == b""
    problem(client.get(version_path(second, prefix), headers=h), 404)
    left = client.get(f"{prefix}/functions", headers=h).json()["functions"]
    assert [f["versionId"] for f in left] == [first["versionId"]]


def test_unknown_org_is_404_for_every_endpoint(client: TestClient[Any]) -> None:
    fn = create(client)
    h = bearer()
    for prefix in ("/v2/orgs/other/nvcf", "/v2/orgs/other/teams/t1/nvcf"):
        vpath = version_path(fn, prefix)
        for method, path, payload in (
            ("POST", f"{prefix}/functions", BODY),
            ("POST", f"{prefix}/functions/{fn['id']}/versions", BODY),
            ("GET", f"{prefix}/functions", None),
            ("GET", f"{prefix}/functions/ids", None),
            ("GET", f"{prefix}/functions/{fn['id']}/versions", None),
            ("GET", vpath, None),
            ("PUT", vpath, {"tags": ["a"]}),
            ("PUT", f"{prefix}/metadata/functions/{fn['id']}/versions/{fn['versionId']}", None),
            ("DELETE", vpath, None),
        ):
            r = client.request(method, path, json=payload, headers=h)
            assert "Org 'other' not found" in problem(r, 404)["detail"], (method, path)
    assert client.get(version_path(fn), headers=h).status_code == 200


# -- response shapes ---------------------------------------------------------------------------


def test_created_function_shape(client: TestClient[Any]) -> None:
    fn = create(client)
    assert set(fn) == REQUIRED_KEYS | {"containerImage"}
    assert fn["status"] == "INACTIVE" and fn["ncaId"] == "nvcf-lite-local"
    assert ISO_INSTANT.match(fn["createdAt"])
    assert fn["health"] == {
        "protocol": "HTTP",
        "uri": "/v2/health/ready",
        "port": 8000,
        "timeout": "PT10S",
        "expectedStatusCode": 200,
    }
    assert fn["healthUri"] == "/v2/health/ready"
    assert fn["description"] == "echo"
    assert (fn["functionType"], fn["apiBodyFormat"]) == ("DEFAULT", "CUSTOM")
    assert "inferencePort" not in fn  # stored as given: absent stays absent


def test_full_function_shape_is_camel_case_and_round_trips(client: TestClient[Any]) -> None:
    telemetry_id = create_telemetry(client, types=["LOGS"])["telemetryId"]
    payload = body(
        inferencePort=9000,
        health={
            "protocol": "grpc",
            "uri": "/ready",
            "port": 9001,
            "timeout": "PT0.5S",
            "expectedStatusCode": 204,
        },
        containerArgs="--verbose",
        containerEnvironment=[{"key": "A", "value": "1"}],
        models=[{"name": "m", "version": "1", "uri": "ngc://m:1"}],
        resources=[{"name": "r", "version": "2", "uri": "ngc://r:2"}],
        apiBodyFormat="predict_v2",
        functionType="streaming",
        description="an echo",
        tags=["b", "a", "b"],
        secrets=[{"name": "TOKEN", "value": SECRET_VALUE}],
        rateLimit={"rateLimit": "10-S", "exemptedNcaIds": ["x", "x"], "syncCheck": True},
        telemetries={"logsTelemetryId": telemetry_id.upper()},
    )
    fn = create(client, payload)
    assert fn["health"] == {
        "protocol": "gRPC",
        "uri": "/ready",
        "port": 9001,
        "timeout": "PT0.5S",
        "expectedStatusCode": 204,
    }
    assert fn["healthUri"] == "/ready" and fn["inferencePort"] == 9000
    assert fn["containerEnvironment"] == [{"key": "A", "value": "1"}]
    assert fn["models"] == [{"name": "m", "version": "1", "uri": "ngc://m:1"}]
    assert fn["resources"] == [{"name": "r", "version": "2", "uri": "ngc://r:2"}]
    assert (fn["apiBodyFormat"], fn["functionType"]) == ("PREDICT_V2", "STREAMING")
    assert fn["tags"] == ["b", "a"]  # a set: duplicates dropped, order kept
    assert fn["secrets"] == ["TOKEN"]
    assert fn["rateLimit"] == {"rateLimit": "10-S", "exemptedNcaIds": ["x"], "syncCheck": True}
    assert fn["telemetries"] == {"logsTelemetryId": telemetry_id}  # canonical form
    assert fn["containerArgs"] == "--verbose" and fn["description"] == "an echo"
    assert all(v is not None for v in fn.values())
    got = client.get(version_path(fn), headers=bearer()).json()["function"]
    assert got == fn


def test_grpc_inference_url_defaults_grpc_health_and_port(client: TestClient[Any]) -> None:
    fn = create(client, body(inferenceUrl="grpc", inferencePort=8001, healthUri="/hz"))
    assert fn["inferenceUrl"] == "/grpc"
    assert fn["health"]["protocol"] == "gRPC" and fn["health"]["port"] == 8001
    assert fn["health"]["uri"] == fn["healthUri"] == "/hz"


# -- secrets ------------------------------------------------------------------------------------


def test_secret_names_only_and_values_never_returned(client: TestClient[Any]) -> None:
    obj = {"user": "u", "password": SECRET_VALUE + "-obj"}
    payload = body(secrets=[{"name": "A", "value": SECRET_VALUE}, {"name": "B", "value": obj}])
    h = bearer()
    r = client.post(f"{PLAIN}/functions", json=payload, headers=h)
    fn = r.json()["function"]
    texts = [r.text]
    assert fn["secrets"] == ["A", "B"]
    r = client.get(version_path(fn), headers=h)
    assert r.json()["function"]["secrets"] == ["A", "B"]
    texts.append(r.text)
    r = client.get(version_path(fn), params={"includeSecrets": "false"}, headers=h)
    assert "secrets" not in r.json()["function"]
    texts.append(r.text)
    r = client.get(version_path(fn), params={"includeSecrets": "true"}, headers=h)
    assert r.json()["function"]["secrets"] == ["A", "B"]
    for path in (f"{PLAIN}/functions", f"{PLAIN}/functions/{fn['id']}/versions"):
        texts.append(client.get(path, headers=h).text)
    texts.append(client.put(version_path(fn), json={"tags": ["t"]}, headers=h).text)
    assert not any(SECRET_VALUE in t for t in texts)
    stored = call(client, client.app.state.platform.functions.secrets, fn["versionId"])
    assert stored == {"A": SECRET_VALUE, "B": obj}


def test_include_secrets_must_be_a_boolean(client: TestClient[Any]) -> None:
    fn = create(client)
    r = client.get(version_path(fn), params={"includeSecrets": "maybe"}, headers=bearer())
    problem(r, 400)


def test_delete_removes_secrets_and_calls_the_before_delete_hook(client: TestClient[Any]) -> None:
    functions = client.app.state.platform.functions
    fn = create(client, body(secrets=[{"name": "A", "value": "v"}]))
    seen: list[tuple[str, str]] = []

    async def hook(function_id: str, version_id: str) -> None:
        seen.append((function_id, version_id))

    saved = functions.before_delete
    functions.before_delete = hook
    try:
        r = client.delete(version_path(fn), headers=bearer())
    finally:
        functions.before_delete = saved
    assert r.status_code == 204 and r.content == b""
    assert seen == [(fn["id"], fn["versionId"])]
    assert call(client, functions.secrets, fn["versionId"]) == {}
    problem(client.delete(version_path(fn), headers=bearer()), 404)


# -- updates ------------------------------------------------------------------------------------


def test_update_tags_rate_limit_and_description(client: TestClient[Any]) -> None:
    fn = create(client, body(tags=["old"]))
    path, h = version_path(fn), bearer()
    r = client.put(path, json={"tags": ["a", "b", "a"]}, headers=h)
    assert r.json()["function"]["tags"] == ["a", "b"]
    r = client.put(path, json={"rateLimit": {"rateLimit": "5-S, 100-D"}}, headers=h)
    assert r.json()["function"]["rateLimit"] == {"rateLimit": "5-S, 100-D"}
    assert r.json()["function"]["tags"] == ["a", "b"]  # untouched
    r = client.put(path, json={"rateLimit": None}, headers=h)  # ngcsdk's way to clear it
    assert r.status_code == 200 and "rateLimit" not in r.json()["function"]
    r = client.put(path, json={"description": "new words"}, headers=h)
    assert r.json()["function"]["description"] == "new words"
    r = client.put(path, json={"tags": []}, headers=h)
    assert "tags" not in r.json()["function"]
    got = client.get(path, headers=h).json()["function"]
    assert got["description"] == "new words" and "tags" not in got and "rateLimit" not in got
    assert got["status"] == "INACTIVE" and got["createdAt"] == fn["createdAt"]


def test_update_needs_at_least_one_field(client: TestClient[Any]) -> None:
    fn = create(client)
    for payload in ({}, {"tags": None}, {"modelUpdates": []}, {"unknown": 1}):
        doc = problem(client.put(version_path(fn), json=payload, headers=bearer()), 400)
        assert doc["detail"] == (
            "Invalid request: at least one of 'tags', 'rateLimit', 'modelUpdates', or "
            "'llmInvocationConfig' must be specified"
        )


def test_update_keeps_the_status_the_scheduler_set(client: TestClient[Any]) -> None:
    functions = client.app.state.platform.functions
    fn = create(client)
    call(client, functions.set_status, fn["versionId"], FunctionStatus.ACTIVE)
    r = client.put(version_path(fn), json={"tags": ["x"]}, headers=bearer())
    assert r.json()["function"]["status"] == "ACTIVE"
    statuses = call(client, functions.repo.statuses)
    assert statuses[fn["versionId"]] is FunctionStatus.ACTIVE


# -- lists and visibility -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "visible"),
    [
        ("", True),
        ("?visibility=private", True),
        ("?visibility=PRIVATE", True),
        ("?visibility=authorized,private,public", True),
        ("?visibility=authorized&visibility=private", True),
        ("?visibility=private,public&visibility=authorized", True),
        ("?visibility=public", False),
        ("?visibility=authorized", False),
        ("?visibility=authorized,public", False),
        ("?visibility=authorized&visibility=public", False),
    ],
)
def test_visibility_filter(client: TestClient[Any], query: str, visible: bool) -> None:
    fn = create(client)
    listed = client.get(f"{PLAIN}/functions{query}", headers=bearer()).json()["functions"]
    assert [f["versionId"] for f in listed] == ([fn["versionId"]] if visible else [])
    ids = client.get(f"{PLAIN}/functions/ids{query}", headers=bearer()).json()["functionIds"]
    assert ids == ([fn["id"]] if visible else [])


def test_unknown_visibility_is_400(client: TestClient[Any]) -> None:
    for path in ("/functions", "/functions/ids"):
        r = client.get(f"{PLAIN}{path}?visibility=private,everyone", headers=bearer())
        assert "'visibility'" in problem(r, 400)["detail"]


def test_lists_are_empty_without_functions_and_ids_are_distinct(client: TestClient[Any]) -> None:
    assert client.get(f"{PLAIN}/functions", headers=bearer()).json() == {"functions": []}
    assert client.get(f"{PLAIN}/functions/ids", headers=bearer()).json() == {"functionIds": []}
    a, b = create(client), create(client)
    add_version(client, a["id"])
    ids = client.get(f"{PLAIN}/functions/ids", headers=bearer()).json()["functionIds"]
    assert ids == [a["id"], b["id"]]
    assert len(client.get(f"{PLAIN}/functions", headers=bearer()).json()["functions"]) == 3


# -- active instances ---------------------------------------------------------------------------


def test_active_instances_only_with_details_scope_and_a_provider(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    functions = client.app.state.platform.functions
    fn = create(client)
    details, plain = make_key("list_functions_details"), make_key("list_functions")
    assert (
        "activeInstances"
        not in client.get(version_path(fn), headers=bearer(details)).json()["function"]
    )

    async def provider(version_id: str) -> list[ActiveInstance]:
        return [
            ActiveInstance(
                instance_id="i-1",
                function_id=fn["id"],
                function_version_id=version_id,
                nca_id="nvcf-lite-local",
                instance_status="RUNNING",
                gpu="L40S",
            )
        ]

    saved = functions.instances
    functions.instances = provider
    try:
        got = client.get(version_path(fn), headers=bearer(details)).json()["function"]
        without = client.get(version_path(fn), headers=bearer(plain)).json()["function"]
        listed = client.get(f"{PLAIN}/functions", headers=bearer(details)).json()["functions"]
    finally:
        functions.instances = saved
    assert got["activeInstances"] == [
        {
            "instanceId": "i-1",
            "functionId": fn["id"],
            "functionVersionId": fn["versionId"],
            "ncaId": "nvcf-lite-local",
            "instanceStatus": "RUNNING",
            "gpu": "L40S",
        }
    ]
    assert "activeInstances" not in without
    assert "activeInstances" not in listed[0]


# -- unknown and malformed ids ------------------------------------------------------------------


def test_unknown_ids_are_404_with_nvcf_messages(client: TestClient[Any]) -> None:
    fn = create(client)
    h = bearer()
    vpath = f"{PLAIN}/functions/{fn['id']}/versions/{UNKNOWN_ID}"
    expected = f"Function id '{fn['id']}', version '{UNKNOWN_ID}': Not found in account"
    for method, payload in (("GET", None), ("PUT", {"tags": ["a"]}), ("DELETE", None)):
        doc = problem(client.request(method, vpath, json=payload, headers=h), 404)
        assert doc["detail"] == f"{expected} 'nvcf-lite-local'"
        assert doc["instance"] == vpath and doc["type"].endswith("not-found")
    other = f"{PLAIN}/functions/{UNKNOWN_ID}/versions/{fn['versionId']}"  # vid of another fn
    problem(client.get(other, headers=h), 404)
    fdetail = f"Function id '{UNKNOWN_ID}': Not found in account 'nvcf-lite-local'"
    r = client.get(f"{PLAIN}/functions/{UNKNOWN_ID}/versions", headers=h)
    assert problem(r, 404)["detail"] == fdetail
    r = client.post(f"{PLAIN}/functions/{UNKNOWN_ID}/versions", json=BODY, headers=h)
    assert problem(r, 404)["detail"] == fdetail


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "3e4666bf-d5e5-4aa7-b8ce"])
def test_malformed_ids_are_400(client: TestClient[Any], bad: str) -> None:
    fn = create(client)
    h = bearer()
    for method, path, payload in (
        ("POST", f"{PLAIN}/functions/{bad}/versions", BODY),
        ("GET", f"{PLAIN}/functions/{bad}/versions", None),
        ("GET", f"{PLAIN}/functions/{bad}/versions/{fn['versionId']}", None),
        ("GET", f"{PLAIN}/functions/{fn['id']}/versions/{bad}", None),
        ("PUT", f"{PLAIN}/functions/{fn['id']}/versions/{bad}", {"tags": ["a"]}),
        ("PUT", f"{PLAIN}/metadata/functions/{bad}/versions/{fn['versionId']}", {"tags": ["a"]}),
        ("DELETE", f"{PLAIN}/functions/{fn['id']}/versions/{bad}", None),
    ):
        problem(client.request(method, path, json=payload, headers=h), 400)


def test_uppercase_uuid_in_path_is_accepted(client: TestClient[Any]) -> None:
    fn = create(client)
    path = f"{PLAIN}/functions/{fn['id'].upper()}/versions/{fn['versionId'].upper()}"
    assert client.get(path, headers=bearer()).json()["function"]["id"] == fn["id"]


# -- bodies the server cannot read --------------------------------------------------------------


def test_malformed_json_is_400(client: TestClient[Any]) -> None:
    fn = create(client)
    h = {**bearer(), "Content-Type": "application/json"}
    for method, path in (("POST", f"{PLAIN}/functions"), ("PUT", version_path(fn))):
        for raw in (b"{", b"not json", b'{"name": "x",}', b""):
            problem(client.request(method, path, content=raw, headers=h), 400)


def test_oversized_body_is_413(app_factory: Callable[..., TestClient[Any]], tmp_path: Path) -> None:
    small = app_factory(make_config(tmp_path / "d", NVCF_LITE_SERVER__MAX_BODY_BYTES="1000"))
    r = small.post(f"{PLAIN}/functions", json=body(description="x" * 2000), headers=bearer())
    problem(r, 413)
    assert small.post(f"{PLAIN}/functions", json=BODY, headers=bearer()).status_code == 200


# -- restarts -----------------------------------------------------------------------------------


def test_functions_survive_a_restart(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    config = make_config(tmp_path / "persist")
    first = app_factory(config)
    fn = create(first, body(secrets=[{"name": "A", "value": "v"}], tags=["t"]))
    functions = first.app.state.platform.functions
    call(first, functions.set_status, fn["versionId"], FunctionStatus.ERROR)
    first.__exit__(None, None, None)

    second = app_factory(config)
    got = second.get(version_path(fn), headers=bearer()).json()["function"]
    assert got == {**fn, "status": "ERROR"}
    assert call(second, second.app.state.platform.functions.secrets, fn["versionId"]) == {"A": "v"}
    listed = second.get(f"{PLAIN}/functions", headers=bearer()).json()["functions"]
    assert [f["versionId"] for f in listed] == [fn["versionId"]]


# -- the store API the deployments code and the scheduler use -----------------------------------


def test_repo_api_for_deployments_and_scheduler(client: TestClient[Any]) -> None:
    repo = client.app.state.platform.functions.repo
    a = create(client, body(secrets=[{"name": "K", "value": {"nested": True}}]))
    a2 = add_version(client, a["id"])
    b = create(client)
    assert call(client, repo.function_ids, "nvcf-lite-local") == [a["id"], b["id"]]
    assert call(client, repo.function_ids, "someone-else") == []
    version = call(client, repo.get_version, a2["versionId"])
    assert (version.function_id, version.status) == (a["id"], FunctionStatus.INACTIVE)
    assert version.effective_port == 8000 and version.health.timeout == "PT10S"
    assert call(client, repo.get, b["id"], a2["versionId"]) is None  # ids must pair up
    listed = call(client, repo.list_versions, a["id"])
    assert [v.version_id for v in listed] == [a["versionId"], a2["versionId"]]
    assert call(client, repo.secrets, a["versionId"]) == {"K": {"nested": True}}
    assert call(client, repo.secrets, b["versionId"]) == {}
    assert call(client, repo.set_status, b["versionId"], FunctionStatus.DEPLOYING) is True
    assert call(client, repo.set_status, UNKNOWN_ID, FunctionStatus.ACTIVE) is False
    statuses = call(client, repo.statuses)
    assert statuses[b["versionId"]] is FunctionStatus.DEPLOYING and len(statuses) == 3
    assert client.get(version_path(b), headers=bearer()).json()["function"]["status"] == "DEPLOYING"
    assert call(client, repo.delete, b["id"], UNKNOWN_ID) is False
    assert call(client, repo.delete, a["id"], a["versionId"]) is True
    assert call(client, repo.secrets, a["versionId"]) == {}
