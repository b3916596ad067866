"""Every route the app serves, read from the app itself, against four callers (spec §6).

The routes come from `app.routes` (each path and method, in all three path families), so a new
route is checked the day it is added: a route that needs no key must be listed in PUBLIC with
the reason, and a route that checks its key in the handler (not through `opt` scopes) in
SELF_CHECKED with the scope it needs; anything else must declare its scopes. For each route:

1. no key: 401;
2. a key with every scope but the route's (spec §6.2): 403;
3. a key limited to one function (spec §6.3) cannot see or touch another function of its own
   account: 403 or 404 on the routes addressing it, and lists do not show it;
4. a key of another account, with every scope, cannot read, invoke, poll, read the queue of,
   download, change or delete anything of account A (which shared nothing): 404 where NVCF
   hides existence (every route that names one of A's ids), 403 on the server-wide model
   store; lists never show A's ids; and afterwards all of A's things are still there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from artifact_support import tar_body
from conftest import bearer, call
from function_support import BODY, create
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from telemetry_support import create_telemetry, telemetry_body
from test_auth_scopes_api import CPU_SPEC, StuckRuntime, credential, deploy

from nvcf_lite.models import SCOPES

# (method, path) -> why it needs no key
CONSOLE = "the console's static files: the key is typed in the browser, its scripts send it"
DOCS = "the API documentation is public, like NVCF's published OpenAPI document"
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/health"): "liveness and readiness for supervisors and load balancers",
    ("GET", "/metrics"): "Prometheus scrape (no tenant data: counts and latencies)",
    ("POST", "/v3/keys/get-caller-info"): "NGC bootstrap: the key is in the form body (§2.11)",
    ("GET", "/token"): "NGC token exchange: the key is in the Basic credentials (§7.1)",
    ("PUT", "/_nvcf-lite/uploads/assets/{asset_id:str}"): "signed upload URL (the S3 stand-in)",
    ("GET", "/_nvcf-lite/blobs/{kind:str}/{blob_id:str}"): "signed download URL (302 Location)",
    ("GET", "/openapi"): DOCS,
    ("GET", "/openapi/openapi.json"): DOCS,
    ("GET", "/openapi/swagger"): DOCS,
    ("GET", "/openapi/{path:str}"): DOCS,
    ("GET", "/openapi/oauth2-redirect.html"): DOCS,
    ("GET", "/openapi/static/swagger-ui/{file_path:path}"): DOCS,
    ("HEAD", "/openapi/static/swagger-ui/{file_path:path}"): DOCS,
    ("GET", "/console"): CONSOLE,
    ("GET", "/console/{file_path:path}"): CONSOLE,
    ("HEAD", "/console/{file_path:path}"): CONSOLE,
}
# Routes whose handler authenticates the key itself (the pexec hot path, I5, the gateway):
# their scope.
INVOKE_SCOPE = ("invoke_function",)
PATH_INVOCATION = "/{any_path:path}"
# I5 by host: reached through a `{function-id}.invocation.localhost` Host (api/host_routes)
HOST_INVOCATION = ("/_nvcf-lite/by-host", "/_nvcf-lite/by-host/{any_path:path}")
SELF_CHECKED: dict[str, tuple[str, ...]] = {
    "/v2/nvcf/pexec/functions/{function_id:str}": INVOKE_SCOPE,
    "/v2/nvcf/pexec/functions/{function_id:str}/versions/{version_id:str}": INVOKE_SCOPE,
    PATH_INVOCATION: INVOKE_SCOPE,
    **dict.fromkeys(HOST_INVOCATION, INVOKE_SCOPE),
    # the OpenAI-compatible gateway (api/gateway.py)
    "/v1/models": INVOKE_SCOPE,
    "/v1/chat/completions": INVOKE_SCOPE,
    "/v1/completions": INVOKE_SCOPE,
    "/v1/embeddings": INVOKE_SCOPE,
}
# What the gateway serves on its paths; their other methods are path-preserving invocations.
GATEWAY_SERVES = {
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
}


def path_preserving(route: Route) -> bool:
    if route.path == PATH_INVOCATION:
        return True
    return route.path.startswith("/v1/") and (route.method, route.path) not in GATEWAY_SERVES


# Path parameters that name one of account A's things.
RESOURCE_PARAMS = {
    "function_id",
    "version_id",
    "deployment_id",
    "spec_id",
    "asset_id",
    "request_id",
    "telemetry_id",
    "credential_id",
    "key_id",
}
FAMILY = re.compile(r"^/v2/orgs/\{org:str\}(/teams/\{team:str\})?/nvcf")
PARAM = re.compile(r"\{(\w+):\w+\}")
OTHER_NCA, OTHER_ORG = "nca-other", "other-org"
MODEL_STORE = ("/v2/nvcf-lite/models", "/v2/nvcf-lite/resources")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # the path format, e.g. /v2/nvcf/functions/{function_id:str}
    scopes: tuple[str, ...] | None  # None: public

    @property
    def plain(self) -> str:
        """The /v2/nvcf form of an org- or team-family path (they share handlers)."""
        return FAMILY.sub("/v2/nvcf", self.path)

    @property
    def params(self) -> set[str]:
        return set(PARAM.findall(self.path))


def app_routes(client: TestClient[Any]) -> list[Route]:
    out = []
    for route in client.app.routes:
        assert isinstance(route, HTTPRoute), route.path  # no websocket routes expected
        for method, (handler, _) in route.route_handler_map.items():
            if method == "OPTIONS":  # Litestar's automatic answer
                continue
            declared = handler.opt.get("scopes")
            plain = FAMILY.sub("/v2/nvcf", route.path)
            if declared is None:
                declared = SELF_CHECKED.get(plain)
            out.append(Route(method, route.path, declared))
    return out


@dataclass
class World:
    """Account A's things (made with the admin key), and the other keys."""

    ids: dict[str, str]
    other_fn: dict[str, Any]  # a second function of A, for the function-limited key
    other_key: str  # account B, every scope
    limited_key: str  # account A, every scope, limited to other_fn

    def fill(self, route: Route, org: str, **override: str) -> str:
        values = {**self.ids, "org": org, "team": "t1", **override}
        return PARAM.sub(lambda m: values[m.group(1)], route.path)


