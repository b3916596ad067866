"""The real ngcsdk 4.37.0 against a real `nvcf-lite serve` over HTTPS (spec §2.11, §7.1, §9).

Each SDK call runs in its own venv (see `sdk_support`), pointed at the server the way NVCF users
point it at a host: `NGC_CLI_API_URL=https://127.0.0.1:<port>` and `REQUESTS_CA_BUNDLE` for the
self-signed certificate. The scripts return JSON and every HTTP request the SDK made.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from docker_support import (
    ECHO_IMAGE,
    docker_client_or_skip,
    ensure_test_images,
    namespace_containers,
    remove_namespace,
)
from sdk_support import (
    SDK_VERSION,
    Sdk,
    SdkRun,
    WireCall,
    ensure_sdk_venv,
    live_server,
    make_cert,
    mint_key,
    new_key,
    run_sdk,
    sdk_runner,
)
from server_support import ServerProcess

pytestmark = pytest.mark.sdk

ORG = "sdk-org"
UNAUTH_WARNING = "couldn't get access to resource"


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return ensure_sdk_venv()


@pytest.fixture(scope="module")
def server(sdk_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("ngcsdk")
    cert, key = make_cert(tmp / "tls", fallback_python=sdk_python)
    with live_server(tmp / "server", cert, key, api_key=new_key(), org=ORG) as live:
        yield live


@pytest.fixture
def sdk(sdk_python: Path, server: ServerProcess, tmp_path: Path) -> Sdk:
    """Run an SDK script (defining `main(args)`) against the server; keyword args reach it."""
    return sdk_runner(sdk_python, server, tmp_path / "ngc-home")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


CREATE = """
def main(args):
    c = client()
    kwargs = dict(
        name=args["name"], inference_url="/echo", container_image=args["image"],
        inference_port=8000, health_uri="/health",
    )
    kwargs.update(args.get("extra", {}))
    return c.cloud_function.functions.create(**kwargs)
"""


def create_function(sdk: Sdk, name: str, image: str = ECHO_IMAGE, **extra: Any) -> SdkRun:
    return sdk(CREATE, name=name, image=image, extra=extra)


def caller_info_calls(run: SdkRun) -> list[WireCall]:
    return run.calls("POST", "/v3/keys/get-caller-info")


# --- configure: the key check -------------------------------------------------------------------


def test_configure_checks_the_key_with_get_caller_info(sdk: Sdk, server: ServerProcess) -> None:
    run = sdk(
        """
def main(args):
    c = client()
    return {"org": c.config.org_name, "team": c.config.team_name}
"""
    )
    assert run.expect_ok() == {"org": ORG, "team": None}
    calls = caller_info_calls(run)
    assert calls and len(calls) == len(run.wire), run.describe()
    for call in calls:
        assert call.status == 200
        assert call.header("content-type") == "application/x-www-form-urlencoded"
        assert call.header("authorization") is None
        assert parse_qs(call.body or "") == {"credentials": [server.key]}


def test_configure_without_org_takes_the_org_of_the_key(sdk: Sdk) -> None:
    run = sdk(
        """
import ngcsdk
def main(args):
    c = ngcsdk.Client()
    c.configure(api_key=args["api_key"])
    return c.config.org_name
"""
    )
    assert run.expect_ok() == ORG


def test_configure_with_another_org_fails_in_the_sdk(sdk: Sdk) -> None:
    run = sdk("def main(args):\n    client(org='some-other-org')\n")
    message = run.expect_error("NgcException")
    assert "Provided organization: 'some-other-org'" in message
    assert f"API Key has permissions:'{ORG}'" in message


def test_configure_with_an_unknown_key_fails_as_invalid_sak_key(sdk: Sdk) -> None:
    run = sdk("def main(args):\n    client(api_key=args['key'])\n", key=new_key())
    message = run.expect_error("AuthenticationException")
    assert "Invalid SAK key: 401" in message
    assert [c.status for c in run.wire] == [401]


def test_configure_with_a_minted_key_works(sdk: Sdk, server: ServerProcess) -> None:
    key = mint_key(server, "list_functions")
    run = sdk("def main(args):\n    return client(api_key=args['key']).config.org_name\n", key=key)
    assert run.expect_ok() == ORG


# --- spec §7.1 recipe 2: plain HTTP with a bearer token ---------------------------------------


@pytest.fixture
def plain_server(sdk_python: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with live_server(tmp_path / "plain", None, None, api_key=new_key(), org=ORG) as live:
        yield live


def fetch_token(server: ServerProcess, key: str) -> str:
    import base64
    import urllib.request

    request = urllib.request.Request(f"{server.url}/token?service=ngc&scope=group/ngc:{ORG}")
    basic = base64.b64encode(f"$oauthtoken:{key}".encode()).decode()
    request.add_header("Authorization", f"Basic {basic}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return str(json.loads(response.read())["token"])


RECIPE_2 = """
import os

