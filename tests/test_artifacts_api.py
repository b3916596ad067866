"""The model store over HTTP (M1-M4, spec Appendix B) and what deploying asks of it: push,
list, get, remove; what is refused, always as problem+json; a missing model sends the version
to ERROR naming it; a stored model a deployed version mounts cannot be removed (issue #16).

No Docker: the launch checks the store before it asks any container engine for anything.
The 401/403 matrix of M1-M4 is in test_auth_scopes_api.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from artifact_support import make_tree, push, sha256, store_path, tar_body
from conftest import bearer, make_config, wait_for
from function_support import PLAIN, problem
from litestar.testing import TestClient

from nvcf_lite.store.data_dir import ARTIFACTS_DIR, MODEL_BLOBS_DIR

FAST = {
    "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.2",
    "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_INITIAL_S": "0.2",
    "NVCF_LITE_GPUS__USE_NVML": "false",
    "NVCF_LITE_MODELS__MAX_PUSH_BYTES": "65536",
}
CPU = {"gpu": "CPU", "instanceType": "CPU.x1", "minInstances": 1, "maxInstances": 1}


@pytest.fixture
def api(app_factory: Any, tmp_path: Path) -> TestClient[Any]:
    client: TestClient[Any] = app_factory(make_config(tmp_path / "data", **FAST))
    return client


def register(api: TestClient[Any], **fields: Any) -> tuple[str, str]:
    body = {"name": "uses-models", "inferenceUrl": "/probe", "containerImage": "img:1", **fields}
    r = api.post(f"{PLAIN}/functions", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    fn = r.json()["function"]
    return fn["id"], fn["versionId"]


def deploy(api: TestClient[Any], fid: str, vid: str) -> None:
    path = f"{PLAIN}/deployments/functions/{fid}/versions/{vid}"
    r = api.post(path, json={"deploymentSpecifications": [CPU]}, headers=bearer())
    assert r.status_code == 200, r.text


def test_push_list_get_and_remove_a_model(api: TestClient[Any], tmp_path: Path) -> None:
    files = {"resnet/1/model.onnx": b"onnx" * 100, "resnet/config.pbtxt": b"name: 'resnet'"}
    pushed = push(api, "model", "resnet", "1", files)
    assert pushed["uri"] == "nvcf-lite://models/resnet/1"
    assert pushed["sizeBytes"] == 414 and pushed["fileCount"] == 2
    listed = api.get(store_path("model"), headers=bearer()).json()["artifacts"]
    assert [(a["name"], a["version"], a["sha256"]) for a in listed] == [
        ("resnet", "1", pushed["sha256"])
    ]
    assert "files" not in listed[0]  # the list is a summary; M2 has the files
    assert api.get(store_path("resource"), headers=bearer()).json() == {"artifacts": []}
    one = api.get(store_path("model", "resnet", "1"), headers=bearer()).json()["artifact"]
    assert {f["path"]: f["sha256"] for f in one["files"]} == {
        path: sha256(data) for path, data in files.items()
    }
    r = api.delete(store_path("model", "resnet", "1"), headers=bearer())
    assert r.status_code == 204, r.text
    assert problem(api.get(store_path("model", "resnet", "1"), headers=bearer()), 404)
    assert not any((tmp_path / "data" / MODEL_BLOBS_DIR).iterdir())


def test_a_compressed_archive_is_accepted_and_equal_contents_share_one_blob(
    api: TestClient[Any], tmp_path: Path
) -> None:
    body = tar_body({"a.bin": b"same", "b.bin": b"same"}, gz=True)
    r = api.put(store_path("resource", "vocab", "2"), content=body, headers=bearer())
    assert r.status_code == 200, r.text
    assert [p.name for p in (tmp_path / "data" / MODEL_BLOBS_DIR).iterdir()] == [sha256(b"same")]


def test_an_archive_of_a_folder_made_by_tar_dash_c_dot_is_accepted(
    api: TestClient[Any], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "resnet", {"1/model.onnx": b"onnx", "config.pbtxt": b"cfg"})
    made = subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], capture_output=True, check=True)
    r = api.put(store_path("model", "resnet", "1"), content=made.stdout, headers=bearer())
    assert r.status_code == 200, r.text
    files = api.get(store_path("model", "resnet", "1"), headers=bearer()).json()["artifact"]
    assert {f["path"]: f["sha256"] for f in files["files"]} == {
        "1/model.onnx": sha256(b"onnx"),
        "config.pbtxt": sha256(b"cfg"),
    }


def test_pushing_a_stored_version_again_is_409(api: TestClient[Any]) -> None:
    push(api, "model", "m", "1", {"f": b"1"})
    r = api.put(store_path("model", "m", "1"), content=tar_body({"f": b"2"}), headers=bearer())
    assert "already in the store" in problem(r, 409)["detail"]


def test_an_archive_past_max_push_bytes_is_413_and_leaves_nothing(
    api: TestClient[Any], tmp_path: Path
) -> None:
    body = tar_body({"big": b"x" * 70000})
    r = api.put(store_path("model", "big", "1"), content=body, headers=bearer())
    assert "models.max_push_bytes" in problem(r, 413)["detail"]
    assert sorted(p.name for p in (tmp_path / "data" / ARTIFACTS_DIR).iterdir()) == [".lock"]
    assert problem(api.get(store_path("model", "big", "1"), headers=bearer()), 404)


def test_a_small_archive_that_unpacks_past_max_push_bytes_is_413(
    api: TestClient[Any], tmp_path: Path
) -> None:
    body = tar_body({"zeros": bytes(200_000)}, gz=True)  # ~200 kB of zeros: a tiny gzip
    assert len(body) < 65536
    r = api.put(store_path("model", "bomb", "1"), content=body, headers=bearer())
    assert "unpacks to more than 65536 bytes" in problem(r, 413)["detail"]
    assert sorted(p.name for p in (tmp_path / "data" / ARTIFACTS_DIR).iterdir()) == [".lock"]
    assert not (tmp_path / "data" / MODEL_BLOBS_DIR).exists()  # nothing was ever committed


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_tar_with(_member("../escape"), b"x"), "leaves the tree"),
        (_tar_with(_member("/etc/passwd"), b"x"), "leaves the tree"),
        (_tar_with(_member("a/../../b"), b"x"), "leaves the tree"),
        (_tar_with(_member("link", tarfile.SYMTYPE, "/etc/passwd")), "not a file or a folder"),
        (_tar_with(_member("hard", tarfile.LNKTYPE, "other")), "not a file or a folder"),
        (_tar_with(_member("dev", tarfile.CHRTYPE)), "not a file or a folder"),
        (b"this is not a tar archive" * 40, "not a readable tar archive"),
        (_tar_with(_member("empty-folder", tarfile.DIRTYPE)), "holds no files"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "dotdot-inside",
        "symlink",
        "hardlink",
        "device",
        "not-tar",
        "empty",
    ],
)
def test_what_cannot_be_stored_is_400(
    api: TestClient[Any], tmp_path: Path, body: bytes, says: str
) -> None:
    r = api.put(store_path("model", "bad", "1"), content=body, headers=bearer())
    assert says in problem(r, 400)["detail"]
    assert not (tmp_path / "escape").exists()
    assert api.get(store_path("model"), headers=bearer()).json() == {"artifacts": []}


@pytest.mark.parametrize("name", ["...", ".hidden", "a b", "x" * 129, "%2E%2E"])
def test_a_name_that_is_no_folder_name_is_400(api: TestClient[Any], name: str) -> None:
    r = api.put(store_path("model", name, "1"), content=tar_body({"f": b"1"}), headers=bearer())
    assert "must match" in problem(r, 400)["detail"]


def _health_errors(api: TestClient[Any], fid: str, vid: str) -> list[str]:
    path = f"{PLAIN}/deployments/functions/{fid}/versions/{vid}"
    deployment = api.get(path, headers=bearer()).json()["deployment"]
    return [h["error"] for h in deployment.get("healthInfo", [])]


def _status(api: TestClient[Any], fid: str, vid: str) -> str:
    r = api.get(f"{PLAIN}/functions/{fid}/versions/{vid}", headers=bearer())
    return str(r.json()["function"]["status"])


def test_a_missing_model_sends_the_version_to_error_naming_it(api: TestClient[Any]) -> None:
    push(api, "model", "present", "1", {"f": b"1"})
    fid, vid = register(
        api,
        models=[
            {"name": "present", "version": "1", "uri": "ngc://org/present:1"},
            {"name": "absent", "version": "3", "uri": "ngc://org/absent:3"},
        ],
    )
    deploy(api, fid, vid)
    wait_for(lambda: _status(api, fid, vid) == "ERROR", timeout=15, what="ERROR")
    (error,) = _health_errors(api, fid, vid)
    # at the first start, not after deploy_attempts (3) backed-off retries ("crash-looping: ...")
    assert error.startswith("model 'absent' version '3' is not in the model store"), error
    assert "nvcf-lite models push absent 3" in error


def test_with_min_instances_0_the_first_request_finds_the_model_missing_and_errors(
    api: TestClient[Any],
) -> None:
    fid, vid = register(api, models=[{"name": "gone", "version": "1", "uri": "ngc://o/gone:1"}])
    path = f"{PLAIN}/deployments/functions/{fid}/versions/{vid}"
    spec = {**CPU, "minInstances": 0}
    r = api.post(path, json={"deploymentSpecifications": [spec]}, headers=bearer())
    assert r.status_code == 200, r.text
    wait_for(lambda: _status(api, fid, vid) == "ACTIVE", timeout=15, what="ACTIVE at min 0")
    headers = {**bearer(), "NVCF-POLL-SECONDS": "1"}
    r = api.post(f"{PLAIN}/pexec/functions/{fid}", json={}, headers=headers)
    assert r.status_code != 200, r.text  # nothing can answer it
    wait_for(lambda: _status(api, fid, vid) == "ERROR", timeout=15, what="ERROR")
    assert "model 'gone' version '1'" in _health_errors(api, fid, vid)[0]


def test_a_model_only_function_is_registered_and_deployable(api: TestClient[Any]) -> None:
    r = api.post(
        f"{PLAIN}/functions",
        json={
            "name": "triton",
            "inferenceUrl": "/v2/models/m/infer",
            "models": [{"name": "m", "version": "1", "uri": "nvcf-lite://models/m/1"}],
        },
        headers=bearer(),
    )
    assert r.status_code == 200, r.text
    fn = r.json()["function"]
    assert "containerImage" not in fn
    deploy(api, fn["id"], fn["versionId"])  # resolved at launch: m 1 is not stored, so ERROR
    wait_for(lambda: _status(api, fn["id"], fn["versionId"]) == "ERROR", timeout=15, what="ERROR")
    assert "model 'm' version '1'" in _health_errors(api, fn["id"], fn["versionId"])[0]


def test_a_model_a_deployed_version_mounts_cannot_be_removed_until_undeployed(
    api: TestClient[Any],
) -> None:
    push(api, "resource", "vocab", "1", {"v.txt": b"a b c"})
    fid, vid = register(
        api, resources=[{"name": "words", "version": "9", "uri": "nvcf-lite://resources/vocab/1"}]
    )
    deploy(api, fid, vid)
    r = api.delete(store_path("resource", "vocab", "1"), headers=bearer())
    doc = problem(r, 409)
    assert vid in doc["detail"] and "undeploy" in doc["detail"]
    r = api.delete(f"{PLAIN}/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.status_code == 200, r.text
    wait_for(
        lambda: (
            api.delete(store_path("resource", "vocab", "1"), headers=bearer()).status_code == 204
        ),
        timeout=15,
        what="the resource removable once undeployed",
    )