def body_for(route: Route, world: World) -> Any:
    """A valid body for the writes, so that what refuses a call is access, not the body."""
    plain, method = route.plain, route.method
    if method in ("GET", "DELETE", "HEAD", "TRACE"):
        return None
    if plain.startswith(MODEL_STORE):
        return tar_body({"f": b"x"})
    if plain == "/v2/nvcf-lite/keys":
        return {"scopes": ["invoke_function"]}
    if "/authorizations/" in plain:
        party = {"ncaId": OTHER_NCA}
        return {"authorizedParty": party} if method == "PATCH" else {"authorizedParties": [party]}
    if "/deployments/" in plain:
        return (
            {"maxInstances": 3} if method == "PATCH" else {"deploymentSpecifications": [CPU_SPEC]}
        )
    if "/secrets/telemetries/" in plain:
        return {"secret": {"name": "otel", "value": "new"}}
    if "/secrets/" in plain:
        return {"secrets": [{"name": "A", "value": "b"}]}
    if "/ratelimit/" in plain:
        return {"rateLimit": {"rateLimit": "5-S"}}
    if plain.endswith("/telemetries"):
        return telemetry_body()
    if "/registry-credentials" in plain:
        return credential("b.example") if method == "POST" else {"secret": credential("")["secret"]}
    if "/assets" in plain:
        return {"contentType": "text/plain", "description": "b"}
    if "/pexec/" in plain or path_preserving(route):
        return {"x": 1}
    if plain.endswith("/versions/{version_id:str}"):
        return {"tags": ["b"]}
    return BODY  # function create / new version


def send(
    client: TestClient[Any], world: World, route: Route, key: str | None, org: str, **ids: str
) -> Any:
    path = world.fill(route, org, **ids)
    headers = bearer(key) if key else {}
    if path_preserving(route):
        path = "/some/path" if route.path == PATH_INVOCATION else path
        headers["Function-ID"] = ids.get("function_id", world.ids["function_id"])
    elif route.path in HOST_INVOCATION:
        path = "/v2/nvcf/functions"  # on a function's host, every path is the function's
        headers["Host"] = f"{ids.get('function_id', world.ids['function_id'])}.invocation.localhost"
    headers["NVCF-POLL-SECONDS"] = "1"
    payload = body_for(route, world)
    if isinstance(payload, bytes):
        return client.request(route.method, path, content=payload, headers=headers)
    return client.request(route.method, path, json=payload, headers=headers)


