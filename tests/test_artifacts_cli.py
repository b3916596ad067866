"""`nvcf-lite models|resources push|list|show|remove` (issue #16): the model store written from
the command line into the server's data_dir; a running server sees it at once.

The verb runs as `python -m nvcf_lite` of this checkout, in a fresh directory, with
`$NVCF_LITE_SYSTEM_CONFIG` pointing at a missing file (as in test_cli).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from artifact_support import ROOT, make_tree, sha256, store_path
from conftest import bearer, make_config
from litestar.testing import TestClient


def nvcf_lite(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "NVCF_LITE_SYSTEM_CONFIG": str(tmp_path / "no-system-config.toml"),
        "NVCF_LITE_STORE__DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [sys.executable, "-m", "nvcf_lite", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_push_list_show_and_remove_from_the_command_line(tmp_path: Path) -> None:
    ok(nvcf_lite(tmp_path, "migrate"))
    src = make_tree(tmp_path / "resnet", {"1/model.onnx": b"onnx", "labels.txt": b"cat\ndog\n"})
    pushed = ok(nvcf_lite(tmp_path, "models", "push", "resnet", "1", str(src)))
    assert "nvcf-lite://models/resnet/1" in pushed and "2 file(s)" in pushed
    assert ok(nvcf_lite(tmp_path, "models", "list")).splitlines() == pushed.splitlines()
    assert ok(nvcf_lite(tmp_path, "resources", "list")) == ""
    shown = ok(nvcf_lite(tmp_path, "models", "show", "resnet", "1")).splitlines()
    assert [(line.split()[0], line.split()[-1]) for line in shown] == [
        (sha256(b"onnx"), "1/model.onnx"),
        (sha256(b"cat\ndog\n"), "labels.txt"),
    ]
    again = nvcf_lite(tmp_path, "models", "push", "resnet", "1", str(src))
    assert again.returncode == 1 and "already in the store" in again.stderr
    assert "removed model resnet 1" in ok(nvcf_lite(tmp_path, "models", "remove", "resnet", "1"))
    assert ok(nvcf_lite(tmp_path, "models", "list")) == ""
    gone = nvcf_lite(tmp_path, "models", "remove", "resnet", "1")
    assert gone.returncode == 1 and "not in the store" in gone.stderr


def test_a_link_out_of_the_pushed_folder_is_refused(tmp_path: Path) -> None:
    ok(nvcf_lite(tmp_path, "migrate"))
    src = make_tree(tmp_path / "src", {"ok.txt": b"1"})
    (src / "passwd").symlink_to("/etc/passwd")
    done = nvcf_lite(tmp_path, "resources", "push", "r", "1", str(src))
    assert done.returncode == 1 and "symbolic link out of" in done.stderr
    assert ok(nvcf_lite(tmp_path, "resources", "list")) == ""


def test_without_a_database_the_store_verbs_refuse_and_create_nothing(tmp_path: Path) -> None:
    done = nvcf_lite(tmp_path, "models", "list")
    assert done.returncode == 2 and "no database at" in done.stderr
    assert not (tmp_path / "data" / "nvcf-lite.db").exists()


def test_a_running_server_sees_a_push_from_the_command_line(
    app_factory: Any, tmp_path: Path
) -> None:
    api: TestClient[Any] = app_factory(make_config(tmp_path / "data"))
    src = make_tree(tmp_path / "vocab", {"words": b"a b c"})
    ok(nvcf_lite(tmp_path, "resources", "push", "vocab", "2", str(src)))
    r = api.get(store_path("resource", "vocab", "2"), headers=bearer())
    assert r.status_code == 200, r.text
    assert [f["sha256"] for f in r.json()["artifact"]["files"]] == [sha256(b"a b c")]
