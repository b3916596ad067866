"""`nvcf-lite backup` while a real server runs, and `nvcf-lite restore` into a new data_dir.

The server has a function (with a secret), an uploaded asset, a key made by the CLI and a signed
URL handed out; after backup -> restore -> a new server on the restored data_dir, all of them
work as before. Restore refuses a running server's data_dir, a non-empty one without --force, a
damaged backup and one from a newer schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from backup_support import add_request
from server_support import ServerProcess

from nvcf_lite.store import backup, restore
from nvcf_lite.store.sqlite import latest_version, migrate_file

NVCF_LITE = str(Path(sys.executable).with_name("nvcf-lite"))
BYTES = b"\x89PNG backed-up cat " * 1000
QUIET = {
    "NVCF_LITE_GPUS__USE_NVML": "false",
    "NVCF_LITE_DOCKER__BASE_URL": "unix:///nonexistent/docker.sock",
    "NVCF_LITE_AUTH__KEY_CACHE_SECONDS": "0",
}


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "NVCF_LITE_SYSTEM_CONFIG": str(data_dir.parent / "no-system-config.toml"),
        "NVCF_LITE_STORE__DATA_DIR": str(data_dir),
    }
    return subprocess.run(
        [NVCF_LITE, *args],
        cwd=data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def server(workdir: Path) -> ServerProcess:
    return ServerProcess(
        workdir, env={"NVCF_LITE_SYSTEM_CONFIG": str(workdir / "none.toml"), **QUIET}
    )


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def on(target: ServerProcess, url: str) -> str:
    """The same path and query on another server (the restored one listens elsewhere)."""
    parts = urlsplit(url)
    return f"{target.url}{parts.path}?{parts.query}"


def populate(live: ServerProcess, data_dir: Path) -> dict[str, Any]:
    body = {
        "name": "echo",
        "inferenceUrl": "/echo",
        "containerImage": "nvcr.io/org/echo:1",
        "secrets": [{"name": "TOKEN", "value": "kept-secret"}],
    }
    fn = live.json("POST", "/v2/nvcf/functions", body)["function"]
    made = cli(data_dir, "keys", "create", "--scope", "list_functions", "--description", "old")
    assert made.returncode == 0, made.stderr
    asset = live.json("POST", "/v2/nvcf/assets", {"contentType": "image/png", "description": "cat"})
    status, _, _ = _upload(asset["uploadUrl"])
    assert status == 200
    signed = live.json("GET", f"/v2/nvcf/assets/{asset['assetId']}/content-redirect")
    return {"fn": fn, "key": made.stdout.strip(), "asset": asset, "signed": signed["presignedUrl"]}


def _upload(url: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=BYTES, method="PUT")
    request.add_header("Content-Type", "image/png")
    request.add_header("x-amz-meta-nvcf-asset-description", "cat")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status, {}, resp.read()


@pytest.fixture
def backed_up(tmp_path: Path) -> dict[str, Any]:
    """A server with data, backed up (directory and .tar.gz) while it runs."""
    live = server(tmp_path / "a").start()
    try:
        state = populate(live, tmp_path / "a" / "data")
        as_dir = cli(tmp_path / "a" / "data", "backup", str(tmp_path / "bk"))
        as_tar = cli(tmp_path / "a" / "data", "backup", str(tmp_path / "bk.tar.gz"))
        busy = cli(tmp_path / "a" / "data", "restore", str(tmp_path / "bk"), "--force")
        assert live.json("GET", f"/v2/nvcf/functions/{state['fn']['id']}/versions")
    finally:
        live.stop()
    return {**state, "dir": as_dir, "tar": as_tar, "busy": busy, "root": tmp_path}


def test_backup_holds_the_database_keys_and_blobs_with_a_manifest(
    backed_up: dict[str, Any],
) -> None:
    root: Path = backed_up["root"]
    for done in (backed_up["dir"], backed_up["tar"]):
        assert done.returncode == 0, done.stderr
        assert f"database {root / 'a/data/nvcf-lite.db'}" in done.stderr  # said what it opened
    assert f"in {root / 'bk'}" in backed_up["dir"].stdout
    manifest = json.loads((root / "bk" / "manifest.json").read_text())
    aid = backed_up["asset"]["assetId"]
    # secrets.key: what function secrets are sealed with; webhook.key: webhooks are signed with
    keys = {"signing.key", "secrets.key", "webhook.key"}
    assert set(manifest["files"]) == {"nvcf-lite.db", *keys, f"blobs/assets/{aid}"}
    assert manifest["schema_version"] == latest_version() and manifest["format"] == 1
    assert manifest["nvcf_lite_version"] and manifest["created_at"].endswith("+00:00")
    entry = manifest["files"][f"blobs/assets/{aid}"]
    assert entry == {"size": len(BYTES), "sha256": hashlib.sha256(BYTES).hexdigest()}
    for rel, want in manifest["files"].items():
        assert hashlib.sha256((root / "bk" / rel).read_bytes()).hexdigest() == want["sha256"]
    with tarfile.open(root / "bk.tar.gz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert names == {*manifest["files"], "manifest.json"}
    for key in keys:
        assert (root / "bk" / key).stat().st_mode & 0o777 == 0o600


def test_restore_brings_back_functions_assets_keys_and_signed_urls(
    backed_up: dict[str, Any],
) -> None:
    root: Path = backed_up["root"]
    busy = backed_up["busy"]  # restore onto the running server's data_dir
    assert busy.returncode == 2 and "is in use by process" in busy.stderr
    assert "stop that server first" in busy.stderr
    target = root / "b" / "data"
    done = cli(target, "restore", str(root / "bk.tar.gz"))
    assert done.returncode == 0, done.stderr
    assert f"into {target}" in done.stdout
    for key in ("signing.key", "secrets.key", "webhook.key"):
        assert (target / key).read_bytes() == (root / "a/data" / key).read_bytes()
    restored = server(root / "b").start()
    try:
        fid = backed_up["fn"]["id"]
        got = restored.json("GET", f"/v2/nvcf/functions/{fid}/versions")["functions"]
        assert [(f["id"], f["name"], f["secrets"]) for f in got] == [(fid, "echo", ["TOKEN"])]
        old_key = {"Authorization": f"Bearer {backed_up['key']}"}
        status, _, body = restored.call("GET", "/v2/nvcf/functions", headers=old_key)
        assert status == 200 and fid in body.decode()
        assert fetch(on(restored, backed_up["signed"])) == (200, BYTES)  # same signing key
        aid = backed_up["asset"]["assetId"]
        fresh = restored.json("GET", f"/v2/nvcf/assets/{aid}/content-redirect")
        assert fetch(on(restored, fresh["presignedUrl"])) == (200, BYTES)
    finally:
        restored.stop()


def test_restore_refuses_a_non_empty_data_dir_unless_forced(backed_up: dict[str, Any]) -> None:
    root: Path = backed_up["root"]
    target = root / "a" / "data"  # the original, server stopped
    before = (target / "nvcf-lite.db").stat().st_ino
    refused = cli(target, "restore", str(root / "bk"))
    assert refused.returncode == 2 and f"data_dir {target} is not empty" in refused.stderr
    assert "--force moves what is there" in refused.stderr
    assert (target / "nvcf-lite.db").stat().st_ino == before  # untouched
    forced = cli(target, "restore", str(root / "bk"), "--force")
    assert forced.returncode == 0, forced.stderr
    (aside,) = (target / "backups").glob("replaced-*")
    assert (aside / "nvcf-lite.db").stat().st_ino == before  # set aside, not deleted
    assert (aside / "signing.key").is_file() and (aside / "blobs").is_dir()
    assert (target / "nvcf-lite.db").stat().st_ino != before
    assert (root / "bk" / "nvcf-lite.db").is_file()  # a directory backup stays as it was


def test_restore_refuses_damaged_and_newer_backups(backed_up: dict[str, Any]) -> None:
    root: Path = backed_up["root"]
    aid = backed_up["asset"]["assetId"]
    damaged = root / "damaged"
    shutil.copytree(root / "bk", damaged)
    blob = damaged / "blobs" / "assets" / aid
    blob.chmod(0o644)
    blob.write_bytes(BYTES[:-1] + b"!")
    done = cli(root / "c" / "data", "restore", str(damaged))
    assert done.returncode == 2
    assert f"blobs/assets/{aid} does not match its checksum" in done.stderr
    assert not (root / "c" / "data" / "nvcf-lite.db").exists()

    newer = root / "newer"
    shutil.copytree(root / "bk", newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (newer / "manifest.json").write_text(json.dumps(manifest))
    done = cli(root / "d" / "data", "restore", str(newer))
    assert done.returncode == 2
    assert "the backup is at schema version 99" in done.stderr
    assert f"newer than this nvcf-lite knows (schema version {latest_version()})" in done.stderr
    assert "upgrade nvcf-lite" in done.stderr
    assert not (root / "d" / "data" / "nvcf-lite.db").exists()

    done = cli(root / "e" / "data", "restore", str(root / "nothing.tar.gz"))
    assert done.returncode == 2 and "no backup at" in done.stderr
    (root / "bk2").mkdir()
    (root / "bk2" / "junk").write_text("x")
    done = cli(root / "a" / "data", "backup", str(root / "bk2"))
    assert done.returncode == 2 and "already exists and is not empty" in done.stderr


async def test_queued_requests_input_assets_are_kept_and_responses_are_not(
    tmp_path: Path,
) -> None:
    """inf/inputAssets/<request> (hard links staged at acceptance) go into the backup, since the
    queue is in the database; inf/response/ and secrets/ are rebuilt and stay out."""
    src = tmp_path / "src"
    await migrate_file(src / "nvcf-lite.db")
    (src / "blobs" / "assets").mkdir(parents=True)
    (src / "blobs" / "assets" / "a1").write_bytes(b"asset")
    (src / "blobs" / "assets" / ".a2.x.partial").write_bytes(b"half")  # an upload under way
    staged = src / "inf" / "inputAssets" / "r1"
    staged.mkdir(parents=True)
    os.link(src / "blobs" / "assets" / "a1", staged / "a1")
    add_request(src, "r1", "queued", ["a1"])
    (src / "inf" / "response" / "r1").mkdir(parents=True)
    (src / "inf" / "response" / "r1" / "out").write_bytes(b"partial response")
    (src / "secrets" / "i1").mkdir(parents=True)
    (src / "secrets" / "i1" / "secrets.json").write_text("{}")
    (src / "signing.key").write_bytes(b"k" * 32)
    (src / "other.key").write_bytes(b"s" * 32)
    manifest = backup.create(src, tmp_path / "bk.tgz", "test")
    assert sorted(manifest.files) == [
        "blobs/assets/a1",
        "inf/inputAssets/r1/a1",
        "nvcf-lite.db",
        "other.key",
        "signing.key",
    ]
    restored, replaced = restore.restore(tmp_path / "bk.tgz", tmp_path / "dst")
    assert replaced is None and restored.files == manifest.files
    dst = tmp_path / "dst"
    assert (dst / "inf/inputAssets/r1/a1").read_bytes() == b"asset"
    assert (dst / "inf/inputAssets/r1/a1").stat().st_mode & 0o777 == 0o444
    assert (dst / "inf/inputAssets/r1").stat().st_mode & 0o777 == 0o755
    assert (dst / "other.key").stat().st_mode & 0o777 == 0o600
    assert not (dst / "inf" / "response").exists() and not (dst / "secrets").exists()
    assert sorted(p.name for p in dst.iterdir()) == [
        "blobs",
        "inf",
        "nvcf-lite.db",
        "other.key",
        "server.lock",
        "signing.key",
    ]