def main(args):
    os.environ["NGC_CLI_API_KEY"] = args["token"]  # JWT-shaped: sent as is, no get-caller-info
    os.environ["NGC_CLI_ORG"] = args["org"]
    import ngcsdk
    c = ngcsdk.Client()
    c.connection.base_url = args["url"]  # not rewritten to https (config.base_url would be)
    fns = c.cloud_function.functions
    made = fns.create(name=args["name"], inference_url="/echo", container_image=args["image"],
                      inference_port=8000, health_uri="/health")
    listed = fns.list()
    return {"made": made, "listed": listed}
"""


def test_plain_http_with_a_token_as_the_key(sdk_python: Path, plain_server: ServerProcess,
                                            tmp_path: Path) -> None:  # fmt: skip
    assert plain_server.url.startswith("http://")
    token = fetch_token(plain_server, plain_server.key)
    name = unique("sdk-jwt")
    run = run_sdk(
        sdk_python, plain_server, RECIPE_2, tmp_path / "home",
        token=token, url=plain_server.url, name=name, image=ECHO_IMAGE,
    )  # fmt: skip
    out = run.expect_ok()
    fid = out["made"]["function"]["id"]
    assert fid in json.dumps(out["listed"]), run.describe()
    assert not caller_info_calls(run), run.describe()
    nvcf = run.calls(prefix=f"/v2/orgs/{ORG}/nvcf/functions")
    assert {c.method for c in nvcf} >= {"GET", "POST"}, run.describe()
    assert all(c.header("Authorization") == f"Bearer {token}" for c in nvcf)
    assert all(c.status == 200 for c in nvcf), run.describe()


# --- function management ----------------------------------------------------------------------


def test_function_lifecycle(sdk: Sdk, server: ServerProcess) -> None:
    name = unique("sdk-echo")
    created = create_function(
        sdk, name, tags=["team:sdk", "stage-1"], description="echo via ngcsdk"
    )
    fn = created.expect_ok()["function"]
    fid, vid1 = fn["id"], fn["versionId"]
    assert fn["name"] == name
    assert fn["status"] == "INACTIVE"
    assert fn["inferenceUrl"] == "/echo"
    assert fn["inferencePort"] == 8000
    assert fn["healthUri"] == "/health"
    assert fn["health"]["uri"] == "/health"
    assert fn["containerImage"] == f"nvcr.io/{ECHO_IMAGE}"  # the SDK prefixes nvcr.io/
    assert fn["description"] == "echo via ngcsdk"
    assert sorted(fn["tags"]) == ["stage-1", "team:sdk"]
    [post] = created.calls("POST", f"/v2/orgs/{ORG}/nvcf/functions")
    assert post.status == 200
    assert post.header("authorization") == f"Bearer {server.key}"
    assert post.header("nv-ngc-org") == ORG
    assert post.header("content-type") == "application/json"
    assert (post.header("user-agent") or "").startswith(f"ngcsdk/{SDK_VERSION}")
    assert json.loads(post.body or "{}") == {
        "name": name,
        "inferenceUrl": "/echo",
        "inferencePort": 8000,
        "functionType": "DEFAULT",
        "containerImage": f"nvcr.io/{ECHO_IMAGE}",
        "healthUri": "/health",
        "tags": ["team:sdk", "stage-1"],
        "description": "echo via ngcsdk",
    }

    second = create_function(sdk, name, function_id=fid, inference_port=9000)
    fn2 = second.expect_ok()["function"]
    assert fn2["id"] == fid and fn2["versionId"] != vid1
    assert fn2["inferencePort"] == 9000
    vid2 = fn2["versionId"]
    assert second.calls("POST", f"/v2/orgs/{ORG}/nvcf/functions/{fid}/versions")

    other = create_function(sdk, unique("sdk-other"))
    other_fid = other.expect_ok()["function"]["id"]

    listed = sdk(
        """