@pytest.fixture(scope="module")
def module_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    from conftest import make_config

    from nvcf_lite.app import create_app

    # containers never start: the request made below stays queued (a real request id)
    app = create_app(
        make_config(tmp_path_factory.mktemp("routes") / "data"),
        runtime_factory=lambda config: StuckRuntime(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _make_world(client: TestClient[Any]) -> World:
    fn, other_fn, live = create(client), create(client), create(client)
    deployment = deploy(client, live, CPU_SPEC)
    r = client.post(
        "/v2/nvcf/assets", json={"contentType": "text/plain", "description": "a"}, headers=bearer()
    )
    asset_id = r.json()["assetId"]
    r = client.post("/v2/nvcf/registry-credentials", json=credential("a.example"), headers=bearer())
    credential_id = r.json()["registryCredential"]["registryCredentialId"]
    telemetry_id = create_telemetry(client)["telemetryId"]
    r = client.post(
        f"/v2/nvcf/pexec/functions/{live['id']}",
        json={"x": 1},
        headers={**bearer(), "NVCF-POLL-SECONDS": "1"},
    )
    assert r.status_code == 202, r.text
    request_id = r.headers["nvcf-reqid"]
    platform = client.app.state.platform
    call(client, platform.accounts.create, OTHER_NCA, OTHER_ORG)
    other_key, _ = call(client, lambda: platform.keys.create(SCOPES, nca_id=OTHER_NCA))
    limited_key, _ = call(client, lambda: platform.keys.create(SCOPES, [other_fn["id"]]))
    _, spare_key = call(client, lambda: platform.keys.create(["invoke_function"]))
    ids = {
        "function_id": fn["id"],
        "version_id": fn["versionId"],
        "deployment_id": deployment["deploymentId"],
        "spec_id": deployment["deploymentSpecifications"][0]["gpuSpecificationId"],
        "asset_id": asset_id,
        "request_id": request_id,
        "telemetry_id": telemetry_id,
        "credential_id": credential_id,
        "key_id": spare_key.key_id,  # another key of A's (B must not list or revoke it)
        "name": "m",
        "version": "1",
        "kind": "results",
        "blob_id": asset_id,
        "rest": "repos/x/images/1",
        "any_path": "x",
        "file_path": "x",
        "path": "x",
    }
    return World(ids, other_fn, str(other_key), str(limited_key))


@pytest.fixture(scope="module")
def world(module_client: TestClient[Any]) -> World:
    return _make_world(module_client)


@pytest.fixture(scope="module")
def routes(module_client: TestClient[Any]) -> list[Route]:
    return app_routes(module_client)


def protected(routes: list[Route]) -> list[Route]:
    return [r for r in routes if (r.method, r.path) not in PUBLIC]


def _check(failures: list[str], route: Route, ok: bool, r: Any) -> None:
    if not ok:
        failures.append(f"{route.method} {route.path}: {r.status_code} {r.text[:200]}")


def test_every_route_is_public_by_name_or_declares_its_scopes(routes: list[Route]) -> None:
    undeclared = [f"{r.method} {r.path}" for r in protected(routes) if r.scopes is None]
    assert not undeclared, f"routes with no scopes and not listed in PUBLIC: {undeclared}"
    served = {(r.method, r.path) for r in routes}
    stale = [k for k in PUBLIC if k not in served]
    assert not stale, f"PUBLIC lists routes the app does not serve: {stale}"
    assert len(routes) > 150  # the three families of ~60 NVCF routes, and the rest


def test_no_key_is_401_on_every_protected_route(
    module_client: TestClient[Any], world: World, routes: list[Route]
) -> None:
    failures: list[str] = []
    for route in protected(routes):
        r = send(module_client, world, route, None, "local")
        _check(failures, route, r.status_code == 401, r)
    assert not failures, "\n".join(failures)


def test_a_key_without_the_routes_scope_is_403(
    module_client: TestClient[Any], world: World, routes: list[Route]
) -> None:
    platform = module_client.app.state.platform
    failures: list[str] = []
    keys: dict[tuple[str, ...], str] = {}
    for route in protected(routes):
        assert route.scopes is not None
        if not route.scopes:  # any valid key (NGC start-up calls)
            continue
        if route.scopes not in keys:
            others = [s for s in SCOPES if s not in route.scopes]
            keys[route.scopes] = call(module_client, lambda o=others: platform.keys.create(o))[0]
        r = send(module_client, world, route, keys[route.scopes], "local")
        named = route.method == "HEAD" or "scope" in r.text  # a HEAD answer has no body
        _check(failures, route, r.status_code == 403 and named, r)
    assert not failures, "\n".join(failures)


def test_a_key_limited_to_one_function_cannot_see_or_touch_another(
    module_client: TestClient[Any], world: World, routes: list[Route]
) -> None:
    failures: list[str] = []
    fid = world.ids["function_id"]
    for route in protected(routes):
        params = route.params & {"function_id", "version_id", "deployment_id", "request_id"}
        if path_preserving(route) or route.path in HOST_INVOCATION:
            params = {"function_id"}
        if params:
            r = send(module_client, world, route, world.limited_key, "local")
            _check(failures, route, r.status_code in (403, 404), r)
        elif route.method == "GET" and "/functions" in route.plain:
            r = send(module_client, world, route, world.limited_key, "local")
            _check(failures, route, r.status_code == 200 and fid not in r.text, r)
    assert not failures, "\n".join(failures)


def test_another_accounts_key_gets_404_for_everything_of_account_a(
    module_client: TestClient[Any], world: World, routes: list[Route]
) -> None:
    failures: list[str] = []
    a_ids = {world.ids[p] for p in RESOURCE_PARAMS}
    for route in protected(routes):
        r = send(module_client, world, route, world.other_key, OTHER_ORG)
        names_a = bool(route.params & RESOURCE_PARAMS) or path_preserving(route)
        names_a = names_a or route.path in HOST_INVOCATION
        if route.plain.startswith(MODEL_STORE):
            _check(failures, route, r.status_code == 403, r)  # the server's model store
        elif names_a:
            _check(failures, route, r.status_code == 404, r)
        else:  # lists, creates and server-wide reads: B's own answers, nothing of A's
            leaked = [i for i in a_ids if i in r.text]
            _check(failures, route, r.status_code < 500 and not leaked, r)
    assert not failures, "\n".join(failures)
    # and nothing of A's was changed or deleted by any of those calls
    ids = world.ids
    for path in (
        f"/v2/nvcf/functions/{ids['function_id']}/versions/{ids['version_id']}",
        f"/v2/nvcf/deployments/{ids['deployment_id']}",
        f"/v2/nvcf/assets/{ids['asset_id']}",
        f"/v2/nvcf/telemetries/{ids['telemetry_id']}",
        f"/v2/nvcf/registry-credentials/{ids['credential_id']}",
        f"/v2/nvcf/authorizations/functions/{ids['function_id']}",
    ):
        r = module_client.get(path, headers=bearer())
        assert r.status_code == 200, (path, r.text)
    r = module_client.get(
        f"/v2/nvcf/authorizations/functions/{ids['function_id']}", headers=bearer()
    )
    assert r.json()["function"]["authorizedParties"] == []
    keys = module_client.get("/v2/nvcf-lite/keys", headers=bearer()).json()["keys"]
    spare = [k for k in keys if k["keyId"] == ids["key_id"]]
    assert spare and spare[0].get("revokedAt") is None  # B's DELETE found no key of A's


def test_another_accounts_key_is_404_under_the_org_of_account_a(
    module_client: TestClient[Any], world: World, routes: list[Route]
) -> None:
    """The org of the path selects the account: B's key on A's org paths is 404."""
    failures: list[str] = []
    for route in protected(routes):
        if "{org:str}" in route.path and "/nvcf" in route.path:
            r = send(module_client, world, route, world.other_key, "local")
            _check(failures, route, r.status_code == 404 and "Org 'local'" in r.text, r)
    assert not failures, "\n".join(failures)


def test_json_nested_past_the_decoders_depth_is_a_400_on_every_write(
    module_client: TestClient[Any], world: World, routes: list[Route]
) -> None:
    """msgspec stops at ~1000 levels with a RecursionError: a client's body, never a 500.
    (Invocation bodies go to the container unread; tar and upload bodies are not JSON.)"""
    deep = b'{"model":' * 3000 + b"1" + b"}" * 3000
    failures: list[str] = []
    for route in routes:
        if (
            route.method not in ("POST", "PUT", "PATCH")
            or "/pexec/" in route.plain
            or path_preserving(route)
            or route.path in HOST_INVOCATION
            or route.plain.startswith(MODEL_STORE)
            or route.path.startswith("/_nvcf-lite/uploads")
        ):
            continue
        headers = {**bearer(), "Content-Type": "application/json"}
        r = module_client.request(
            route.method, world.fill(route, "local"), content=deep, headers=headers
        )
        _check(failures, route, 400 <= r.status_code < 500, r)
    assert not failures, "\n".join(failures)
