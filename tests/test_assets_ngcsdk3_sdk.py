"""The asset flow of the real ngcsdk 3.151.0 (the last release with assets) against a real
`nvcf-lite serve` over plain HTTP (spec §2.5, §7.1, §9 item 7): upload (A1 + the signed PUT),
list, info, delete.

ngcsdk 3.x sends asset calls to a hard-coded NVCF URL table (`nvcf.constants.NVCF_URL_MAPPING`);
the script points its "prod" entry at the server, as spec §7.1 describes. Management calls
(get-caller-info) go to `NGC_CLI_API_URL`, which 3.x keeps as plain http. The SDK lives in its
own venv under `.sdk-venvs/` (its dependencies clash with ours).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from asset_support import plain_server
from sdk_support import ensure_sdk3_venv, run_sdk3
from server_support import ServerProcess

pytestmark = pytest.mark.sdk


@pytest.fixture(scope="module")
def sdk3_python() -> Path:
    return ensure_sdk3_venv()


@pytest.fixture(scope="module")
def server(sdk3_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with plain_server(tmp_path_factory.mktemp("ngcsdk3") / "server") as live:
        yield live


FLOW = """
import os
def main(args):
    c = client()
    path = os.path.join(os.environ["HOME"], "red-cat.png")
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * 4096)
    assets = c.cloud_function.assets
    uploaded = assets.upload(path, "red-cat-photo")
    out = {"upload": uploaded, "list": assets.list(), "info": assets.info(uploaded["asset_id"])}
    out["delete"] = assets.delete(uploaded["asset_id"])
    out["list_after"] = assets.list()
    try:
        assets.info(uploaded["asset_id"])
        out["info_after"] = "found"
    except Exception as exc:
        out["info_after"] = type(exc).__name__ + ": " + str(exc)
    return out
"""


def test_ngcsdk3_asset_flow(sdk3_python: Path, server: ServerProcess, tmp_path: Path) -> None:
    run = run_sdk3(sdk3_python, server, FLOW, tmp_path / "home")
    out = run.expect_ok()
    asset_id = out["upload"]["asset_id"]
    assert out["upload"] == {"asset_id": asset_id, "response_code": 200}
    entry = {
        "assetId": asset_id,
        "description": "red-cat-photo",
        "contentType": "image/png",
        "createdAt": out["info"]["asset"]["createdAt"],
    }
    assert out["list"] == {"assets": [entry]}
    assert out["info"] == {"asset": entry}
    assert out["delete"] is None
    assert out["list_after"] == {"assets": []}
    # 3.x prints only NGC's `requestStatus`, never a problem's detail: the type is what shows
    assert out["info_after"].startswith("ResourceNotFoundException"), out["info_after"]
    assert run.calls("GET", f"/v2/nvcf/assets/{asset_id}")[-1].status == 404

    put = run.calls("PUT", "/_nvcf-lite/uploads/assets/")
    assert len(put) == 1 and put[0].status == 200, run.describe()
    assert put[0].header("authorization") is None
    assert put[0].header("content-type") == "image/png"
    assert put[0].header("x-amz-meta-nvcf-asset-description") == "red-cat-photo"
    assert [c.status for c in run.calls("POST", "/v2/nvcf/assets")] == [200]
    assert [c.status for c in run.calls("DELETE", "/v2/nvcf/assets/")] == [204]
    assert not (server.data_dir / "blobs" / "assets" / asset_id).exists()


def test_ngcsdk3_upload_stores_the_exact_bytes(
    sdk3_python: Path, server: ServerProcess, tmp_path: Path
) -> None:
    script = """
import os
def main(args):
    path = os.path.join(os.environ["HOME"], "notes.txt")
    with open(path, "wb") as f:
        f.write(args["data"].encode())
    return client().cloud_function.assets.upload(path, "meeting notes")
"""
    data = "hello from ngcsdk 3\n" * 1000
    out = run_sdk3(sdk3_python, server, script, tmp_path / "home", data=data).expect_ok()
    stored = server.data_dir / "blobs" / "assets" / out["asset_id"]
    assert stored.read_bytes() == data.encode()
    assert os.stat(stored).st_size == len(data)
