"""The real ngcsdk 4.37.0 with several accounts, sharing and teams (spec §2.7, §2.11, §6.4).

Against a live `nvcf-lite serve` over HTTPS (as in test_ngc_sdk): the second account and the
keys are made with the admin CLI (`nvcf-lite accounts create`, `keys create --account
--team`) on the live store; every SDK call runs in the SDK's own venv and its wire is recorded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_support import ECHO_IMAGE
from sdk_support import (
    Sdk,
    SdkRun,
    admin,
    ensure_sdk_venv,
    live_server,
    make_cert,
    new_key,
    sdk_runner,
)
from server_support import ServerProcess

pytestmark = pytest.mark.sdk

ORG, ORG_B, NCA_B, TEAM = "acct-org", "acct-org-b", "nca-acct-b", "blue"


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return ensure_sdk_venv()


@pytest.fixture(scope="module")
def server(sdk_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("accounts-sdk")
    cert, key = make_cert(tmp / "tls", fallback_python=sdk_python)
    with live_server(tmp / "server", cert, key, api_key=new_key(), org=ORG) as live:
        admin(live, "accounts", "create", "--nca-id", NCA_B, "--org-name", ORG_B)
        yield live


@pytest.fixture(scope="module")
def key_b(server: ServerProcess) -> str:
    out = admin(server, "keys", "create", "--account", ORG_B, "--scope", "all")
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def team_key(server: ServerProcess) -> str:
    out = admin(server, "keys", "create", "--team", TEAM, "--scope", "all")
    return out.strip().splitlines()[-1]


@pytest.fixture
def sdk(sdk_python: Path, server: ServerProcess, tmp_path: Path) -> Sdk:
    return sdk_runner(sdk_python, server, tmp_path / "ngc-home")


CREATE = """
def main(args):
    fn = client().cloud_function.functions.create(
        name=args["name"], inference_url="/echo", container_image=args["image"],
        inference_port=8000, health_uri="/health",
    )
    return fn["function"]
"""

AUTHORIZE = """
def main(args):
    auth = client().cloud_function.functions.authorizations
    fid, vid = args["fid"], args["vid"]
    out = {}
    out["add_b"] = dict(auth.add(fid, nca_id=args["b"]))
    out["add_c"] = dict(auth.add(fid, nca_id="nca-c"))
    out["info"] = dict(auth.info(fid))
    out["remove_c"] = dict(auth.remove(fid, nca_id="nca-c"))
    out["version_add"] = dict(auth.add(fid, vid, nca_id="nca-v"))
    out["version_add_2"] = dict(auth.add(fid, vid, nca_id="nca-w"))
    out["version_info"] = dict(auth.info(fid, vid))
    out["version_clear"] = dict(auth.clear(fid, vid))
    return out
"""

LIST = """
def main(args):
    import ngcsdk
    c = ngcsdk.Client()
    c.configure(api_key=args["key"], org_name=args["org"], team_name=args.get("team"))
    fns = c.cloud_function.functions
    out = {"listed": [f["versionId"] for f in fns.list()["functions"]]}
    if args.get("fid"):
        out["info"] = fns.info(args["fid"], args["vid"])["function"]
    return out
