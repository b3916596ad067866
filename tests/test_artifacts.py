"""The model store on real SQLite and a real data_dir: content addressing, immutability, what
is refused, the trees that are mounted, resolution of a function's models[]/resources[], and
backup/restore (issue #16; spec §2.1.1, §4.1)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from artifact_support import make_tree, sha256

from nvcf_lite.domain.artifact_refs import ArtifactMissing, ModelServer, container_command
from nvcf_lite.domain.artifacts import Artifacts, deployed_versions
from nvcf_lite.errors import Conflict, Invalid, NotFound
from nvcf_lite.models import (
    ArtifactKind,
    FunctionStatus,
    FunctionVersion,
    HealthCheck,
    LlmConfig,
    ModelRef,
    ResourceRef,
)
from nvcf_lite.store import backup, restore
from nvcf_lite.store.artifact_files import ArtifactFiles
from nvcf_lite.store.artifacts import ArtifactsRepo
from nvcf_lite.store.data_dir import ARTIFACTS_DIR, MODEL_BLOBS_DIR
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.sealing import SecretBox
from nvcf_lite.store.sqlite import Database

MODEL, RESOURCE = ArtifactKind.MODEL, ArtifactKind.RESOURCE
WEIGHTS = b"\x00weights\xff" * 1000


async def open_store(data: Path) -> tuple[Database, Artifacts]:
    await asyncio.to_thread(data.mkdir, parents=True, exist_ok=True)
    db = await Database.open(data / "nvcf-lite.db")
    deployed = deployed_versions(DeploymentsRepo(db), FunctionsRepo(db, SecretBox(bytes(32))))
    return db, Artifacts(db, ArtifactsRepo(db), ArtifactFiles(data), deployed, max_push_bytes=10)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Artifacts]:
    db, artifacts = await open_store(tmp_path / "data")
    yield artifacts
    await db.close()


def version(**fields: object) -> FunctionVersion:
    health = HealthCheck(
        protocol="HTTP", uri="/h", port=8000, timeout="PT1S", expected_status_code=200
    )
    base: dict[str, object] = {
        "function_id": "f",
        "version_id": "v",
        "nca_id": "n",
        "name": "fn",
        "status": FunctionStatus.INACTIVE,
        "inference_url": "/x",
        "health_uri": "/h",
        "health": health,
        "created_at": "2026-01-01T00:00:00.000Z",
    }
    return FunctionVersion(**{**base, **fields})  # type: ignore[arg-type]


def blobs(data: Path) -> list[str]:
    folder = data / MODEL_BLOBS_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


async def test_the_same_content_is_stored_once_and_every_file_lists_its_checksum(
    store: Artifacts, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "m", {"1/model.bin": WEIGHTS, "copy.bin": WEIGHTS, "cfg": b"c"})
    first = await store.push_path(MODEL, "resnet", "1", src)
    again = await store.push_path(MODEL, "resnet", "2", src)
    assert blobs(tmp_path / "data") == sorted({sha256(WEIGHTS), sha256(b"c")})
    assert first.sha256 == again.sha256  # the same tree
    listed = await store.get(MODEL, "resnet", "1")
    assert [(f.path, f.size_bytes, f.sha256) for f in listed.files or ()] == [
        ("1/model.bin", len(WEIGHTS), sha256(WEIGHTS)),
        ("cfg", 1, sha256(b"c")),
        ("copy.bin", len(WEIGHTS), sha256(WEIGHTS)),
    ]
    assert listed.size_bytes == 2 * len(WEIGHTS) + 1 and listed.file_count == 3
    assert [a.version for a in await store.of_kind(MODEL)] == ["1", "2"]
    assert await store.of_kind(RESOURCE) == []


async def test_a_version_is_pushed_once_and_removal_keeps_shared_blobs(
    store: Artifacts, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    await store.push_path(MODEL, "m", "1", make_tree(tmp_path / "a", {"w": WEIGHTS, "x": b"1"}))
    await store.push_path(MODEL, "m", "2", make_tree(tmp_path / "b", {"w": WEIGHTS}))
    with pytest.raises(Conflict, match="already in the store"):
        await store.push_path(MODEL, "m", "1", tmp_path / "b")
    await store.remove(MODEL, "m", "1")
    assert blobs(data) == [sha256(WEIGHTS)]  # still held by m 2; b"1" had no other holder
    with pytest.raises(NotFound):
        await store.get(MODEL, "m", "1")
    with pytest.raises(NotFound):
        await store.remove(MODEL, "m", "1")
    await store.remove(MODEL, "m", "2")
    assert blobs(data) == []


@pytest.mark.parametrize(
    ("name", "version"), [("../x", "1"), ("m", ".."), ("a/b", "1"), ("", "1"), (".m", "1")]
)
async def test_names_and_versions_must_be_folder_names(
    store: Artifacts, tmp_path: Path, name: str, version: str
) -> None:
    with pytest.raises(Invalid, match="must match"):
        await store.push_path(MODEL, name, version, make_tree(tmp_path / "t", {"f": b"1"}))


async def test_symbolic_links_out_of_the_tree_and_special_files_are_refused(
    store: Artifacts, tmp_path: Path
) -> None:
    outside = make_tree(tmp_path / "outside", {"secret": b"s"})
    src = make_tree(tmp_path / "src", {"real": b"r"})
    (src / "inside-link").symlink_to("real")
    pushed = await store.push_path(MODEL, "ok", "1", src)  # a link inside the tree is its file
    assert {f.path: f.sha256 for f in pushed.files or ()}["inside-link"] == sha256(b"r")
    (src / "escape").symlink_to(outside / "secret")
    with pytest.raises(Invalid, match="symbolic link out of"):
        await store.push_path(MODEL, "bad", "1", src)
    (src / "escape").unlink()
    (src / "folder-link").symlink_to(outside)
    with pytest.raises(Invalid, match="symbolic link to a folder"):
        await store.push_path(MODEL, "bad", "1", src)
    (src / "folder-link").unlink()
    os.mkfifo(src / "pipe")
    with pytest.raises(Invalid, match="not a regular file"):
        await store.push_path(MODEL, "bad", "1", src)
    with pytest.raises(Invalid, match="no such file"):
        await store.push_path(MODEL, "bad", "1", tmp_path / "missing")
    assert [a.name for a in await store.of_kind(MODEL)] == ["ok"]
    leftovers = [p.name for p in (tmp_path / "data" / ARTIFACTS_DIR).iterdir()]
    assert leftovers == [".lock"]  # refused pushes leave no staging folder


async def test_a_tree_is_read_only_links_of_the_blobs_and_keeps_executables(
    store: Artifacts, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"w/model.bin": WEIGHTS, "run.sh": b"#!/bin/sh\n"})
    (src / "run.sh").chmod(0o755)
    await store.push_path(MODEL, "m", "1", src)
    fn = version(models=(ModelRef(name="m", version="1", uri="ngc://org/m:1"),))
    (mount,) = await store.mounts(fn)
    assert mount.target == "/config/models/m"
    tree = Path(mount.source)
    weights = tree / "w" / "model.bin"
    assert weights.read_bytes() == WEIGHTS
    blob = tmp_path / "data" / MODEL_BLOBS_DIR / sha256(WEIGHTS)
    assert weights.stat().st_ino == blob.stat().st_ino  # a hard link: no second copy
    assert weights.stat().st_mode & 0o777 == 0o444
    assert (tree / "run.sh").stat().st_mode & 0o777 == 0o555
    assert await store.mounts(fn) == [mount]  # built once


async def test_a_function_uri_into_the_store_is_honoured_else_name_and_version_match(
    store: Artifacts, tmp_path: Path
) -> None:
    await store.push_path(MODEL, "tiny", "7", make_tree(tmp_path / "a", {"a": b"a"}))
    await store.push_path(RESOURCE, "vocab", "1", make_tree(tmp_path / "b", {"b": b"b"}))
    fn = version(
        models=(ModelRef(name="weights", version="1", uri="nvcf-lite://models/tiny/7"),),
        resources=(ResourceRef(name="vocab", version="1", uri="ngc://org/vocab:1"),),
    )
    mounts = await store.mounts(fn)
    assert [m.target for m in mounts] == ["/config/models/weights", "/config/resources/vocab"]
    assert (Path(mounts[0].source) / "a").read_bytes() == b"a"
    missing = version(resources=(ResourceRef(name="vocab", version="2", uri="ngc://r:2"),))
    with pytest.raises(ArtifactMissing, match="resource 'vocab' version '2' is not in"):
        await store.mounts(missing)
    bad_uri = version(models=(ModelRef(name="m", version="1", uri="nvcf-lite://tiny/7"),))
    with pytest.raises(ArtifactMissing, match="is not of the form"):
        await store.mounts(bad_uri)
    llm = version(models=(ModelRef(name="llama", llm_config=LlmConfig(uris=("/v1/chat",))),))
    assert await store.mounts(llm) == []  # no version, no store uri: nothing to mount
    bad_name = version(
        models=(ModelRef(name="../etc", version="7", uri="nvcf-lite://models/tiny/7"),)
    )
    with pytest.raises(ArtifactMissing, match="cannot be mounted"):
        await store.mounts(bad_name)


def test_a_model_only_function_runs_the_model_server_unless_it_names_an_image() -> None:
    server = ModelServer(image="triton:1", args="tritonserver --model-repository /config/models")
    model = (ModelRef(name="m", version="1", uri="u"),)
    assert container_command(version(models=model), server) == ("triton:1", server.args)
    own_args = version(models=model, container_args="tritonserver --strict")
    assert container_command(own_args, server) == ("triton:1", "tritonserver --strict")
    image = version(models=model, container_image="mine:1", container_args="-v")
    assert container_command(image, server) == ("mine:1", "-v")


async def test_a_push_left_half_done_is_cleaned_up_at_start(
    store: Artifacts, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    await store.push_path(MODEL, "m", "1", make_tree(tmp_path / "a", {"a": b"a"}))
    stale = data / ARTIFACTS_DIR / ".incoming-dead"
    stale.mkdir()
    os.utime(stale, (0, 0))
    (data / ARTIFACTS_DIR / "not-an-artifact").mkdir()
    orphan = data / MODEL_BLOBS_DIR / ("0" * 64)
    orphan.write_bytes(b"orphan")
    assert await store.prune() == 3
    assert blobs(data) == [sha256(b"a")]
    assert sorted(p.name for p in (data / ARTIFACTS_DIR).iterdir()) == [".lock"]


async def test_backup_keeps_the_store_and_a_restored_server_mounts_the_same_bytes(
    tmp_path: Path,
) -> None:
    data, restored = tmp_path / "data", tmp_path / "restored"
    db, artifacts = await open_store(data)
    await artifacts.push_path(MODEL, "m", "1", make_tree(tmp_path / "a", {"w/b.bin": WEIGHTS}))
    await db.close()
    manifest = backup.create(data, tmp_path / "bk.tar.gz", "test")
    assert manifest.files[f"{MODEL_BLOBS_DIR}/{sha256(WEIGHTS)}"].sha256 == sha256(WEIGHTS)
    assert not any(rel.startswith(ARTIFACTS_DIR) for rel in manifest.files)  # rebuilt instead
    restore.restore(tmp_path / "bk.tar.gz", restored)
    db, artifacts = await open_store(restored)
    try:
        fn = version(models=(ModelRef(name="m", version="1", uri="nvcf-lite://models/m/1"),))
        (mount,) = await artifacts.mounts(fn)
        assert (Path(mount.source) / "w" / "b.bin").read_bytes() == WEIGHTS
    finally:
        await db.close()
