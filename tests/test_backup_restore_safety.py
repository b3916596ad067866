"""Restore trusts nothing in a backup, copies only the inputs the backed-up queue needs, and is
all or nothing: a failure midway leaves the data_dir as it was.

Each hostile backup is a real backup edited the way an attacker (or a bad disk) would: a
manifest key that is absolute or climbs out with `..`, a file replaced by a symbolic link. A
victim file outside both the backup and the data_dir must keep its bytes and its mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from backup_support import add_request

from nvcf_lite.store import backup, restore
from nvcf_lite.store.sqlite import migrate_file

NVCF_LITE = str(Path(sys.executable).with_name("nvcf-lite"))


def make_source(data_dir: Path) -> None:
    asyncio.run(migrate_file(data_dir / "nvcf-lite.db"))
    (data_dir / "blobs" / "assets").mkdir(parents=True)
    (data_dir / "blobs" / "assets" / "a1").write_bytes(b"asset one")
    (data_dir / "signing.key").write_bytes(b"k" * 32)


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim" / "shadow"
    path.parent.mkdir()
    path.write_bytes(b"do not touch")
    path.chmod(0o640)
    return path


def unchanged(path: Path) -> bool:
    return path.read_bytes() == b"do not touch" and path.stat().st_mode & 0o777 == 0o640


def edit_manifest(bk: Path, rel: str, new_rel: str) -> None:
    manifest = json.loads((bk / "manifest.json").read_text())
    manifest["files"][new_rel] = manifest["files"].pop(rel)
    (bk / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def bk(tmp_path: Path) -> Path:
    make_source(tmp_path / "src")
    backup.create(tmp_path / "src", tmp_path / "bk", "test")
    return tmp_path / "bk"


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_a_manifest_path_outside_the_backup_is_refused(tmp_path: Path, bk: Path, how: str) -> None:
    target = victim(tmp_path)
    (bk / "signing.key").unlink()  # the file is "found" only through the hostile key
    key = str(target) if how == "absolute" else "../victim/shadow"
    edit_manifest(bk, "signing.key", key)
    dst = tmp_path / "dst"
    with pytest.raises(backup.BackupError, match="is absolute or leaves the backup: refused"):
        restore.restore(bk, dst)
    assert unchanged(target)
    assert not (dst / "nvcf-lite.db").exists()
    assert [p.name for p in dst.iterdir()] == ["server.lock"]  # no staging left behind


def test_a_manifest_path_outside_the_known_places_is_refused(tmp_path: Path, bk: Path) -> None:
    (bk / "signing.key").rename(bk / "config.toml")
    edit_manifest(bk, "signing.key", "config.toml")
    with pytest.raises(backup.BackupError, match=r"'config\.toml' is not a file a backup holds"):
        restore.restore(bk, tmp_path / "dst")


@pytest.mark.parametrize("as_archive", [False, True])
def test_a_symlinked_file_in_a_backup_is_refused(
    tmp_path: Path, bk: Path, as_archive: bool
) -> None:
    target = victim(tmp_path)
    (bk / "signing.key").unlink()
    (bk / "signing.key").symlink_to(target)
    src = bk
    if as_archive:
        src = tmp_path / "bk.tgz"
        with tarfile.open(src, "w:gz") as tar:
            for entry in sorted(bk.iterdir()):
                tar.add(entry, arcname=entry.name)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "nvcf-lite.db").write_bytes(b"current")
    refusal = "not a file or folder" if as_archive else "signing.key in the backup is a symbolic"
    with pytest.raises(backup.BackupError, match=refusal):
        restore.restore(src, dst, force=True)
    assert unchanged(target)
    assert (dst / "nvcf-lite.db").read_bytes() == b"current"
    assert not (dst / "signing.key").exists() and not (dst / "backups").exists()


def test_backup_copies_exactly_the_inputs_of_pending_requests(tmp_path: Path) -> None:
    """A request that finished while the backup ran (its folder gone, the DB copy still has
    it queued) is listed as missing and said so at backup and at restore."""
    src = tmp_path / "a" / "data"
    make_source(src)
    for rid, state in [("q1", "queued"), ("l1", "leased"), ("d1", "done"), ("gone", "queued")]:
        add_request(src, rid, state, ["a1"])
        if rid != "gone":
            (src / "inf" / "inputAssets" / rid).mkdir(parents=True)
            os.link(src / "blobs/assets/a1", src / "inf" / "inputAssets" / rid / "a1")
    (src / "inf" / "inputAssets" / "stray").mkdir()
    (src / "inf" / "inputAssets" / "stray" / "x").write_bytes(b"no request")
    env = {
        "PATH": "/usr/bin:/bin",
        "NVCF_LITE_SYSTEM_CONFIG": str(tmp_path / "none.toml"),
        "NVCF_LITE_STORE__DATA_DIR": str(src),
    }
    made = subprocess.run(
        [NVCF_LITE, "backup", str(tmp_path / "bk")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert "input assets of request gone (inf/inputAssets/gone) were gone" in made.stdout
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    inputs = sorted(r for r in manifest["files"] if r.startswith("inf/"))
    assert inputs == ["inf/inputAssets/l1/a1", "inf/inputAssets/q1/a1"]
    assert manifest["missing"] == ["inf/inputAssets/gone"]
    env["NVCF_LITE_STORE__DATA_DIR"] = str(tmp_path / "b" / "data")
    done = subprocess.run(
        [NVCF_LITE, "restore", str(tmp_path / "bk")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "runs it again with an empty asset folder" in done.stdout
    restored = sorted(p.name for p in (tmp_path / "b/data/inf/inputAssets").iterdir())
    assert restored == ["l1", "q1"]


def snapshot(data_dir: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file below data_dir but the lock: bytes, mode and inode."""
    out = {}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path.name != "server.lock":
            st = path.stat()
            out[path.relative_to(data_dir).as_posix()] = (path.read_bytes(), st.st_mode, st.st_ino)
    return out