def main(args):
    fns = client().cloud_function.functions
    def pairs(r):
        return sorted([f["id"], f["versionId"]] for f in r["functions"])
    return {
        "all": pairs(fns.list()),
        "by_name": pairs(fns.list(name_pattern=args["name"])),
        "by_glob": pairs(fns.list(name_pattern="sdk-echo-*")),
        "none": pairs(fns.list(name_pattern="no-such-*")),
        "versions": pairs(fns.list(function_id=args["fid"])),
        "private": pairs(fns.list(access_filter=["private"])),
    }
""",
        name=name,
        fid=fid,
    ).expect_ok()
    mine = sorted([[fid, vid1], [fid, vid2]])
    assert all(pair in listed["all"] for pair in mine)
    assert any(pair[0] == other_fid for pair in listed["all"])
    assert listed["by_name"] == mine
    assert all(pair in listed["by_glob"] for pair in mine)
    assert all(pair[0] != other_fid for pair in listed["by_glob"])
    assert listed["none"] == []
    assert listed["versions"] == mine
    assert all(pair in listed["private"] for pair in mine)

    info = sdk(
        "def main(args):\n"
        "    return client().cloud_function.functions.info(args['fid'], args['vid'])\n",
        fid=fid,
        vid=vid1,
    )
    got = info.expect_ok()["function"]
    assert (got["id"], got["versionId"], got["name"]) == (fid, vid1, name)
    assert got["inferencePort"] == 8000
    assert info.calls("GET", f"/v2/orgs/{ORG}/nvcf/functions/{fid}/versions/{vid1}")

    updated = sdk(
        """
def main(args):
    fns = client().cloud_function.functions
    fns.update(args["fid"], args["vid"], rate_limit_pattern="100-S, 1000-D")
    return fns.info(args["fid"], args["vid"])["function"]
""",
        fid=fid,
        vid=vid1,
    )
    assert updated.expect_ok()["rateLimit"]["rateLimit"] == "100-S, 1000-D"
    [put] = updated.calls("PUT")
    assert put.path == f"/v2/orgs/{ORG}/nvcf/functions/{fid}/versions/{vid1}"
    assert json.loads(put.body or "{}") == {"rateLimit": {"rateLimit": "100-S, 1000-D"}}

    removed = sdk(
        """
def main(args):
    fns = client().cloud_function.functions
    for vid in args["vids"]:
        fns.delete(args["fid"], vid)
    return sorted(f["versionId"] for f in fns.list(name_pattern=args["name"])["functions"])
""",
        fid=fid,
        vids=[vid1, vid2],
        name=name,
    )
    assert removed.expect_ok() == []
    assert [c.status for c in removed.calls("DELETE")] in ([200, 200], [204, 204])

    gone = sdk(
        "def main(args):\n    client().cloud_function.functions.info(args['fid'], args['vid'])\n",
        fid=fid,
        vid=vid1,
    )
    gone.expect_error("ResourceNotFoundException")


def test_clearing_a_rate_limit(sdk: Sdk) -> None:
    fn = create_function(sdk, unique("sdk-rl"), rate_limit_pattern="5-S").expect_ok()["function"]
    assert fn["rateLimit"]["rateLimit"] == "5-S"
    run = sdk(
        """
def main(args):
    fns = client().cloud_function.functions
    fns.update(args["fid"], args["vid"], clear_rate_limit=True)
    return fns.info(args["fid"], args["vid"])["function"]
""",
        fid=fn["id"],
        vid=fn["versionId"],
    )
    assert "rateLimit" not in run.expect_ok()
    [put] = run.calls("PUT")
    assert json.loads(put.body or "{}") == {"rateLimit": None}


def test_secrets_and_deprecated_rate_limit_calls(sdk: Sdk, server: ServerProcess) -> None:
    made = create_function(sdk, unique("sdk-sec"), secrets=["TOKEN:one"]).expect_ok()
    fid, vid = made["function"]["id"], made["function"]["versionId"]
    run = sdk(
        """
def main(args):
    fns = client().cloud_function.functions
    fns.update_secrets(args["fid"], args["vid"], secrets=["TOKEN:two", "OTHER:x"])
    fns.update_rate_limit(args["fid"], args["vid"], rate_limit_pattern="7-S")
    limited = fns.info(args["fid"], args["vid"])["function"]
    fns.remove_rate_limit(args["fid"], args["vid"])
    return {"limited": limited, "cleared": fns.info(args["fid"], args["vid"])["function"]}
