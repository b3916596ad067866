"""Deployment rules D1-D7 (spec §2.2) through the HTTP API, without Docker.

Without a container engine a deployment is still accepted and stored (its instances fail
later); these tests look at validation, the answers the NGC SDK relies on, and status rules.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import bearer
from function_support import PLAIN, UNKNOWN_ID, create, problem, version_path
from litestar.testing import TestClient

CPU = {"gpu": "CPU", "instanceType": "CPU.x1", "minInstances": 0, "maxInstances": 1}


def dep_path(fn: dict[str, Any]) -> str:
    return f"{PLAIN}/deployments/functions/{fn['id']}/versions/{fn['versionId']}"


def post(client: TestClient[Any], fn: dict[str, Any], *specs: dict[str, Any]) -> Any:
    return client.post(
        dep_path(fn), json={"deploymentSpecifications": list(specs)}, headers=bearer()
    )


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        ({**CPU, "minInstances": 2}, "minInstances (2) must be <= maxInstances (1)"),
        ({**CPU, "minInstances": -1}, "minInstances must be >= 0"),
        ({**CPU, "maxInstances": 0, "minInstances": 0}, "maxInstances must be > 0"),
        ({"gpu": "CPU"}, "minInstances and maxInstances are required"),
        ({**CPU, "maxRequestConcurrency": 0}, "maxRequestConcurrency must be between 1 and"),
        ({**CPU, "maxRequestConcurrency": 16385}, "maxRequestConcurrency must be between 1 and"),
        ({**CPU, "configuration": {"a": 1}}, "should be empty for container based functions"),
        ({**CPU, "gpu": None}, "gpu is required; this host offers: CPU (CPU.x1)"),
        ({**CPU, "gpu": "H100"}, "GPU 'H100' is not available on this host"),
        ({**CPU, "instanceType": "CPU.x2"}, "instance type 'CPU.x2' is not available"),
    ],
)
def test_invalid_specs_are_400(client: TestClient[Any], spec: dict[str, Any], detail: str) -> None:
    fn = create(client)
    doc = problem(post(client, fn, {k: v for k, v in spec.items() if v is not None}), 400)
    assert detail in doc["detail"], doc
    problem(client.get(dep_path(fn), headers=bearer()), 404)  # nothing was stored


def test_an_empty_or_missing_spec_list_is_400(client: TestClient[Any]) -> None:
    fn = create(client)
    problem(post(client, fn), 400)
    problem(client.post(dep_path(fn), json={}, headers=bearer()), 400)


def test_what_the_ngc_sdk_relies_on(client: TestClient[Any]) -> None:
    fn = create(client)
    # GET before any deployment: 404 (the SDK's pre-flight)
    problem(client.get(dep_path(fn), headers=bearer()), 404)
    # unknown fields (ngcsdk's preferredOrder) are ignored; instanceType may be left out
    r = post(client, fn, {"gpu": "cpu", "minInstances": 0, "maxInstances": 2, "preferredOrder": 1})
    assert r.status_code == 200, r.text
    d = r.json()["deployment"]
    (spec,) = d["deploymentSpecifications"]
    assert spec["gpu"] == "CPU" and spec["instanceType"] == "CPU.x1"  # the default type
    assert spec["maxRequestConcurrency"] == 1 and spec["gpuSpecificationId"]
    assert d["functionStatus"] == "ACTIVE"  # every minInstances is 0
    assert d["instances"] == [] and d["functionName"] == fn["name"]
    # a second deploy is 400 (not 409), pointing at PUT
    doc = problem(post(client, fn, CPU), 400)
    assert "Status ACTIVE, use PUT to update current deployment" in doc["detail"]
    # D5 and D7 show the same deployment
    assert client.get(f"{PLAIN}/deployments/{d['deploymentId']}", headers=bearer()).json() == {
        "deployment": client.get(dep_path(fn), headers=bearer()).json()["deployment"]
    }
    listed = client.get("/v2/orgs/local/nvcf/deployments", headers=bearer()).json()
    assert [x["deploymentId"] for x in listed["deployments"]] == [d["deploymentId"]]
    # D4 answers JSON: the function, INACTIVE; the deployment is gone
    r = client.delete(dep_path(fn) + "?graceful=true", headers=bearer())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["function"]["status"] == "INACTIVE"
    assert client.get(version_path(fn), headers=bearer()).json()["function"]["status"] == (
        "INACTIVE"
    )
    problem(client.delete(dep_path(fn), headers=bearer()), 404)


def test_unknown_ids_are_404(client: TestClient[Any]) -> None:
    problem(client.get(f"{PLAIN}/deployments/{UNKNOWN_ID}", headers=bearer()), 404)
    fn = create(client)
    ghost = {**fn, "versionId": UNKNOWN_ID}
    problem(post(client, ghost, CPU), 404)
    r = client.patch(
        f"{PLAIN}/deployments/{UNKNOWN_ID}/gpu-specifications/{UNKNOWN_ID}",
        json={"maxInstances": 2},
        headers=bearer(),
    )
    problem(r, 404)
    # path ids are UUIDs: anything else is a 400, as on the function routes
    problem(client.get(f"{PLAIN}/deployments/not-a-uuid", headers=bearer()), 400)
    problem(client.get(f"{PLAIN}/deployments/functions/x/versions/y", headers=bearer()), 400)
    problem(client.get(f"{PLAIN}/deployments/functions/x/versions/y"), 401)


def test_update_rules(client: TestClient[Any]) -> None:
    fn = create(client)
    d = post(client, fn, CPU).json()["deployment"]
    spec_id = d["deploymentSpecifications"][0]["gpuSpecificationId"]

    def put(*specs: dict[str, Any]) -> Any:
        return client.put(
            dep_path(fn), json={"deploymentSpecifications": list(specs)}, headers=bearer()
        )

    assert "must list the 1 current" in problem(put(CPU, CPU), 400)["detail"]
    assert "gpu cannot be changed" in problem(put({**CPU, "gpu": "L40"}), 400)["detail"]
    doc = problem(put({**CPU, "gpuSpecificationId": UNKNOWN_ID}), 400)
    assert "unknown gpuSpecificationId" in doc["detail"]
    r = put({"gpuSpecificationId": spec_id, "minInstances": 0, "maxInstances": 4})
    assert r.status_code == 200, r.text
    (spec,) = r.json()["deployment"]["deploymentSpecifications"]
    assert (spec["gpuSpecificationId"], spec["maxInstances"], spec["gpu"]) == (spec_id, 4, "CPU")

    r = client.patch(
        f"{PLAIN}/deployments/{d['deploymentId']}/gpu-specifications/{spec_id}",
        json={"maxInstances": 5, "maxRequestConcurrency": 3},
        headers=bearer(),
    )
    assert r.status_code == 200, r.text
    patched = r.json()["gpuSpecification"]
    assert (patched["minInstances"], patched["maxInstances"]) == (0, 5)
    assert patched["maxRequestConcurrency"] == 3


def test_raising_min_keeps_an_active_version_invocable(client: TestClient[Any]) -> None:
    """Requests queue for the instances a raised minimum starts; the scheduler reports a
    failure to start them as DEGRADED (tested with the fake runtime)."""
    fn = create(client)
    d = post(client, fn, CPU).json()["deployment"]
    assert d["functionStatus"] == "ACTIVE"
    spec_id = d["deploymentSpecifications"][0]["gpuSpecificationId"]
    r = client.put(
        dep_path(fn),
        json={
            "deploymentSpecifications": [
                {"gpuSpecificationId": spec_id, "minInstances": 1, "maxInstances": 1}
            ]
        },
        headers=bearer(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["deployment"]["functionStatus"] == "ACTIVE"


def test_an_error_status_is_never_read_without_its_health_info() -> None:
    """The scheduler commits healthInfo, then the ERROR it explains; a reader that took the
    deployment row first and the status second could show ERROR with no reason (a CI flake
    in the stalled-pull test). `with_status` reads the status first, the row after."""
    import asyncio
    from typing import cast

    import msgspec

    from nvcf_lite.domain.deployments import Deployments, VersionRef
    from nvcf_lite.models import Deployment, FunctionStatus, HealthInfo

    stale = Deployment(
        deployment_id="d",
        function_id="f",
        version_id="v",
        nca_id="n",
        specs=[],
        created_at="t0",
        updated_at="t0",
    )
    reason = HealthInfo(
        icms_request_id="s",
        gpu="CPU",
        backend="local",
        instance_type="CPU.x1",
        error="pulling image 'x' stalled",
    )
    row = {"d": stale}

    async def lookup(fid: str, vid: str) -> VersionRef:
        # the scheduler's two commits land while the handler is reading
        row["d"] = msgspec.structs.replace(stale, health_info=[reason])
        return VersionRef(
            function_id=fid, version_id=vid, nca_id="n", name="fn", status=FunctionStatus.ERROR
        )

    class Repo:
        async def by_id(self, deployment_id: str) -> Deployment | None:
            return row.get(deployment_id)

    deployments = Deployments(
        cast(Any, None),
        cast(Any, Repo()),
        cast(Any, None),
        lookup,
        "n",
        reconcile=lambda: None,
        instances=lambda v: [],
        spec_states=lambda v: [],
        busy=lambda v: False,
    )
    ref, fresh = asyncio.run(deployments.with_status(stale))
    assert ref.status == FunctionStatus.ERROR
    assert [h.error for h in fresh.health_info] == ["pulling image 'x' stalled"]
