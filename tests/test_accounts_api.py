"""Several accounts on one server, function sharing Z1-Z10 and teams (spec §2.7, §6.4, §2.11).

Account A is the configured one (org `local`, the admin key); account B (`nca-b`, org `org-b`)
and C (`nca-c`, org `org-c`) are added. Sharing is exercised through the HTTP API exactly as
ngcsdk sends it; what a party may do with a shared function is checked route by route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import bearer, call
from function_support import FAMILIES, PLAIN, body, create, problem, version_path
from litestar.testing import TestClient
from test_auth_scopes_api import CPU_SPEC, StuckRuntime, deploy

from nvcf_lite.models import SCOPES

B, C = "nca-b", "nca-c"
AUTHZ = f"{PLAIN}/authorizations/functions"

KeyMaker = Callable[..., str]


@pytest.fixture
def account_key(client: TestClient[Any]) -> KeyMaker:
    return key_maker(client)


@pytest.fixture
def stuck(app_factory: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    """An app whose containers never start: a request to a deployed function waits queued."""
    return app_factory(runtime_factory=lambda config: StuckRuntime())


def key_maker(client: TestClient[Any]) -> KeyMaker:
    """A key of account `nca_id` (made with that org on first use), with every scope."""
    platform = client.app.state.platform
    made: set[str] = set()

    def mint(nca_id: str, *scopes: str, teams: tuple[str, ...] = ()) -> str:
        if nca_id not in made:
            call(client, platform.accounts.create, nca_id, f"org-{nca_id[-1]}")
            made.add(nca_id)
        token, _ = call(
            client,
            lambda: platform.keys.create(list(scopes) or SCOPES, nca_id=nca_id, teams=teams),
        )
        return str(token)

    return mint


def share(client: TestClient[Any], fid: str, *ncas: str, vid: str | None = None) -> Any:
    path = f"{AUTHZ}/{fid}" + (f"/versions/{vid}" if vid else "")
    parties = [{"ncaId": n} for n in ncas]
    return client.post(path, json={"authorizedParties": parties}, headers=bearer())


def listed(client: TestClient[Any], key: str, org: str, visibility: str | None = None) -> set[str]:
    query = f"?visibility={visibility}" if visibility else ""
    r = client.get(f"/v2/orgs/{org}/nvcf/functions{query}", headers=bearer(key))
    assert r.status_code == 200, r.text
    return {f["versionId"] for f in r.json()["functions"]}


# --- accounts and their orgs --------------------------------------------------------------------


def test_the_configured_account_exists_and_another_can_be_added(client: TestClient[Any]) -> None:
    accounts = client.app.state.platform.accounts
    made = call(client, accounts.create, B, "org-b")
    found = {a.nca_id: a.org_name for a in call(client, accounts.list)}
    assert found == {"nvcf-lite-local": "local", B: "org-b"}
    assert made.org_name == "org-b"
    with pytest.raises(Exception, match="exists already"):
        call(client, accounts.create, "nca-x", "org-b")
    with pytest.raises(Exception, match="invalid org name"):
        call(client, accounts.create, "nca-y", "has/slash")


def test_a_key_uses_its_own_org_only(client: TestClient[Any], account_key: KeyMaker) -> None:
    key_b = account_key(B)
    assert client.get("/v2/orgs/org-b/nvcf/functions", headers=bearer(key_b)).json() == {
        "functions": []
    }
    for org in ("local", "org-unknown"):
        doc = problem(client.get(f"/v2/orgs/{org}/nvcf/functions", headers=bearer(key_b)), 404)
        assert f"Org '{org}' not found" in doc["detail"]
    doc = problem(client.get("/v2/orgs/org-b/nvcf/functions", headers=bearer()), 404)
    assert "Org 'org-b' not found" in doc["detail"]  # nor A's key B's org
    r = client.post("/v3/keys/get-caller-info", data={"credentials": key_b})
    assert r.json()["orgName"] == "org-b" and r.json()["ncaId"] == B
    orgs = client.get("/v2/orgs", headers=bearer(key_b)).json()["organizations"]
    assert [o["name"] for o in orgs] == ["org-b"]


def test_what_a_key_makes_belongs_to_its_account(
    client: TestClient[Any], account_key: KeyMaker
) -> None:
    key_b = account_key(B)
    fn_b = create(client, key=key_b, prefix="/v2/orgs/org-b/nvcf")
    fn_a = create(client)
    assert fn_b["ncaId"] == B and fn_a["ncaId"] == "nvcf-lite-local"
    assert listed(client, key_b, "org-b") == {fn_b["versionId"]}
    assert listed(client, bearer()["Authorization"][7:], "local") == {fn_a["versionId"]}
    problem(client.get(version_path(fn_b), headers=bearer()), 404)


# --- Z1-Z10: the rules of the sets --------------------------------------------------------------


def test_function_level_set_replace_add_remove_clear(client: TestClient[Any]) -> None:
    fn = create(client)
    fid, path = fn["id"], f"{AUTHZ}/{fn['id']}"
    r = client.get(path, headers=bearer())
    assert r.status_code == 200
    assert r.json()["functions"] == [
        {
            "id": fid,
            "ncaId": "nvcf-lite-local",
            "versionId": fn["versionId"],
            "authorizedParties": [],
        }
    ]
    # add before any set: 404 (ngcsdk POSTs first)
    add = {"authorizedParty": {"ncaId": B}}
    problem(client.patch(f"{path}/add", json=add, headers=bearer()), 404)
    r = share(client, fid, B)
    assert r.status_code == 200
    assert r.json() == {
        "function": {"id": fid, "ncaId": "nvcf-lite-local", "authorizedParties": [{"ncaId": B}]}
    }
    problem(client.patch(f"{path}/add", json=add, headers=bearer()), 409)
    r = client.patch(f"{path}/add", json={"authorizedParty": {"ncaId": C}}, headers=bearer())
    assert [p["ncaId"] for p in r.json()["function"]["authorizedParties"]] == [B, C]
    problem(
        client.patch(f"{path}/remove", json={"authorizedParty": {"ncaId": "x"}}, headers=bearer()),
        404,
    )
    r = client.patch(f"{path}/remove", json=add, headers=bearer())
    assert r.json()["function"]["authorizedParties"] == [{"ncaId": C}]
    r = share(client, fid, B)  # POST replaces the whole set
    assert r.json()["function"]["authorizedParties"] == [{"ncaId": B}]
    r = client.delete(path, headers=bearer())
    assert r.status_code == 200 and r.json()["function"]["authorizedParties"] == []
    assert client.get(path, headers=bearer()).json()["functions"][0]["authorizedParties"] == []


def test_version_level_sets_inherit_the_function_level_parties(client: TestClient[Any]) -> None:
    fn = create(client)
    fid, vid = fn["id"], fn["versionId"]
    r = client.post(f"{PLAIN}/functions/{fid}/versions", json=body(), headers=bearer())
    vid2 = r.json()["function"]["versionId"]
    assert share(client, fid, B).status_code == 200
    assert share(client, fid, C, vid=vid).status_code == 200
    one = client.get(f"{AUTHZ}/{fid}/versions/{vid}", headers=bearer()).json()["function"]
    assert one["versionId"] == vid and [p["ncaId"] for p in one["authorizedParties"]] == [B, C]
    every = client.get(f"{AUTHZ}/{fid}", headers=bearer()).json()["functions"]
    assert {e["versionId"]: [p["ncaId"] for p in e["authorizedParties"]] for e in every} == {
        vid: [B, C],
        vid2: [B],
    }
    r = client.delete(f"{AUTHZ}/{fid}/versions/{vid}", headers=bearer())
    assert r.json()["function"] == {
        "id": fid,
        "ncaId": "nvcf-lite-local",
        "versionId": vid,
        "authorizedParties": [],
    }


@pytest.mark.parametrize(
    ("parties", "detail"),
    [
        ([], "must not be empty"),
        ([{"ncaId": B}, {"ncaId": B}], "duplicate"),
        ([{"ncaId": "*"}, {"ncaId": B}], "wildcard"),
        ([{"ncaId": "*", "clientId": "c"}], "wildcard"),
        ([{"ncaId": " "}], "non-empty 'ncaId'"),
    ],
)
def test_bad_party_lists_are_400(
    client: TestClient[Any], parties: list[dict[str, str]], detail: str
) -> None:
    fn = create(client)
    r = client.post(f"{AUTHZ}/{fn['id']}", json={"authorizedParties": parties}, headers=bearer())
    assert detail in problem(r, 400)["detail"]


def test_a_version_route_wants_a_uuid_even_where_the_version_is_optional(
    client: TestClient[Any],
) -> None:
    """`.../versions/null` converts to None: it must not reach the function-level set."""
    fn = create(client)
    base = f"{AUTHZ}/{fn['id']}/versions"
    for method, suffix, payload in [
        ("POST", "", {"authorizedParties": [{"ncaId": B}]}),
        ("PATCH", "/add", {"authorizedParty": {"ncaId": B}}),
        ("PATCH", "/remove", {"authorizedParty": {"ncaId": B}}),
        ("DELETE", "", None),
    ]:
        for bad in ("null", "not-a-uuid"):
            r = client.request(method, f"{base}/{bad}{suffix}", json=payload, headers=bearer())
            assert "UUID" in problem(r, 400)["detail"], (method, suffix, bad)
    level = client.get(f"{AUTHZ}/{fn['id']}", headers=bearer()).json()["function"]
    assert level["authorizedParties"] == []  # nothing was shared at function level


def test_authorizations_of_unknown_or_foreign_functions(
    client: TestClient[Any], account_key: KeyMaker
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    problem(client.get(f"{AUTHZ}/{unknown}", headers=bearer()), 404)
    problem(client.get(f"{AUTHZ}/not-a-uuid", headers=bearer()), 400)
    fn = create(client)
    key_b = account_key(B)
    for method, suffix, payload in [
        ("GET", "", None),
        ("POST", "", {"authorizedParties": [{"ncaId": B}]}),
        ("PATCH", "/add", {"authorizedParty": {"ncaId": B}}),
        ("DELETE", "", None),
    ]:
        r = client.request(
            method, f"{AUTHZ}/{fn['id']}{suffix}", json=payload, headers=bearer(key_b)
        )
        problem(r, 404)  # not shared: B cannot learn it exists
    share(client, fn["id"], B)
    r = client.post(
        f"{AUTHZ}/{fn['id']}", json={"authorizedParties": [{"ncaId": C}]}, headers=bearer(key_b)
    )
    assert "only the owning account" in problem(r, 403)["detail"]  # a party cannot re-share


def test_deleting_a_version_drops_its_parties(client: TestClient[Any]) -> None:
    fn = create(client)
    share(client, fn["id"], B)
    share(client, fn["id"], C, vid=fn["versionId"])
    assert client.delete(version_path(fn), headers=bearer()).status_code == 204
    repo = client.app.state.platform.functions.parties
    assert call(client, repo.of_function, fn["id"]) == {}


# --- what sharing grants ------------------------------------------------------------------------


def test_a_party_lists_and_reads_a_shared_function_without_its_secrets(
    client: TestClient[Any], account_key: KeyMaker
) -> None:
    fn = create(client, body(secrets=[{"name": "TOKEN", "value": "v"}]))
    key_b, key_c = account_key(B), account_key(C)
    assert listed(client, key_b, "org-b") == set()
    share(client, fn["id"], B)
    assert listed(client, key_b, "org-b") == {fn["versionId"]}
    assert listed(client, key_b, "org-b", "authorized") == {fn["versionId"]}
    assert listed(client, key_b, "org-b", "private,public") == set()
    assert listed(client, key_c, "org-c") == set()
    r = client.get(version_path(fn, "/v2/orgs/org-b/nvcf"), headers=bearer(key_b))
    assert r.status_code == 200 and "secrets" not in r.json()["function"]
    assert r.json()["function"]["ncaId"] == "nvcf-lite-local"  # the owner
    assert r.json()["function"]["ownedByDifferentAccount"] is True
    assert "ownedByDifferentAccount" not in client.get(version_path(fn), headers=bearer()).text
    assert client.get(version_path(fn), headers=bearer()).json()["function"]["secrets"] == ["TOKEN"]
    ids = client.get("/v2/orgs/org-b/nvcf/functions/ids", headers=bearer(key_b)).json()
    assert ids == {"functionIds": [fn["id"]]}


def test_the_wildcard_shares_with_every_account_as_public(
    client: TestClient[Any], account_key: KeyMaker
) -> None:
    fn = create(client)
    key_c = account_key(C)
    share(client, fn["id"], "*")
    assert listed(client, key_c, "org-c", "public") == {fn["versionId"]}
    assert listed(client, key_c, "org-c", "authorized") == set()
    client.delete(f"{AUTHZ}/{fn['id']}", headers=bearer())
    assert listed(client, key_c, "org-c") == set()
    problem(client.get(version_path(fn), headers=bearer(key_c)), 404)


def test_a_version_level_share_covers_that_version_only(
    client: TestClient[Any], account_key: KeyMaker
) -> None:
    fn = create(client)
    r = client.post(f"{PLAIN}/functions/{fn['id']}/versions", json=body(), headers=bearer())
    other = r.json()["function"]
    key_b = account_key(B)
    share(client, fn["id"], B, vid=fn["versionId"])
    assert listed(client, key_b, "org-b") == {fn["versionId"]}
    assert client.get(version_path(fn), headers=bearer(key_b)).status_code == 200
    problem(client.get(version_path(other), headers=bearer(key_b)), 404)


def test_a_party_may_invoke_and_read_queues_but_change_nothing(stuck: TestClient[Any]) -> None:
    client, account_key = stuck, key_maker(stuck)
    fn = create(client, body(secrets=[{"name": "TOKEN", "value": "v"}]))
    fid, vid = fn["id"], fn["versionId"]
    deployment = deploy(client, fn, CPU_SPEC)
    key_b = account_key(B)
    share(client, fid, B)
    b = bearer(key_b)
    assert client.get(f"{PLAIN}/queues/functions/{fid}", headers=b).status_code == 200
    assert (
        client.get(f"{PLAIN}/queues/functions/{fid}/versions/{vid}", headers=b).status_code == 200
    )
    r = client.post(
        f"{PLAIN}/pexec/functions/{fid}", json={"x": 1}, headers={**b, "NVCF-POLL-SECONDS": "1"}
    )
    assert r.status_code == 202, r.text  # accepted for B, queued
    refused = [
        ("POST", f"{PLAIN}/functions/{fid}/versions", body()),
        ("PUT", version_path(fn), {"tags": ["b"]}),
        ("DELETE", version_path(fn), None),
        (
            "PUT",
            f"{PLAIN}/secrets/functions/{fid}/versions/{vid}",
            {"secrets": [{"name": "TOKEN", "value": "x"}]},
        ),
        (
            "PUT",
            f"{PLAIN}/ratelimit/functions/{fid}/versions/{vid}",
            {"rateLimit": {"rateLimit": "5-S"}},
        ),
        ("GET", f"{PLAIN}/deployments/functions/{fid}/versions/{vid}", None),
        ("DELETE", f"{PLAIN}/deployments/functions/{fid}/versions/{vid}", None),
        ("GET", f"{PLAIN}/functions/{fid}/logs", None),
        ("GET", f"{AUTHZ}/{fid}", None),
        ("DELETE", f"{AUTHZ}/{fid}", None),
        ("GET", f"/v2/nvcf-lite/functions/{fid}/requests", None),  # the console's last requests
    ]
    for method, path, payload in refused:
        r = client.request(method, path, json=payload, headers=b)
        assert r.status_code == 403, (method, path, r.text)
    # the deployment by id and the deployments list are the owner's only
    problem(client.get(f"{PLAIN}/deployments/{deployment['deploymentId']}", headers=b), 404)
    assert client.get(f"{PLAIN}/deployments", headers=b).json() == {"deployments": []}
    # nothing changed
    r = client.get(version_path(fn), headers=bearer())
    assert r.status_code == 200 and r.json()["function"]["status"] == "ACTIVE"


def test_a_request_belongs_to_the_account_that_made_it(stuck: TestClient[Any]) -> None:
    client, account_key = stuck, key_maker(stuck)
    fn = create(client)
    deploy(client, fn, CPU_SPEC)  # min 0, and containers never start: requests wait queued
    key_b = account_key(B)
    share(client, fn["id"], B)
    r = client.post(
        f"{PLAIN}/pexec/functions/{fn['id']}",
        json={"x": 1},
        headers={**bearer(key_b), "NVCF-POLL-SECONDS": "1"},
    )
    assert r.status_code == 202, r.text
    rid = r.headers["nvcf-reqid"]
    problem(client.get(f"{PLAIN}/pexec/status/{rid}", headers=bearer()), 404)  # not A's
    problem(client.get(f"{PLAIN}/queues/{rid}/position", headers=bearer()), 404)
    r = client.get(f"{PLAIN}/queues/{rid}/position", headers=bearer(key_b))
    assert r.status_code == 200 and r.json()["functionId"] == fn["id"]
    r = client.get(
        f"{PLAIN}/pexec/status/{rid}", headers={**bearer(key_b), "NVCF-POLL-SECONDS": "1"}
    )
    assert r.status_code == 202


def test_a_key_needs_authorized_functions_for_shared_functions(
    client: TestClient[Any], account_key: KeyMaker
) -> None:
    fn = create(client)
    share(client, fn["id"], B)
    account_key(B)  # the account
    platform = client.app.state.platform
    own_only, record = call(client, lambda: platform.keys.create(SCOPES, nca_id=B))
    assert {r.type for r in record.resources} == {"account-functions", "authorized-functions"}
    assert client.get(version_path(fn), headers=bearer(own_only)).status_code == 200
    limited, _ = call(client, lambda: platform.keys.create(SCOPES, [f"{fn['id']}/*"], nca_id=B))
    assert client.get(version_path(fn), headers=bearer(limited)).status_code == 200
    other = create(client)
    share(client, other["id"], B)
    problem(client.get(version_path(other), headers=bearer(limited)), 403)


# --- teams --------------------------------------------------------------------------------------


def test_team_paths_check_the_team_of_the_key(
    client: TestClient[Any], account_key: KeyMaker
) -> None:
    platform = client.app.state.platform
    team_key, _ = call(client, lambda: platform.keys.create(SCOPES, teams=["t1", "t2"]))
    fn = create(client, prefix=FAMILIES[2], key=team_key)  # /v2/orgs/local/teams/t1/nvcf
    r = client.get("/v2/orgs/local/teams/t2/nvcf/functions", headers=bearer(team_key))
    assert fn["versionId"] in {f["versionId"] for f in r.json()["functions"]}
    doc = problem(
        client.get("/v2/orgs/local/teams/t3/nvcf/functions", headers=bearer(team_key)), 403
    )
    assert "Team 't3'" in doc["detail"]
    r = client.post(
        "/v2/orgs/local/teams/t3/nvcf/pexec/functions/" + fn["id"],
        json={},
        headers=bearer(team_key),
    )
    problem(r, 403)
    # a key of no team is org-wide: any team path of its org
    assert client.get("/v2/orgs/local/teams/t3/nvcf/functions", headers=bearer()).status_code == 200
    info = client.post("/v3/keys/get-caller-info", data={"credentials": team_key}).json()
    assert [r["team"]["name"] for r in info["user"]["roles"] if "team" in r] == ["t1", "t2"]
    info = client.post(
        "/v3/keys/get-caller-info", data={"credentials": bearer()["Authorization"][7:]}
    ).json()
    assert not [r for r in info["user"]["roles"] if "team" in r]


def test_adding_to_a_version_that_inherits_parties_starts_its_own_set(
    client: TestClient[Any],
) -> None:
    fn = create(client)
    fid, vid = fn["id"], fn["versionId"]
    path = f"{AUTHZ}/{fid}/versions/{vid}"
    share(client, fid, B)
    r = client.patch(f"{path}/add", json={"authorizedParty": {"ncaId": C}}, headers=bearer())
    assert r.status_code == 200 and r.json()["function"]["authorizedParties"] == [{"ncaId": C}]
    add_b = {"authorizedParty": {"ncaId": B}}
    problem(client.patch(f"{path}/add", json=add_b, headers=bearer()), 409)  # inherited
    doc = problem(client.patch(f"{path}/remove", json=add_b, headers=bearer()), 404)
    assert "inherited ones are the function's" in doc["detail"]
    got = client.get(path, headers=bearer()).json()["function"]["authorizedParties"]
    assert [p["ncaId"] for p in got] == [B, C]


def test_a_party_cannot_pass_the_owners_assets_to_a_shared_function(
    stuck: TestClient[Any],
) -> None:
    client, account_key = stuck, key_maker(stuck)
    fn = create(client)
    deploy(client, fn, CPU_SPEC)
    r = client.post(
        f"{PLAIN}/assets", json={"contentType": "text/plain", "description": "a"}, headers=bearer()
    )
    asset_id = r.json()["assetId"]
    key_b = account_key(B)
    share(client, fn["id"], B)
    r = client.post(
        f"{PLAIN}/pexec/functions/{fn['id']}",
        json={"x": 1},
        headers={
            **bearer(key_b),
            "NVCF-POLL-SECONDS": "1",
            "NVCF-INPUT-ASSET-REFERENCES": asset_id,
        },
    )
    doc = problem(r, 404)
    assert f"Asset '{asset_id}' does not exist for account '{B}'" in doc["detail"]