""",
        fid=fid,
        vid=vid,
    )
    out = run.expect_ok()
    assert out["limited"]["secrets"] == ["TOKEN", "OTHER"]
    assert out["limited"]["rateLimit"]["rateLimit"] == "7-S"
    assert "rateLimit" not in out["cleared"]
    [put_secrets] = run.calls("PUT", f"/v2/orgs/{ORG}/nvcf/secrets/functions/{fid}")
    assert put_secrets.status == 204
    assert json.loads(put_secrets.body or "{}") == {
        "secrets": [{"name": "TOKEN", "value": "two"}, {"name": "OTHER", "value": "x"}]
    }
    ratelimit = run.calls(prefix=f"/v2/orgs/{ORG}/nvcf/ratelimit/functions/{fid}")
    assert [(c.method, c.status) for c in ratelimit] == [("PUT", 204), ("DELETE", 204)]


def test_telemetry_endpoints_and_a_function_that_names_them(sdk: Sdk) -> None:
    """ngcsdk 4.37 telemetry_endpoints create/list/delete (spec §2.8, E1, E2, E4) on the NGC
    path form, and functions.create with logs/metrics telemetry ids (spec §2.1.1)."""
    name = unique("sdk-otel")
    run = sdk(
        """
def main(args):
    cf = client().cloud_function
    made = cf.telemetry_endpoints.create(
        name=args["name"], endpoint="https://otel.example.com:4318", protocol="HTTP",
        provider="OTEL_COLLECTOR", types=["LOGS", "METRICS"], key="sdk-otel-token",
    )
    tid = made["telemetry"]["telemetryId"]
    fn = cf.functions.create(
        name=args["name"], inference_url="/echo", container_image=args["image"],
        inference_port=8000, health_uri="/health",
        logs_telemetry_id=tid, metrics_telemetry_id=tid,
    )["function"]
    listed = cf.telemetry_endpoints.list()
    cf.functions.delete(fn["id"], fn["versionId"])
    cf.telemetry_endpoints.delete(tid)
    return {"made": made, "fn": fn, "listed": listed, "after": cf.telemetry_endpoints.list()}
""",
        name=name,
        image=ECHO_IMAGE,
    )
    out = run.expect_ok()
    telemetry = out["made"]["telemetry"]
    assert telemetry["name"] == name and telemetry["types"] == ["LOGS", "METRICS"]
    assert "secret" not in telemetry and "sdk-otel-token" not in json.dumps(out)
    tid = telemetry["telemetryId"]
    assert out["fn"]["telemetries"] == {"logsTelemetryId": tid, "metricsTelemetryId": tid}
    assert telemetry in out["listed"]["telemetries"]
    assert tid not in json.dumps(out["after"])
    [post] = run.calls("POST", f"/v2/orgs/{ORG}/nvcf/telemetries")
    sent = json.loads(post.body or "{}")
    assert sent["secret"] == {"name": name, "value": "sdk-otel-token"} and post.status == 200
    [delete] = run.calls("DELETE", f"/v2/orgs/{ORG}/nvcf/telemetries/{tid}")
    assert delete.status == 204


def test_unknown_function_is_resource_not_found(sdk: Sdk) -> None:
    run = sdk(
        "def main(args):\n    client().cloud_function.functions.info(args['fid'], args['vid'])\n",
        fid=str(uuid.uuid4()),
        vid=str(uuid.uuid4()),
    )
    run.expect_error("ResourceNotFoundException")


def test_a_key_without_register_function_cannot_create(sdk: Sdk, server: ServerProcess) -> None:
    key = mint_key(server, "list_functions")
    run = sdk(
        """
def main(args):
    fns = client(api_key=args["key"]).cloud_function.functions
    fns.list()
    fns.create(name="nope", inference_url="/echo", container_image="nvcf-lite-test/echo:1")
