"""A second account's team-configured ngcsdk 3.151.0 client invoking a function another account
shared with it, against a live server and a real echo container (spec §2.7, §7.1, §8 item 18).

Account A (the configured one, org `local`) deploys the echo function; account B (org `org-b`)
has a key of team `blue`. B's client, configured with org, team and key, cannot invoke A's
function until A shares it (404, as if it did not exist); then it can, and the container sees
the caller's account in NVCF-NCAID. After A clears the sharing it is 404 again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from asset_support import plain_server
from invocation_support import docker_env, live_echo
from sdk_support import SdkRun, admin, ensure_sdk3_venv, run_sdk3
from server_support import ServerProcess

pytestmark = [pytest.mark.sdk, pytest.mark.docker]

NCA_B, ORG_B, TEAM = "nca-b", "org-b", "blue"

INVOKE = """
def main(args):
    import ngcsdk
    c = ngcsdk.Client()
    c.configure(api_key=args["key"], org_name=args["org"], team_name=args["team"])
    out = {"org": c.config.org_name, "team": c.config.team_name}
    reply = c.cloud_function.functions.invoke(
        args["fid"], {"hello": "shared"}, starfleet_api_key=args["key"]
    )
    out["reply"] = dict(reply)
    return out
"""


@pytest.fixture(scope="module")
def sdk3_python() -> Path:
    return ensure_sdk3_venv()


@pytest.fixture
def server(sdk3_python: Path, tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    env = {**docker_env(ns), "NVCF_LITE_DOCKER__BASE_URL": ""}
    with plain_server(tmp_path / "server", extra_env=env) as live:
        yield live


def test_a_team_client_of_another_account_invokes_a_shared_function(
    sdk3_python: Path, server: ServerProcess, tmp_path: Path
) -> None:
    fid, vid = live_echo(server.json)
    admin(server, "accounts", "create", "--nca-id", NCA_B, "--org-name", ORG_B)
    out = admin(server, "keys", "create", "--account", ORG_B, "--team", TEAM, "--scope", "all")
    key_b = out.strip().splitlines()[-1]

    def invoke() -> SdkRun:
        return run_sdk3(
            sdk3_python, server, INVOKE, tmp_path / "home", fid=fid, key=key_b, org=ORG_B, team=TEAM
        )

    hidden = invoke()
    assert not hidden.ok
    posts = hidden.calls("POST", f"/v2/nvcf/pexec/functions/{fid}")
    assert [c.status for c in posts] == [404], hidden.describe()

    server.json(
        "POST",
        f"/v2/nvcf/authorizations/functions/{fid}",
        {"authorizedParties": [{"ncaId": NCA_B}]},
    )
    run = invoke()
    result = run.expect_ok()
    assert result["org"] == ORG_B and result["team"] == TEAM
    reply = result["reply"]
    assert reply["body"] == {"hello": "shared"}
    assert reply["headers"]["nvcf-function-version-id"] == vid
    assert reply["headers"]["nvcf-ncaid"] == NCA_B  # the caller's account (spec §8 item 18)
    [post] = run.calls("POST", f"/v2/nvcf/pexec/functions/{fid}")
    assert post.status == 200 and post.header("authorization") == f"Bearer {key_b}"

    server.json("DELETE", f"/v2/nvcf/authorizations/functions/{fid}")
    again = invoke()
    assert [c.status for c in again.calls("POST", f"/v2/nvcf/pexec/functions/{fid}")] == [404]
