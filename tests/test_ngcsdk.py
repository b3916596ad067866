"""The real ngcsdk 4.37.0 against a real `nvcf-lite serve` over HTTPS (spec §2.11, §7.1, §9).

Each SDK call runs in its own venv (see `sdk_support`), pointed at the server the way NVCF users
point it at a host: `NGC_CLI_API_URL=https://127.0.0.1:<port>` and `REQUESTS_CA_BUNDLE` for the
self-signed certificate. The scripts return JSON and every HTTP request the SDK made.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from docker_support import ECHO_IMAGE, docker_client_or_skip, ensure_test_images
from sdk_support import (
    SDK_VERSION,
    LiveServer,
    SdkRun,
    WireCall,
    ensure_sdk_venv,
    live_server,
    make_cert,
    mint_key,
    new_key,
    run_sdk,
)

pytestmark = pytest.mark.sdk

ORG = "sdk-org"
UNAUTH_WARNING = "couldn't get access to resource"

Sdk = Callable[..., SdkRun]


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return ensure_sdk_venv()


@pytest.fixture(scope="module")
def server(sdk_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("ngcsdk")
    cert, key = make_cert(tmp / "tls", fallback_python=sdk_python)
    with live_server(tmp / "server", cert, key, api_key=new_key(), org=ORG) as live:
        yield live


@pytest.fixture
def sdk(sdk_python: Path, server: LiveServer, tmp_path: Path) -> Sdk:
    """Run an SDK script (defining `main(args)`) against the server; keyword args reach it."""

    def run(script: str, **args: Any) -> SdkRun:
        return run_sdk(sdk_python, server, script, tmp_path / "ngc-home", **args)

    return run


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


def test_configure_checks_the_key_with_get_caller_info(sdk: Sdk, server: LiveServer) -> None:
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


def test_configure_with_a_minted_key_works(sdk: Sdk, server: LiveServer) -> None:
    key = mint_key(server, "list_functions")
    run = sdk("def main(args):\n    return client(api_key=args['key']).config.org_name\n", key=key)
    assert run.expect_ok() == ORG


# --- function management ----------------------------------------------------------------------


def test_function_lifecycle(sdk: Sdk, server: LiveServer) -> None:
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


def test_unknown_function_is_resource_not_found(sdk: Sdk) -> None:
    run = sdk(
        "def main(args):\n    client().cloud_function.functions.info(args['fid'], args['vid'])\n",
        fid=str(uuid.uuid4()),
        vid=str(uuid.uuid4()),
    )
    run.expect_error("ResourceNotFoundException")


def test_a_key_without_register_function_cannot_create(sdk: Sdk, server: LiveServer) -> None:
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


def test_absent_image_makes_the_sdk_warn_and_go_on(sdk: Sdk, server: LiveServer) -> None:
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