""",
        key=key,
    )
    run.expect_error("AccessDeniedException")
    [post] = run.calls("POST", f"/v2/orgs/{ORG}/nvcf/functions")
    assert post.status == 403


# --- the registry look-up before create --------------------------------------------------------


def test_absent_image_makes_the_sdk_warn_and_go_on(sdk: Sdk, server: ServerProcess) -> None:
    image = f"nvcf-lite-test/{unique('absent')}:1"
    run = create_function(sdk, unique("sdk-absent"), image=image)
    fn = run.expect_ok()["function"]
    assert fn["containerImage"] == f"nvcr.io/{image}"
    org, rest = image.split("/", 1)
    repo, tag = rest.split(":")
    [lookup] = run.calls("GET", "/v2/org/")
    assert lookup.path == f"/v2/org/{org}/repos/{repo}/images/{tag}"
    assert lookup.status == 403
    assert lookup.header("authorization") == f"Bearer {server.key}"
    assert f"{UNAUTH_WARNING} {image}. Proceeding." in run.stderr


@pytest.mark.docker
def test_local_image_is_found_by_the_registry_look_up(sdk: Sdk) -> None:
    docker_client_or_skip()
    ensure_test_images()
    run = create_function(sdk, unique("sdk-local"))
    run.expect_ok()
    lookups = [(c.path, c.status) for c in run.calls("GET", "/v2/org/")]
    assert lookups == [
        ("/v2/org/nvcf-lite-test/repos/echo/images/1", 200),
        ("/v2/org/nvcf-lite-test/repos/echo/tags/1", 200),
    ], run.describe()
    assert UNAUTH_WARNING not in run.stderr


def test_image_in_a_team_is_looked_up_under_the_team(sdk: Sdk) -> None:
    run = create_function(sdk, unique("sdk-team"), image=f"{ORG}/myteam/absent:2")
    assert run.expect_ok()["function"]["containerImage"] == f"nvcr.io/{ORG}/myteam/absent:2"
    assert [c.path for c in run.calls("GET", "/v2/org/")] == [
        f"/v2/org/{ORG}/team/myteam/repos/absent/images/2"
    ]


# --- deployments (spec §2.2, §9 item 6) -------------------------------------------------------


@pytest.fixture(scope="module")
def tls(sdk_python: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("ngcsdk-tls"), fallback_python=sdk_python)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A Docker namespace of its own; its containers are removed afterwards."""
    dock = docker_client_or_skip()
    ensure_test_images()
    ns = unique("sdk")
    yield ns
    remove_namespace(dock, ns)


@pytest.fixture
def docker_server(
    tls: tuple[Path, Path], namespace: str, tmp_path: Path
) -> Iterator[ServerProcess]:
    """A server of this test's own, starting containers in its own Docker namespace."""
    env = {
        "NVCF_LITE_DOCKER__NAMESPACE": namespace,
        "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "false",
        "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "2",
        "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.3",
        "NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S": "0.5",
        "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "30",
    }
    cert, key = tls
    with live_server(
        tmp_path / "server", cert, key, api_key=new_key(), org=ORG, extra_env=env
    ) as live:
        yield live


@pytest.fixture
def dsdk(sdk_python: Path, docker_server: ServerProcess, tmp_path: Path) -> Sdk:
    return sdk_runner(sdk_python, docker_server, tmp_path / "ngc-home")


def ns_containers(namespace: str) -> list[Any]:
    return namespace_containers(docker_client_or_skip(), namespace)


# Scripts share these helpers: `spec(...)` builds the SDK's own spec object, `wait_status`
# polls `deployments.info` (GET deployment) until functionStatus is reached.
DEPLOY_HELPERS = """
import time
from nvcf.api.deployment_spec import TargetedDeploymentSpecification

def spec(min_instances, max_instances, concurrency=None):
    return TargetedDeploymentSpecification(
        gpu="CPU", instance_type="CPU.x1", min_instances=min_instances,
        max_instances=max_instances, max_request_concurrency=concurrency,
    )

def wait_status(deps, fid, vid, want, count=None, timeout=60):
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        d = deps.info(fid, vid)["deployment"]
        ready = [i for i in d.get("instances", []) if i["state"] == "ready"]
        if not seen or seen[-1] != d["functionStatus"]:
            seen.append(d["functionStatus"])
        if d["functionStatus"] == want and (count is None or len(ready) == count):
            return {"deployment": d, "seen": seen}
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {want} after {timeout} s: {d}")
        time.sleep(0.2)
"""


def sdk_deploy(sdk: Sdk, fid: str, vid: str, low: int, high: int, concurrency: int) -> SdkRun:
    return sdk(
        DEPLOY_HELPERS
        + """
def main(args):
    deps = client().cloud_function.functions.deployments
    created = deps.create(
        args["fid"], args["vid"],
        targeted_deployment_specifications=[spec(args["low"], args["high"], args["conc"])],
    )
    done = wait_status(deps, args["fid"], args["vid"], "ACTIVE", args["low"])
    return {"created": created, **done}
""",
        fid=fid,
        vid=vid,
        low=low,
        high=high,
        conc=concurrency,
        timeout_s=120,
    )


