"""The `nvcf-lite` command: keys create/list/revoke, migrate, config errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NVCF_LITE = str(Path(sys.executable).with_name("nvcf-lite"))


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", "NVCF_LITE_STORE__DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run(
        [NVCF_LITE, *args], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    fid = "3e4666bf-d5e5-4aa7-b8ce-cefe41c7568a"
    made = run(
        tmp_path,
        "keys",
        "create",
        "--scope",
        "invoke_function,list_functions",
        "--function",
        fid,
        "--description",
        "ci",
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("nvapi-") and len(key) == 70
    listed = run(tmp_path, "keys", "list")
    assert listed.returncode == 0
    line = next(line for line in listed.stdout.splitlines() if key[:14] in line)
    assert "active" in line and "invoke_function,list_functions" in line
    assert f"function:{fid}/*" in line and key not in listed.stdout  # never the secret
    revoked = run(tmp_path, "keys", "revoke", key[:14])
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run(tmp_path, "keys", "list").stdout
    again = run(tmp_path, "keys", "revoke", key[:14])
    assert again.returncode == 1 and "no active key" in again.stderr


def test_keys_create_rejects_unknown_scopes_and_bad_resources(tmp_path: Path) -> None:
    bad = run(tmp_path, "keys", "create", "--scope", "do_everything")
    assert bad.returncode == 1 and "unknown scope" in bad.stderr
    bad = run(tmp_path, "keys", "create", "--scope", "invoke_function", "--function", "nope")
    assert bad.returncode == 1 and "invalid function resource" in bad.stderr


def test_migrate_reports_the_schema_version(tmp_path: Path) -> None:
    done = run(tmp_path, "migrate")
    assert done.returncode == 0 and "schema version" in done.stdout
    assert (tmp_path / "data" / "nvcf-lite.db").exists()


def test_unknown_config_keys_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[server]\nprot = 1\n")
    done = run(tmp_path, "migrate")
    assert done.returncode == 2 and "server.prot" in done.stderr
    done = run(tmp_path, "--config", "missing.toml", "migrate")
    assert done.returncode == 2 and "does not exist" in done.stderr
    (tmp_path / "config.toml").unlink()
    done = run(tmp_path, "migrate", NVCF_LITE_SERVER__NOPE="1")
    assert done.returncode == 2 and "nope" in done.stderr
