"""Who may call the non-function endpoints (spec §6.2 scopes, §6.3 key resources).

The 401/403 matrix of deployments (D1-D7), cluster groups (G1), supported GPUs (G2), assets
(A1-A5), invocation (I1-I3), queues (Q1-Q3), secrets (S1), the deprecated rate-limit
endpoints (R1, R2), registry credentials (C1-C6: add, list, get, update, delete, recognized
registries), telemetries (E1-E5) and the nvcf-lite extensions: status (X1), the console's
traffic (X2) and a function's last requests (X3), container logs
(L1, L2) and the model store (M1-M4);
functions (F1-F9) are in test_auth_functions_api.
For every endpoint: no key and an unknown key are 401; a key with every scope but the one it
needs is 403; that one scope alone opens it. A key limited to another function is 403 on the
function-scoped endpoints. No Docker is needed: a deployment on `CPU` is accepted without one.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from artifact_support import tar_body
from conftest import bearer
from function_support import PLAIN, create, problem
from litestar.testing import TestClient
from telemetry_support import create_telemetry, telemetry_body

from nvcf_lite.models import SCOPES
from nvcf_lite.runtime.base import ContainerInfo, ContainerSpec, RegistryAuth, UnavailableRuntime

CPU_SPEC = {"gpu": "CPU", "instanceType": "CPU.x1", "minInstances": 0, "maxInstances": 1}
UNKNOWN = "00000000-0000-4000-8000-000000000000"
DEPLOY = ("deploy_function",)
INVOKE = ("invoke_function",)
QUEUE = ("queue_details",)
REGISTRY = ("manage_registry_credentials",)
CREDS = base64.b64encode(b"puller:registry-password").decode()

# endpoint -> (the scopes that open it, the status the opening scope gets)
ENDPOINTS: dict[str, tuple[tuple[str, ...], int]] = {
    "D1": (DEPLOY, 200),
    "D2": (DEPLOY, 200),
    "D3": (DEPLOY, 200),
    "D4": (DEPLOY, 200),
    "D5": (DEPLOY, 200),
    "D6": (DEPLOY, 200),
    "D7": (DEPLOY, 200),
    "G1": (("list_cluster_groups",), 200),
    "G2": (("register_function",), 200),
    "A1": (INVOKE, 200),
    "A2": (INVOKE, 200),
    "A3": (INVOKE, 200),
    "A4": (INVOKE, 204),
    "A5": (INVOKE, 409),  # the asset was reserved but never uploaded
    "I1": (INVOKE, 404),  # an INACTIVE function is not invocable
    "I2": (INVOKE, 404),
    "I3": (INVOKE, 404),  # an unknown request id
    "Q1": (QUEUE, 200),
    "Q2": (QUEUE, 200),
    "Q3": (QUEUE, 404),  # an unknown request id
    "S1": (("update_secrets",), 400),  # the targets' functions were made without secrets
    "R1": (("update_function",), 204),
    "R2": (("update_function",), 204),
    "E1": (("manage_telemetries",), 200),
    "E2": (("manage_telemetries",), 200),
    "E3": (("manage_telemetries",), 200),
    "E4": (("manage_telemetries",), 204),  # the target telemetry is used by no version
    "E5": (("update_secrets",), 204),
    "C1": (REGISTRY, 200),
    "C2": (REGISTRY, 200),
    "C3": (REGISTRY, 200),
    "C4": (REGISTRY, 200),
    "C5": (REGISTRY, 204),
    "C6": (REGISTRY, 200),
    "X1": (("list_functions_details",), 200),
    "X2": (("list_functions_details",), 200),  # the console's traffic window
    "X3": (("list_functions_details",), 200),  # a function's last requests
    "L1": (("list_functions_details",), 200),  # nvcf-lite extension: container logs
    "L2": (("list_functions_details",), 200),
    "M1": (("list_functions", "list_functions_details"), 200),  # nvcf-lite: the model store
    "M2": (("list_functions", "list_functions_details"), 404),  # nothing pushed
    "M3": (("register_function",), 200),
    "M4": (("delete_function",), 404),
}


@dataclass
class Targets:
    """What the matrix calls address: two functions, a deployment, an asset, a registry
    credential and a telemetry."""

    fresh: dict[str, Any]  # registered, not deployed
    deployed: dict[str, Any]  # deployed on CPU (min 0: ACTIVE at once)
    deployment: dict[str, Any]
    asset_id: str
    credential_id: str
    telemetry_id: str

    @property
    def spec_id(self) -> str:
        return str(self.deployment["deploymentSpecifications"][0]["gpuSpecificationId"])


def deploy(client: TestClient[Any], fn: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    r = client.post(
        f"{PLAIN}/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
        json={"deploymentSpecifications": [spec]},
        headers=bearer(),
    )
    assert r.status_code == 200, r.text
    deployment: dict[str, Any] = r.json()["deployment"]
    return deployment


def make_targets(client: TestClient[Any]) -> Targets:
    fresh, deployed = create(client), create(client)
    deployment = deploy(client, deployed, CPU_SPEC)
    r = client.post(
        f"{PLAIN}/assets", json={"contentType": "text/plain", "description": "x"}, headers=bearer()
    )
    assert r.status_code == 200, r.text
    asset_id = r.json()["assetId"]
    r = client.post(
        f"{PLAIN}/registry-credentials", json=credential("lab.example"), headers=bearer()
    )
    assert r.status_code == 200, r.text
    credential_id = r.json()["registryCredential"]["registryCredentialId"]
    telemetry_id = create_telemetry(client)["telemetryId"]
    return Targets(fresh, deployed, deployment, asset_id, credential_id, telemetry_id)


def credential(host: str) -> dict[str, Any]:
    secret = {"name": "lab", "value": CREDS}
    return {"registryHostname": host, "secret": secret, "artifactTypes": ["CONTAINER"]}


def request(
    client: TestClient[Any],
    name: str,
    targets: Targets,
    key: str | None,
    *,
    fresh: dict[str, Any] | None = None,
    deployed: dict[str, Any] | None = None,
    request_id: str = UNKNOWN,
) -> Any:
    """Call endpoint `name`; `fresh` / `deployed` replace the targets' functions (other owners)."""
    headers = bearer(key) if key else {}
    new, live = fresh or targets.fresh, deployed or targets.deployed
    dep = f"{PLAIN}/deployments/functions/{live['id']}/versions/{live['versionId']}"
    update = {**CPU_SPEC, "gpuSpecificationId": targets.spec_id, "maxInstances": 2}
    cred = f"{PLAIN}/registry-credentials/{targets.credential_id}"
    method, path, payload = {
        "D1": (
            "POST",
            f"{PLAIN}/deployments/functions/{new['id']}/versions/{new['versionId']}",
            {"deploymentSpecifications": [CPU_SPEC]},
        ),
        "D2": ("GET", dep, None),
        "D3": ("PUT", dep, {"deploymentSpecifications": [update]}),
        "D4": ("DELETE", dep, None),
        "D5": ("GET", f"{PLAIN}/deployments/{targets.deployment['deploymentId']}", None),
        "D6": (
            "PATCH",
            f"{PLAIN}/deployments/{targets.deployment['deploymentId']}"
            f"/gpu-specifications/{targets.spec_id}",
            {"maxInstances": 3},
        ),
        "D7": ("GET", f"{PLAIN}/deployments", None),
        "G1": ("GET", f"{PLAIN}/clusterGroups", None),
        "G2": ("GET", f"{PLAIN}/supportedGpus", None),
        "A1": ("POST", f"{PLAIN}/assets", {"contentType": "text/plain", "description": "y"}),
        "A2": ("GET", f"{PLAIN}/assets", None),
        "A3": ("GET", f"{PLAIN}/assets/{targets.asset_id}", None),
        "A4": ("DELETE", f"{PLAIN}/assets/{targets.asset_id}", None),
        "A5": ("GET", f"{PLAIN}/assets/{targets.asset_id}/content-redirect", None),
        "I1": ("POST", f"{PLAIN}/pexec/functions/{new['id']}", {"x": 1}),
        "I2": (
            "POST",
            f"{PLAIN}/pexec/functions/{new['id']}/versions/{new['versionId']}",
            {"x": 1},
        ),
        "I3": ("GET", f"{PLAIN}/pexec/status/{request_id}", None),
        "Q1": ("GET", f"{PLAIN}/queues/functions/{new['id']}", None),
        "Q2": ("GET", f"{PLAIN}/queues/functions/{new['id']}/versions/{new['versionId']}", None),
        "Q3": ("GET", f"{PLAIN}/queues/{request_id}/position", None),
        "S1": (
            "PUT",
            f"{PLAIN}/secrets/functions/{new['id']}/versions/{new['versionId']}",
            {"secrets": [{"name": "A", "value": "b"}]},
        ),
        "R1": (
            "PUT",
            f"{PLAIN}/ratelimit/functions/{new['id']}/versions/{new['versionId']}",
            {"rateLimit": {"rateLimit": "5-S"}},
        ),
        "R2": (
            "DELETE",
            f"{PLAIN}/ratelimit/functions/{new['id']}/versions/{new['versionId']}",
            None,
        ),
        "E1": ("POST", f"{PLAIN}/telemetries", telemetry_body()),
        "E2": ("GET", f"{PLAIN}/telemetries", None),
        "E3": ("GET", f"{PLAIN}/telemetries/{targets.telemetry_id}", None),
        "E4": ("DELETE", f"{PLAIN}/telemetries/{targets.telemetry_id}", None),
        "E5": (
            "PUT",
            f"{PLAIN}/secrets/telemetries/{targets.telemetry_id}",
            {"secret": {"name": "otel", "value": "new"}},
        ),
        "C1": ("POST", f"{PLAIN}/registry-credentials", credential("other.example")),
        "C2": ("GET", f"{PLAIN}/registry-credentials", None),
        "C3": ("GET", cred, None),
        "C4": ("PATCH", cred, {"secret": {"name": "lab", "value": CREDS}}),
        "C5": ("DELETE", cred, None),
        "C6": ("GET", f"{PLAIN}/recognized-registries", None),
        "X1": ("GET", "/v2/nvcf-lite/status", None),
        "X2": ("GET", "/v2/nvcf-lite/traffic", None),
        "X3": ("GET", f"/v2/nvcf-lite/functions/{new['id']}/requests", None),
        "L1": ("GET", f"{PLAIN}/functions/{live['id']}/logs", None),
        "L2": ("GET", f"{PLAIN}/functions/{new['id']}/versions/{new['versionId']}/logs", None),
        "M1": ("GET", "/v2/nvcf-lite/models", None),
        "M2": ("GET", "/v2/nvcf-lite/models/m/versions/1", None),
        "M3": ("PUT", "/v2/nvcf-lite/resources/r/versions/1", tar_body({"f": b"x"})),
        "M4": ("DELETE", "/v2/nvcf-lite/models/m/versions/1", None),
    }[name]
    if isinstance(payload, bytes):
        return client.request(method, path, content=payload, headers=headers)
    return client.request(method, path, json=payload, headers=headers)