@pytest.mark.docker
def test_deployment_lifecycle(dsdk: Sdk, docker_server: ServerProcess, namespace: str) -> None:
    fn = create_function(dsdk, unique("sdk-deploy")).expect_ok()["function"]
    fid, vid = fn["id"], fn["versionId"]
    assert fn["containerImage"] == f"nvcr.io/{ECHO_IMAGE}"
    base = f"/v2/orgs/{ORG}/nvcf"
    dep_path = f"{base}/deployments/functions/{fid}/versions/{vid}"

    # create: GET function version, GET deployment (404), POST with preferredOrder
    run = sdk_deploy(dsdk, fid, vid, 1, 2, 2)
    out = run.expect_ok()
    api = [c for c in run.wire if not c.path.startswith("/v3/")]
    assert [(c.method, c.path, c.status) for c in api[:3]] == [
        ("GET", f"{base}/functions/{fid}/versions/{vid}", 200),
        ("GET", dep_path, 404),
        ("POST", dep_path, 200),
    ], run.describe()
    assert api[1].header("content-type") == "application/json"
    assert json.loads(api[2].body or "{}") == {
        "deploymentSpecifications": [
            {
                "gpu": "CPU",
                "minInstances": 1,
                "maxInstances": 2,
                "instanceType": "CPU.x1",
                "maxRequestConcurrency": 2,
                "preferredOrder": 1,
            }
        ]
    }
    created = out["created"]["deployment"]
    assert created["functionStatus"] == "DEPLOYING"
    assert (created["functionId"], created["functionVersionId"]) == (fid, vid)
    (spec,) = created["deploymentSpecifications"]
    assert spec["gpu"] == "CPU" and spec["instanceType"] == "CPU.x1"
    assert (spec["minInstances"], spec["maxInstances"], spec["maxRequestConcurrency"]) == (1, 2, 2)
    spec_id = spec["gpuSpecificationId"]

    # info: GET deployment until ACTIVE, with the instance ready
    active = out["deployment"]
    assert out["seen"][-1] == "ACTIVE" and set(out["seen"]) <= {"DEPLOYING", "ACTIVE"}
    assert active["deploymentId"] == created["deploymentId"]
    assert "healthInfo" not in active
    (inst,) = active["instances"]
    assert inst["state"] == "ready" and inst["gpu"] == "CPU" and inst["gpuUuids"] == []
    assert inst["gpuSpecificationId"] == spec_id and inst["instanceType"] == "CPU.x1"
    (container,) = [c for c in ns_containers(namespace) if c.status == "running"]
    assert container.id == inst["containerId"]
    assert container.image.tags == [ECHO_IMAGE]  # nvcr.io/ stripped: the local image runs

    # update: the SDK copies gpuSpecificationId from GET deployment into its PUT
    run = dsdk(
        DEPLOY_HELPERS
        + """
def main(args):
    deps = client().cloud_function.functions.deployments
    updated = deps.update(
        args["fid"], args["vid"], targeted_deployment_specifications=[spec(2, 3)]
    )
    return {"updated": updated, **wait_status(deps, args["fid"], args["vid"], "ACTIVE", 2)}
""",
        fid=fid,
        vid=vid,
        timeout_s=120,
    )
    out = run.expect_ok()
    [put] = run.calls("PUT", dep_path)
    assert put.status == 200
    assert json.loads(put.body or "{}") == {
        "deploymentSpecifications": [
            {
                "gpu": "CPU",
                "minInstances": 2,
                "maxInstances": 3,
                "instanceType": "CPU.x1",
                "preferredOrder": 1,
                "gpuSpecificationId": spec_id,
            }
        ]
    }
    (spec,) = out["updated"]["deployment"]["deploymentSpecifications"]
    assert (spec["gpuSpecificationId"], spec["minInstances"], spec["maxInstances"]) == (
        spec_id,
        2,
        3,
    )
    assert spec["maxRequestConcurrency"] == 2  # not sent: kept
    assert len([c for c in ns_containers(namespace) if c.status == "running"]) == 2

    # list: GET {P}/nvcf/deployments, and the SDK's status filter on functionStatus
    run = dsdk(
        """
def main(args):
    deps = client().cloud_function.functions.deployments
    return {
        "all": deps.list()["deployments"],
        "active": deps.list(status="ACTIVE")["deployments"],
        "error": deps.list(status="ERROR")["deployments"],
    }
"""
    )
    listed = run.expect_ok()
    assert [c.status for c in run.calls("GET", f"{base}/deployments")] == [200, 200, 200]
    assert [(d["functionId"], d["functionStatus"]) for d in listed["all"]] == [(fid, "ACTIVE")]
    assert [d["deploymentId"] for d in listed["active"]] == [created["deploymentId"]]
    assert listed["error"] == []

    # delete: DELETE ?graceful=true answers JSON (the function, INACTIVE); no container is left
    run = dsdk(
        """
def main(args):
    deps = client().cloud_function.functions.deployments
    gone = deps.delete(args["fid"], args["vid"], graceful=True)
    return {"gone": gone, "left": deps.list()["deployments"]}
""",
        fid=fid,
        vid=vid,
    )
    out = run.expect_ok()
    [delete] = run.calls("DELETE", dep_path)
    assert (delete.query, delete.status) == ("graceful=true", 200)
    assert out["gone"]["function"]["status"] == "INACTIVE"
    assert out["gone"]["function"]["id"] == fid
    assert out["left"] == []
    wait_until(lambda: not ns_containers(namespace), "no container left")
    run = dsdk(
        "def main(args):\n"
        "    client().cloud_function.functions.deployments.info(args['fid'], args['vid'])\n",
        fid=fid,
        vid=vid,
    )
    run.expect_error("ResourceNotFoundException")


