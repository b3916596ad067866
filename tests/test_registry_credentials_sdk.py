"""ngcsdk 4.37.0's registry-credential calls against a real `nvcf-lite serve` (spec §2.8, §7.1).

`client.cloud_function.registry_credentials` create / list / info / update / delete, on the
NGC path family (`/v2/orgs/{org}/nvcf/registry-credentials`): the SDK sends NVCF's bodies
(`registryHostname`, `artifactTypes`, `secret` {name, value: base64 of `$oauthtoken:<key>` for
NGC, `<username>:<key>` for Docker Hub}), reads `registryCredential.provisionedBy` and
`registryCredentialName` before an update or a delete, and expects no body from DELETE. No
answer carries a key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sdk_support import Sdk, ensure_sdk_venv, live_server, make_cert, new_key, sdk_runner
from server_support import ServerProcess

pytestmark = pytest.mark.sdk

ORG = "sdk-org"
NGC_KEY = "ngc-registry-key-never-answered-Hd62"
HUB_KEY = "hub-token-never-answered-Tv07"
NEW_KEY = "ngc-registry-key-rotated-Lb15"
BASE = f"/v2/orgs/{ORG}/nvcf/registry-credentials"


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return ensure_sdk_venv()


@pytest.fixture(scope="module")
def server(sdk_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("ngcsdk-registry")
    cert, key = make_cert(tmp / "tls", fallback_python=sdk_python)
    with live_server(tmp / "server", cert, key, api_key=new_key(), org=ORG) as live:
        yield live


@pytest.fixture
def sdk(sdk_python: Path, server: ServerProcess, tmp_path: Path) -> Sdk:
    return sdk_runner(sdk_python, server, tmp_path / "ngc-home")


LIFECYCLE = """
def main(args):
    creds = client().cloud_function.registry_credentials
    ngc = creds.create(
        "ngc-pull", "nvcr.io", ["CONTAINER"], args["ngc_key"],
        description="pulls from NGC", tags=["lab"],
    )
    hub = creds.create("hub-pull", "docker.io", ["CONTAINER"], args["hub_key"], username="me")
    ngc_id = ngc["registryCredential"]["registryCredentialId"]
    hub_id = hub["registryCredential"]["registryCredentialId"]
    listed = creds.list()
    info = creds.info(ngc_id)
    updated = creds.update(ngc_id, args["new_key"])
    creds.delete(hub_id)
    after = creds.list()
    return {"created": [ngc, hub], "listed": listed, "info": info, "updated": updated,
            "after": after}
"""


def secret_of(body: str | None) -> tuple[str, str]:
    """(name, decoded value) of the secret in a request body the SDK sent."""
    secret: dict[str, str] = json.loads(body or "{}")["secret"]
    return secret["name"], base64.b64decode(secret["value"]).decode()


def test_create_list_info_update_delete_through_the_sdk(sdk: Sdk) -> None:
    run = sdk(LIFECYCLE, ngc_key=NGC_KEY, hub_key=HUB_KEY, new_key=NEW_KEY)
    got: dict[str, Any] = run.expect_ok()
    ngc, hub = (c["registryCredential"] for c in got["created"])
    assert (ngc["registryHostname"], ngc["registryName"]) == ("nvcr.io", "NGC")
    assert (hub["registryHostname"], hub["registryName"]) == ("docker.io", "DockerHub")
    assert ngc["registryCredentialName"] == "ngc-pull" and ngc["tags"] == ["lab"]
    assert ngc["description"] == "pulls from NGC" and ngc["provisionedBy"] == "USER"
    listed = [c["registryCredentialId"] for c in got["listed"]["registryCredentials"]]
    assert listed == [ngc["registryCredentialId"], hub["registryCredentialId"]]
    assert got["info"]["registryCredential"] == ngc
    updated = got["updated"]["registryCredential"]
    assert updated["registryCredentialName"] == "ngc-pull"  # the SDK resends the name it read
    assert updated["lastUpdatedAt"] >= ngc["lastUpdatedAt"]
    after = [c["registryCredentialId"] for c in got["after"]["registryCredentials"]]
    assert after == [ngc["registryCredentialId"]]
    # the wire: the NGC path family, NVCF's bodies, the secrets only ever sent, never answered
    posts = run.calls("POST", BASE)
    assert [secret_of(c.body) for c in posts] == [
        ("ngc-pull", f"$oauthtoken:{NGC_KEY}"),
        ("hub-pull", f"me:{HUB_KEY}"),
    ]
    (patch,) = run.calls("PATCH", BASE)
    assert secret_of(patch.body) == ("ngc-pull", f"$oauthtoken:{NEW_KEY}")
    (gone,) = run.calls("DELETE", BASE)
    assert gone.path == f"{BASE}/{hub['registryCredentialId']}" and gone.status == 204
    assert all(c.status in (200, 204) for c in run.calls(prefix=BASE)), run.describe()
    answered = repr(got)
    for key in (NGC_KEY, HUB_KEY, NEW_KEY):
        assert key not in answered


def test_an_unknown_credential_is_an_sdk_error(sdk: Sdk) -> None:
    run = sdk(
        """
def main(args):
    return client().cloud_function.registry_credentials.info(args["id"])
""",
        id="00000000-0000-4000-8000-000000000000",
    )
    detail = run.expect_error("ResourceNotFoundException")
    assert "not found" in detail.lower()