@pytest.fixture
def targets(client: TestClient[Any]) -> Targets:
    return make_targets(client)


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_no_key_and_unknown_key_are_401(
    client: TestClient[Any], targets: Targets, name: str
) -> None:
    problem(request(client, name, targets, None), 401)
    problem(request(client, name, targets, "nvapi-" + "Z" * 64), 401)
    problem(request(client, name, targets, "not-a-key"), 401)


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_every_other_scope_is_403(
    client: TestClient[Any], targets: Targets, make_key: Callable[..., str], name: str
) -> None:
    needed, _ = ENDPOINTS[name]
    key = make_key(*[s for s in SCOPES if s not in needed])
    doc = problem(request(client, name, targets, key), 403)
    assert "missing the required scope" in doc["detail"], doc
    assert doc["type"].endswith("forbidden")
    assert doc["instance"].startswith(PLAIN)


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_the_needed_scope_alone_opens_it(
    client: TestClient[Any], targets: Targets, make_key: Callable[..., str], name: str
) -> None:
    needed, expected = ENDPOINTS[name]
    r = request(client, name, targets, make_key(*needed))
    assert r.status_code not in (401, 403), r.text
    assert r.status_code == expected, r.text


def test_apikey_and_admin_prefixes_count_for_deployments(
    client: TestClient[Any], targets: Targets, make_key: Callable[..., str]
) -> None:
    for scope in ("apikey:deploy_function", "admin:deploy_function"):
        assert request(client, "D2", targets, make_key(scope)).status_code == 200


