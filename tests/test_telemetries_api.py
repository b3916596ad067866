"""Telemetry endpoints E1-E5 (spec §2.8) and a version's `telemetries` at registration
(spec §2.1.1), in process: shapes, validation, 404s, the secret never shown nor stored in
plain text, the path families, and the delete-while-used rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, call
from function_support import FAMILIES, ISO_INSTANT, PLAIN, UNKNOWN_ID, body, create, problem
from litestar.testing import TestClient
from telemetry_support import SECRET, create_telemetry, telemetry_body

FIELDS = {"telemetryId", "name", "endpoint", "protocol", "provider", "types", "createdAt"}


@pytest.mark.parametrize("prefix", FAMILIES)
def test_create_list_get_delete_in_every_path_family(client: TestClient[Any], prefix: str) -> None:
    made = create_telemetry(
        client, prefix, protocol="grpc", provider="grafana_cloud", types=["metrics", "LOGS"]
    )
    assert set(made) == FIELDS
    assert (made["protocol"], made["provider"]) == ("GRPC", "GRAFANA_CLOUD")
    assert made["types"] == ["METRICS", "LOGS"] and ISO_INSTANT.match(made["createdAt"])
    assert made["endpoint"] == "https://otel.example.com:4318"
    tid = made["telemetryId"]
    other = create_telemetry(client, prefix, types=["TRACES"])
    listed = client.get(f"{prefix}/telemetries", headers=bearer()).json()
    assert listed == {"telemetries": [made, other]}
    got = client.get(f"{prefix}/telemetries/{tid}", headers=bearer())
    assert got.status_code == 200 and got.json() == {"telemetry": made}
    r = client.delete(f"{prefix}/telemetries/{tid}", headers=bearer())
    assert r.status_code == 204 and r.content == b""
    doc = problem(client.get(f"{prefix}/telemetries/{tid}", headers=bearer()), 404)
    assert doc["detail"] == f"Account 'nvcf-lite-local' Telemetry '{tid}': Not found"
    assert client.get(f"{PLAIN}/telemetries", headers=bearer()).json()["telemetries"] == [other]


def test_the_name_is_the_secrets_and_unique_in_the_account(client: TestClient[Any]) -> None:
    made = create_telemetry(client, secret={"name": "grafana.credentials", "value": "k"})
    assert made["name"] == "grafana.credentials"
    r = client.post(
        f"{PLAIN}/telemetries",
        json=telemetry_body(secret={"name": "grafana.credentials", "value": "other"}),
        headers=bearer(),
    )
    assert "already exists in the account" in problem(r, 400)["detail"]


def test_another_org_is_404(client: TestClient[Any]) -> None:
    r = client.get("/v2/orgs/elsewhere/nvcf/telemetries", headers=bearer())
    assert "Org 'elsewhere' not found" in problem(r, 404)["detail"]


INVALID = [
    ("no endpoint", telemetry_body(endpoint=...), "'endpoint'"),
    ("blank endpoint", telemetry_body(endpoint="  "), "'endpoint'"),
    ("endpoint with a space", telemetry_body(endpoint="https://a b"), "'endpoint'"),
    ("endpoint too long", telemetry_body(endpoint="https://" + "a" * 2048), "'endpoint'"),
    ("no protocol", telemetry_body(protocol=...), "'protocol'"),
    ("bad protocol", telemetry_body(protocol="UDP"), "'protocol' must be one of HTTP, GRPC"),
    ("no provider", telemetry_body(provider=...), "'provider'"),
    ("bad provider", telemetry_body(provider="NEWRELIC"), "'provider' must be one of"),
    ("no types", telemetry_body(types=...), "'types'"),
    ("empty types", telemetry_body(types=[]), "'types'"),
    ("bad type", telemetry_body(types=["LOGS", "EVENTS"]), "'types' must be one of"),
    ("no secret", telemetry_body(secret=...), "'secret'"),
    ("bad secret name", telemetry_body(secret={"name": "-x", "value": "v"}), "secret.name"),
    ("long secret name", telemetry_body(secret={"name": "s" * 49, "value": "v"}), "secret.name"),
    ("empty secret", telemetry_body(secret={"name": "a", "value": ""}), "secret.value"),
    ("long secret", telemetry_body(secret={"name": "a", "value": "v" * 32769}), "secret.value"),
]


@pytest.mark.parametrize(("case", "payload", "words"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_bodies_are_400(
    client: TestClient[Any], case: str, payload: dict[str, Any], words: str
) -> None:
    doc = problem(client.post(f"{PLAIN}/telemetries", json=payload, headers=bearer()), 400)
    assert words in doc["detail"], doc
    assert client.get(f"{PLAIN}/telemetries", headers=bearer()).json() == {"telemetries": []}


WRONG_TYPES: dict[str, list[Any]] = {
    "endpoint": [1, [], {}],
    "protocol": [1, [], {}],
    "provider": [1, True, {}],
    "types": ["LOGS", 1, {}, [1]],
    "secret": ["s", 1, [], {"name": 1, "value": "v"}, {"name": "a"}, {"name": "a", "value": 1}],
}


@pytest.mark.parametrize("field", list(WRONG_TYPES))
def test_wrong_json_types_are_400_never_500(client: TestClient[Any], field: str) -> None:
    for value in WRONG_TYPES[field]:
        r = client.post(
            f"{PLAIN}/telemetries", json=telemetry_body(**{field: value}), headers=bearer()
        )
        problem(r, 400)


def test_unknown_and_malformed_ids(client: TestClient[Any]) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, f"{PLAIN}/telemetries/{UNKNOWN_ID}", headers=bearer())
        assert UNKNOWN_ID in problem(r, 404)["detail"]
        problem(client.request(method, f"{PLAIN}/telemetries/nope", headers=bearer()), 400)
    r = client.put(
        f"{PLAIN}/secrets/telemetries/{UNKNOWN_ID}",
        json={"secret": {"name": "a", "value": "b"}},
        headers=bearer(),
    )
    problem(r, 404)


def _database_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("nvcf-lite.db*")))


def test_the_secret_is_never_returned_nor_stored_in_plain_text(
    client: TestClient[Any], tmp_path: Path
) -> None:
    made = create_telemetry(client)
    tid = made["telemetryId"]
    texts = [
        client.get(f"{PLAIN}/telemetries", headers=bearer()).text,
        client.get(f"{PLAIN}/telemetries/{tid}", headers=bearer()).text,
    ]
    assert all(SECRET not in t and "secret" not in t for t in texts)
    assert SECRET.encode() not in _database_bytes(tmp_path / "data")
    platform = client.app.state.platform
    _, value = call(client, platform.telemetries.endpoint_of, "nvcf-lite-local", tid)
    assert value == SECRET  # sealed, not lost


def test_the_secret_is_replaced_with_204(client: TestClient[Any], tmp_path: Path) -> None:
    made = create_telemetry(client, provider="GRAFANA_CLOUD")
    tid, path = made["telemetryId"], f"{PLAIN}/secrets/telemetries/{made['telemetryId']}"
    new = {"instanceId": "123456", "apiKey": "glc-new-key-value"}
    r = client.put(path, json={"secret": {"name": made["name"], "value": new}}, headers=bearer())
    assert r.status_code == 204 and r.content == b""
    platform = client.app.state.platform
    telemetry, value = call(client, platform.telemetries.endpoint_of, "nvcf-lite-local", tid)
    assert value == new and telemetry.name == made["name"]
    assert b"glc-new-key-value" not in _database_bytes(tmp_path / "data")
    bad_bodies = ({}, {"secret": {"name": "a", "value": ""}}, {"secret": {"name": "*", "value": 1}})
    for bad in bad_bodies:
        problem(client.put(path, json=bad, headers=bearer()), 400)
    assert client.get(f"{PLAIN}/telemetries/{tid}", headers=bearer()).json()["telemetry"] == made


# -- a version's telemetries (registration) ------------------------------------------------------


def test_a_version_names_telemetries_of_the_right_types(client: TestClient[Any]) -> None:
    logs = create_telemetry(client, types=["LOGS"])
    metrics = create_telemetry(client, types=["METRICS", "TRACES"])
    ids = {"logsTelemetryId": logs["telemetryId"], "metricsTelemetryId": metrics["telemetryId"]}
    ids["tracesTelemetryId"] = metrics["telemetryId"]
    fn = create(client, body(telemetries=ids))
    assert fn["telemetries"] == ids
    got = client.get(f"{PLAIN}/functions/{fn['id']}/versions/{fn['versionId']}", headers=bearer())
    assert got.json()["function"]["telemetries"] == ids


@pytest.mark.parametrize("field", ["logsTelemetryId", "metricsTelemetryId", "tracesTelemetryId"])
def test_an_unknown_telemetry_is_400_naming_it(client: TestClient[Any], field: str) -> None:
    fn = create(client)
    for path in (f"{PLAIN}/functions", f"{PLAIN}/functions/{fn['id']}/versions"):
        r = client.post(path, json=body(telemetries={field: UNKNOWN_ID}), headers=bearer())
        doc = problem(r, 400)
        assert UNKNOWN_ID in doc["detail"] and f"telemetries.{field}" in doc["detail"], doc
    listed = client.get(f"{PLAIN}/functions", headers=bearer()).json()["functions"]
    assert [f["versionId"] for f in listed] == [fn["versionId"]]  # nothing was registered


def test_a_telemetry_of_another_type_is_400(client: TestClient[Any]) -> None:
    logs = create_telemetry(client, types=["LOGS"])
    r = client.post(
        f"{PLAIN}/functions",
        json=body(telemetries={"metricsTelemetryId": logs["telemetryId"]}),
        headers=bearer(),
    )
    doc = problem(r, 400)
    assert doc["detail"].startswith("Invalid telemetry type"), doc
    assert logs["telemetryId"] in doc["detail"] and "needs METRICS" in doc["detail"]


def test_a_telemetry_in_use_is_not_deleted(client: TestClient[Any]) -> None:
    made = create_telemetry(client)
    tid = made["telemetryId"]
    fn = create(client, body(telemetries={"logsTelemetryId": tid}))
    doc = problem(client.delete(f"{PLAIN}/telemetries/{tid}", headers=bearer()), 400)
    assert f"in use by Function id '{fn['id']}', version '{fn['versionId']}'" in doc["detail"]
    assert client.get(f"{PLAIN}/telemetries/{tid}", headers=bearer()).status_code == 200
    path = f"{PLAIN}/functions/{fn['id']}/versions/{fn['versionId']}"
    assert client.delete(path, headers=bearer()).status_code == 204
    assert client.delete(f"{PLAIN}/telemetries/{tid}", headers=bearer()).status_code == 204