@pytest.mark.parametrize("fail_at", [1, 3, 7, 8, 10])  # 7 set aside, 3 moved in
def test_a_forced_restore_failing_midway_leaves_the_data_dir_as_it_was(
    tmp_path: Path, bk: Path, fail_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = tmp_path / "dst"
    make_source(dst)
    (dst / "blobs" / "assets" / "old").write_bytes(b"old asset")
    (dst / "inf" / "inputAssets" / "r9").mkdir(parents=True)
    (dst / "inf" / "inputAssets" / "r9" / "in").write_bytes(b"old input")
    (dst / "inf" / "response" / "r9").mkdir(parents=True)
    (dst / "secrets" / "i1").mkdir(parents=True)
    (dst / "secrets" / "i1" / "secrets.json").write_text("{}")
    (dst / "nvcf-lite.db-wal").write_bytes(b"")
    before = snapshot(dst)
    real, calls = os.replace, []

    def failing(src: object, target: object) -> None:
        calls.append(target)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device (injected)")
        real(src, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(backup.BackupError, match=r"restore failed midway .*injected.*as it was"):
        restore.restore(bk, dst, force=True)
    monkeypatch.undo()
    assert len(calls) == 2 * fail_at - 1  # each move done before the failure was undone
    assert snapshot(dst) == before
    assert (dst / "inf" / "response" / "r9").is_dir()
    assert not list((dst / "backups").glob("replaced-*"))
    assert sorted(p.name for p in dst.iterdir() if p.name.startswith(".restore-")) == []
    _, replaced = restore.restore(bk, dst, force=True)  # and it works once the disk is fine
    assert replaced is not None and (replaced / "inf/inputAssets/r9/in").is_file()
    assert not (replaced / "secrets").exists() and not (dst / "inf/response").exists()
    assert (dst / "blobs/assets/a1").read_bytes() == b"asset one"
    assert not (dst / "blobs/assets/old").exists() and not (dst / "nvcf-lite.db-wal").exists()