FUNCTION_SCOPED = (
    *("D1", "D2", "D3", "D4", "D5", "D6", "I1", "I2", "Q1", "Q2", "S1", "R1", "R2"),
    *("L1", "L2", "X3"),
)


@pytest.mark.parametrize("name", FUNCTION_SCOPED)
def test_a_key_for_another_function_is_403(
    client: TestClient[Any], targets: Targets, make_key: Callable[..., str], name: str
) -> None:
    mine = create(client)
    key = make_key(*SCOPES, functions=(mine["id"],))
    doc = problem(request(client, name, targets, key), 403)
    assert "Missing resource entry in ApiKey for the function" in doc["detail"], doc
    # the same key is fine on its own function
    assert client.get(f"{PLAIN}/queues/functions/{mine['id']}", headers=bearer(key)).is_success


def test_a_key_for_one_function_deploys_and_lists_only_it(
    client: TestClient[Any], targets: Targets, make_key: Callable[..., str]
) -> None:
    mine = create(client)
    key = make_key("deploy_function", functions=(mine["id"],))
    d = deploy_with(client, mine, key)
    path = f"{PLAIN}/deployments/functions/{mine['id']}/versions/{mine['versionId']}"
    assert client.get(path, headers=bearer(key)).status_code == 200
    assert client.get(f"{PLAIN}/deployments/{d['deploymentId']}", headers=bearer(key)).is_success
    listed = client.get(f"{PLAIN}/deployments", headers=bearer(key)).json()["deployments"]
    assert [x["deploymentId"] for x in listed] == [d["deploymentId"]]
    everything = client.get(f"{PLAIN}/deployments", headers=bearer()).json()["deployments"]
    assert {x["deploymentId"] for x in everything} == {
        d["deploymentId"],
        targets.deployment["deploymentId"],
    }
    # a key limited to one version of the function
    other_version = f"{mine['id']}/{UNKNOWN}"
    narrow = make_key("deploy_function", functions=(other_version,))
    problem(client.get(path, headers=bearer(narrow)), 403)
    assert client.get(f"{PLAIN}/deployments", headers=bearer(narrow)).json()["deployments"] == []
    assert client.delete(path, headers=bearer(key)).status_code == 200


