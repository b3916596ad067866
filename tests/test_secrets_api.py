"""PUT .../secrets and the deprecated PUT/DELETE .../ratelimit of a version (spec §2.8)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import bearer, call
from function_support import BODY, PLAIN, create, problem
from litestar.testing import TestClient

from nvcf_lite.domain.function_fields import SecretInput
from nvcf_lite.models import SCOPES, KeyResource, Principal

SECRETS = [{"name": "TOKEN", "value": "one"}, {"name": "json.conf", "value": {"a": 1}}]


def secrets_path(fn: dict[str, Any], prefix: str = PLAIN) -> str:
    return f"{prefix}/secrets/functions/{fn['id']}/versions/{fn['versionId']}"


def ratelimit_path(fn: dict[str, Any]) -> str:
    return f"{PLAIN}/ratelimit/functions/{fn['id']}/versions/{fn['versionId']}"


def get(client: TestClient[Any], fn: dict[str, Any]) -> dict[str, Any]:
    r = client.get(f"{PLAIN}/functions/{fn['id']}/versions/{fn['versionId']}", headers=bearer())
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()["function"]
    return got


def stored(client: TestClient[Any], fn: dict[str, Any]) -> Any:
    return call(client, client.app.state.platform.functions.secrets, fn["versionId"])


def test_update_merges_by_name_and_answers_204(client: TestClient[Any]) -> None:
    fn = create(client, {**BODY, "secrets": SECRETS})
    body = {"secrets": [{"name": "TOKEN", "value": "two"}, {"name": "EXTRA", "value": "x"}]}
    r = client.put(secrets_path(fn), json=body, headers=bearer())
    assert r.status_code == 204 and r.content == b""
    assert get(client, fn)["secrets"] == ["TOKEN", "json.conf", "EXTRA"]  # names only
    assert stored(client, fn) == {"TOKEN": "two", "json.conf": {"a": 1}, "EXTRA": "x"}
    # the NGC path family too
    r = client.put(secrets_path(fn, "/v2/orgs/local/nvcf"), json=body, headers=bearer())
    assert r.status_code == 204


def test_a_version_created_without_secrets_cannot_get_them(client: TestClient[Any]) -> None:
    fn = create(client)
    r = client.put(secrets_path(fn), json={"secrets": SECRETS}, headers=bearer())
    doc = problem(r, 400)
    assert "created without secrets" in doc["detail"]
    assert stored(client, fn) == {}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"secrets": []}, "must not be empty"),
        ({"secrets": [{"name": "bad name!", "value": "x"}]}, "must conform to regex"),
        ({"secrets": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "duplicate"),
        ({"secrets": [{"name": "A", "value": ""}]}, "characters long"),
        ({"secrets": [{"name": "A"}]}, "value"),
        ({}, "secrets"),
    ],
)
def test_invalid_updates_are_400_and_change_nothing(
    client: TestClient[Any], body: dict[str, Any], words: str
) -> None:
    fn = create(client, {**BODY, "secrets": SECRETS})
    doc = problem(client.put(secrets_path(fn), json=body, headers=bearer()), 400)
    assert words in doc["detail"], doc
    assert stored(client, fn) == {"TOKEN": "one", "json.conf": {"a": 1}}


def test_unknown_version_is_404(client: TestClient[Any]) -> None:
    fn = create(client, {**BODY, "secrets": SECRETS})
    other = {**fn, "versionId": "00000000-0000-4000-8000-000000000000"}
    problem(client.put(secrets_path(other), json={"secrets": SECRETS}, headers=bearer()), 404)


def test_deprecated_ratelimit_endpoints_set_and_clear(client: TestClient[Any]) -> None:
    fn = create(client)
    body = {"rateLimit": {"rateLimit": "3-S", "exemptedNcaIds": ["other"], "syncCheck": True}}
    r = client.put(ratelimit_path(fn), json=body, headers=bearer())
    assert r.status_code == 204 and r.content == b"", r.text
    assert get(client, fn)["rateLimit"]["rateLimit"] == "3-S"
    assert get(client, fn)["rateLimit"]["exemptedNcaIds"] == ["other"]
    r = client.delete(ratelimit_path(fn), headers=bearer())
    assert r.status_code == 204 and r.content == b""
    assert "rateLimit" not in get(client, fn)
    bad = client.put(ratelimit_path(fn), json={"rateLimit": {"rateLimit": "3/S"}}, headers=bearer())
    problem(bad, 400)


def test_concurrent_updates_keep_both(client: TestClient[Any]) -> None:
    fn = create(client, {**BODY, "secrets": SECRETS})
    functions = client.app.state.platform.functions
    principal = Principal(
        key_id="k",
        nca_id=fn["ncaId"],
        scopes=frozenset(SCOPES),
        resources=(KeyResource(type="account-functions", id="*"),),
    )

    async def both() -> None:
        async def put(name: str) -> None:
            item = [SecretInput(name=name, value="v")]
            await functions.update_secrets(principal, fn["id"], fn["versionId"], item)

        await asyncio.gather(put("B"), put("C"))

    call(client, both)
    assert set(stored(client, fn)) == {"TOKEN", "json.conf", "B", "C"}
    assert set(get(client, fn)["secrets"]) == {"TOKEN", "json.conf", "B", "C"}