@pytest.mark.docker
def test_deploying_twice_is_refused_by_the_sdk_preflight(dsdk: Sdk) -> None:
    fn = create_function(dsdk, unique("sdk-twice")).expect_ok()["function"]
    run = dsdk(
        DEPLOY_HELPERS
        + """
def main(args):
    deps = client().cloud_function.functions.deployments
    deps.create(args["fid"], args["vid"], targeted_deployment_specifications=[spec(0, 1)])
    deps.create(args["fid"], args["vid"], targeted_deployment_specifications=[spec(0, 1)])
""",
        fid=fn["id"],
        vid=fn["versionId"],
    )
    assert "already has a deployment" in run.expect_error("NgcException")
    assert len(run.calls("POST", f"/v2/orgs/{ORG}/nvcf/deployments/")) == 1


# ngcsdk `restart` is GET + DELETE ?graceful=true + POST at once: it needs the graceful undeploy
# of an idle deployment to be immediate, which needs the app to tell the domain whether a
# version has queued or in-flight work (`Deployments.busy`).


@pytest.mark.docker
def test_restart_redeploys_with_the_same_specs(
    dsdk: Sdk, docker_server: ServerProcess, namespace: str
) -> None:
    fn = create_function(dsdk, unique("sdk-restart")).expect_ok()["function"]
    fid, vid = fn["id"], fn["versionId"]
    first = sdk_deploy(dsdk, fid, vid, 1, 1, 1).expect_ok()["deployment"]
    (old,) = first["instances"]
    run = dsdk(
        DEPLOY_HELPERS
        + """
def main(args):
    deps = client().cloud_function.functions.deployments
    restarted = deps.restart(args["fid"], args["vid"])
    return {"restarted": restarted, **wait_status(deps, args["fid"], args["vid"], "ACTIVE", 1)}
""",
        fid=fid,
        vid=vid,
        timeout_s=120,
    )
    out = run.expect_ok()
    dep_path = f"/v2/orgs/{ORG}/nvcf/deployments/functions/{fid}/versions/{vid}"
    api = [(c.method, c.query, c.status) for c in run.wire if c.path == dep_path]
    assert api[:3] == [("GET", "", 200), ("DELETE", "graceful=true", 200), ("POST", "", 200)]
    restarted = out["restarted"]["deployment"]
    assert restarted["deploymentId"] != first["deploymentId"]
    (spec,) = restarted["deploymentSpecifications"]
    assert (spec["gpu"], spec["instanceType"], spec["minInstances"]) == ("CPU", "CPU.x1", 1)
    (new,) = out["deployment"]["instances"]
    assert new["containerId"] != old["containerId"]
    wait_until(
        lambda: [c.id for c in ns_containers(namespace)] == [new["containerId"]],
        "only the new container",
    )


def wait_until(cond: Callable[[], Any], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