def test_a_key_for_one_function_sees_only_it_in_the_status(
    client: TestClient[Any], targets: Targets, make_key: Callable[..., str]
) -> None:
    mine = create(client)
    key = make_key("list_functions_details", functions=(mine["id"],))
    r = client.get("/v2/nvcf-lite/status", headers=bearer(key))
    assert r.status_code == 200, r.text
    (fn,) = r.json()["functions"]
    assert fn["functionId"] == mine["id"]
    assert [v["versionId"] for v in fn["versions"]] == [mine["versionId"]]
    everything = client.get("/v2/nvcf-lite/status", headers=bearer()).json()["functions"]
    ids = {f["functionId"] for f in everything}
    assert ids == {mine["id"], targets.fresh["id"], targets.deployed["id"]}
    (deployed,) = [f for f in everything if f["functionId"] == targets.deployed["id"]]
    (version,) = deployed["versions"]
    assert version["status"] == "ACTIVE" and version["queueDepth"] == 0
    assert version["deploymentId"] == targets.deployment["deploymentId"]
    assert version["instances"] == [] and version["scaling"][0]["target"] == 0


def deploy_with(client: TestClient[Any], fn: dict[str, Any], key: str) -> dict[str, Any]:
    r = client.post(
        f"{PLAIN}/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
        json={"deploymentSpecifications": [CPU_SPEC]},
        headers=bearer(key),
    )
    assert r.status_code == 200, r.text
    deployment: dict[str, Any] = r.json()["deployment"]
    return deployment


class StuckRuntime(UnavailableRuntime):
    """Containers never finish starting, so an invocation stays queued (and pollable)."""

    def __init__(self) -> None:
        super().__init__("stuck")

    async def ping(self) -> str | None:
        return None

    async def image_exists(self, image: str) -> bool:
        return True

    async def ensure_image(self, image: str, auth: RegistryAuth | None = None) -> bool:
        return False

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_requests_of_another_function_are_403_on_status_and_position(
    app_factory: Callable[..., TestClient[Any]],
) -> None:
    client = app_factory(runtime_factory=lambda config: StuckRuntime())
    targets = make_targets(client)
    fid = targets.deployed["id"]
    r = client.post(
        f"{PLAIN}/pexec/functions/{fid}",
        json={"x": 1},
        headers={**bearer(), "NVCF-POLL-SECONDS": "1"},
    )
    assert r.status_code == 202, r.text
    rid = r.headers["nvcf-reqid"]
    keys = client.app.state.platform.keys
    mine = create(client)
    with client.portal() as portal:
        limited, _ = portal.call(keys.create, list(SCOPES), (mine["id"],))
        invoker, _ = portal.call(keys.create, ["invoke_function"], ())
        queue_reader, _ = portal.call(keys.create, ["queue_details"], ())
    for name in ("I3", "Q3"):
        doc = problem(request(client, name, targets, limited, request_id=rid), 403)
        assert "Missing resource entry in ApiKey for the function" in doc["detail"]
    r = request(client, "Q3", targets, queue_reader, request_id=rid)
    assert r.status_code == 200, r.text
    assert r.json()["functionId"] == fid
    problem(request(client, "Q3", targets, invoker, request_id=rid), 403)
    problem(request(client, "I3", targets, queue_reader, request_id=rid), 403)
    r = client.get(
        f"{PLAIN}/pexec/status/{rid}", headers={**bearer(invoker), "NVCF-POLL-SECONDS": "1"}
    )
    assert r.status_code == 202, r.text