"""


def parties(found: dict[str, object]) -> list[str]:
    fn = found["function"]
    assert isinstance(fn, dict)
    return [p["ncaId"] for p in fn["authorizedParties"]]


def create_function(sdk: Sdk) -> dict[str, str]:
    made: dict[str, str] = sdk(
        CREATE, name=f"acct-{uuid.uuid4().hex[:8]}", image=ECHO_IMAGE
    ).expect_ok()
    return made


def test_authorizations_add_info_remove_clear(sdk: Sdk) -> None:
    fn = create_function(sdk)
    fid, vid = fn["id"], fn["versionId"]
    run = sdk(AUTHORIZE, fid=fid, vid=vid, b=NCA_B)
    out = run.expect_ok()
    assert parties(out["add_b"]) == [NCA_B]
    assert parties(out["add_c"]) == [NCA_B, "nca-c"]  # the second add is a PATCH /add
    assert [e["versionId"] for e in out["info"]["functions"]] == [vid]
    assert [p["ncaId"] for p in out["info"]["functions"][0]["authorizedParties"]] == [
        NCA_B,
        "nca-c",
    ]
    assert parties(out["remove_c"]) == [NCA_B]
    # the version inherits B, so the SDK PATCHes /add: the version's own set starts
    assert parties(out["version_add"]) == ["nca-v"]
    assert parties(out["version_add_2"]) == ["nca-v", "nca-w"]
    assert parties(out["version_info"]) == [NCA_B, "nca-v", "nca-w"]  # inherits B
    assert parties(out["version_clear"]) == []
    base = f"/v2/orgs/{ORG}/nvcf/authorizations/functions/{fid}"
    sent = [(c.method, c.path, c.status) for c in run.wire if "/authorizations/" in c.path]
    assert sent == [
        ("GET", base, 200),
        ("POST", base, 200),
        ("GET", base, 200),
        ("PATCH", f"{base}/add", 200),
        ("GET", base, 200),
        ("PATCH", f"{base}/remove", 200),
        ("GET", f"{base}/versions/{vid}", 200),
        ("PATCH", f"{base}/versions/{vid}/add", 200),
        ("GET", f"{base}/versions/{vid}", 200),
        ("PATCH", f"{base}/versions/{vid}/add", 200),
        ("GET", f"{base}/versions/{vid}", 200),
        ("DELETE", f"{base}/versions/{vid}", 200),
    ]
    [post] = [c for c in run.wire if c.method == "POST" and c.path == base]
    assert json.loads(post.body or "{}") == {"authorizedParties": [{"ncaId": NCA_B}]}


def test_a_second_account_sees_a_function_once_it_is_shared(sdk: Sdk, key_b: str) -> None:
    fn = create_function(sdk)
    fid, vid = fn["id"], fn["versionId"]
    before = sdk(LIST, key=key_b, org=ORG_B).expect_ok()
    assert vid not in before["listed"]
    hidden = sdk(LIST, key=key_b, org=ORG_B, fid=fid, vid=vid)
    hidden.expect_error("ResourceNotFoundException")  # not shared: as if it did not exist
    assert hidden.calls("GET", f"/v2/orgs/{ORG_B}/nvcf/functions/{fid}")[-1].status == 404
    sdk(
        "def main(args):\n    client().cloud_function.functions.authorizations.add("
        "args['fid'], nca_id=args['b'])\n",
        fid=fid,
        b=NCA_B,
    ).expect_ok()
    run = sdk(LIST, key=key_b, org=ORG_B, fid=fid, vid=vid)
    after = run.expect_ok()
    assert vid in after["listed"]
    assert after["info"]["ncaId"] != NCA_B and after["info"]["id"] == fid
    assert run.calls("GET", f"/v2/orgs/{ORG_B}/nvcf/functions")
    # B may not change the sharing of A's function (nor learn it through A's org)
    denied = sdk(
        "def main(args):\n    return dict(client(api_key=args['key'], org=args['org'])"
        ".cloud_function.functions.authorizations.info(args['fid']))\n",
        key=key_b,
        org=ORG_B,
        fid=fid,
    )
    assert not denied.ok
    assert [c.status for c in denied.wire if "/authorizations/" in c.path] == [403]
    other_org = sdk(LIST, key=key_b, org=ORG)
    assert not other_org.ok  # the SDK refuses an org that is not the key's (get-caller-info)


def test_a_team_configured_client_lists_and_creates_under_its_team(sdk: Sdk, team_key: str) -> None:
    fn = create_function(sdk)
    run = sdk(LIST, key=team_key, org=ORG, team=TEAM)
    out = run.expect_ok()
    assert fn["versionId"] in out["listed"]
    [listing] = run.calls("GET", f"/v2/orgs/{ORG}/teams/{TEAM}/nvcf/functions")
    assert listing.status == 200 and listing.header("nv-ngc-team") == TEAM
    made = sdk(
        "def main(args):\n    import ngcsdk\n    c = ngcsdk.Client()\n"
        "    c.configure(api_key=args['key'], org_name=args['org'], team_name=args['team'])\n"
        "    return c.cloud_function.functions.create(name='team-fn', inference_url='/echo',"
        " container_image=args['image'], inference_port=8000)['function']\n",
        key=team_key,
        org=ORG,
        team=TEAM,
        image=ECHO_IMAGE,
    )
    assert made.expect_ok()["name"] == "team-fn"
    assert made.calls("POST", f"/v2/orgs/{ORG}/teams/{TEAM}/nvcf/functions")


def test_a_team_the_key_is_not_in_is_refused(sdk: Sdk, team_key: str) -> None:
    run: SdkRun = sdk(LIST, key=team_key, org=ORG, team="red")
    assert not run.ok
    assert "Invalid team" in (run.error or {}).get("message", ""), run.describe()
