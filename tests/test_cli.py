"""The `nvcf-lite` command: help, config file resolution, which database a verb opened, keys,
migrate (with its pre-migrate snapshot), newer-schema refusal, and the serve lock.

Each test runs the installed executable in a fresh directory with `$NVCF_LITE_SYSTEM_CONFIG`
pointing at a file that does not exist, so an installed service's /etc/nvcf-lite/config.toml on
the test machine changes nothing (one test puts a "system" config there on purpose).
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from server_support import ServerProcess

from nvcf_lite.__main__ import _parser
from nvcf_lite.store.sqlite import _migrations, _split, latest_version

NVCF_LITE = str(Path(sys.executable).with_name("nvcf-lite"))
VERBS = ("serve", "migrate", "gpus", "keys", "backup", "restore")


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": "/usr/bin:/bin",
        "NVCF_LITE_SYSTEM_CONFIG": str(cwd / "no-system-config.toml"),
        **env,
    }
    return subprocess.run(
        [NVCF_LITE, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )


def in_data(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`run` with data_dir = tmp_path/data."""
    return run(tmp_path, *args, NVCF_LITE_STORE__DATA_DIR=str(tmp_path / "data"), **env)


def opened(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(config, database) from the line every verb prints on stderr."""
    match = re.search(r"^nvcf-lite: config (.+), database (\S+)$", done.stderr, re.M)
    assert match, done.stderr
    return match.group(1), match.group(2)


def test_help_lists_every_verb_and_explains_every_serve_flag(tmp_path: Path) -> None:
    top = run(tmp_path, "--help")
    assert top.returncode == 0
    (verbs,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(VERBS) <= set(verbs.choices)
    for choice in verbs._choices_actions:  # every verb, also those added later, has a summary
        assert choice.help, choice.dest
        assert re.search(rf"^\s+{choice.dest}\s+\S", top.stdout, re.M), choice.dest
    serve = run(tmp_path, "serve", "--help")
    assert serve.returncode == 0
    text = " ".join(serve.stdout.split())
    assert "--host HOST address to listen on (default: server.host, built-in 127.0.0.1" in text
    assert "--port PORT TCP port (default: server.port, built-in 8080)" in text
    assert "--config PATH config file (default: $NVCF_LITE_CONFIG, else the installed" in text
    assert "/etc/nvcf-lite/config.toml, else ./config.toml, else built-in defaults" in text
    version = run(tmp_path, "--version")
    assert version.returncode == 0 and re.fullmatch(r"nvcf-lite \d+\.\d+\.\d+\S*\n", version.stdout)


def test_config_is_found_like_a_daemons(tmp_path: Path) -> None:
    """--config, then $NVCF_LITE_CONFIG, then the installed service's file, then ./config.toml;
    the database each verb reports proves which file it read."""
    for name in ("flag", "env", "system", "local"):
        (tmp_path / f"{name}.toml").write_text(f'[store]\ndata_dir = "{tmp_path / name}"\n')
    (tmp_path / "config.toml").write_text((tmp_path / "local.toml").read_text())
    system = {"NVCF_LITE_SYSTEM_CONFIG": str(tmp_path / "system.toml")}
    env = {**system, "NVCF_LITE_CONFIG": str(tmp_path / "env.toml")}
    cases = [
        (("--config", "flag.toml", "migrate"), env, "flag", f"{tmp_path / 'flag.toml'} (--config)"),
        (("migrate", "--config", "flag.toml"), env, "flag", f"{tmp_path / 'flag.toml'} (--config)"),
        (("migrate",), env, "env", f"{tmp_path / 'env.toml'} ($NVCF_LITE_CONFIG)"),
        (("migrate",), system, "system", f"{tmp_path / 'system.toml'} (installed service"),
        (("migrate",), {}, "local", f"{tmp_path / 'config.toml'} (./config.toml)"),
    ]
    for args, environ, data, origin in cases:
        done = run(tmp_path, *args, **environ)
        assert done.returncode == 0, done.stderr
        config, database = opened(done)
        assert config.startswith(origin), (args, config)
        assert database == str(tmp_path / data / "nvcf-lite.db")
        assert (tmp_path / data / "nvcf-lite.db").is_file()
    (tmp_path / "config.toml").unlink()
    done = run(tmp_path, "migrate")
    assert opened(done) == ("none (built-in defaults)", str(tmp_path / "data" / "nvcf-lite.db"))


def test_admin_verbs_refuse_to_create_a_database(tmp_path: Path) -> None:
    """From a shell without the service's environment: no ./data, no key printed, exit 2."""
    for args in (
        ("keys", "create", "--scope", "all"),
        ("keys", "list"),
        ("keys", "revoke", "nvapi-abc"),
        ("keys", "token", "nvapi-abc"),
        ("backup", str(tmp_path / "bk")),
    ):
        done = run(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == ""  # no key that would never work
        assert opened(done) == ("none (built-in defaults)", str(tmp_path / "data/nvcf-lite.db"))
        assert f"no database at {tmp_path / 'data/nvcf-lite.db'}" in done.stderr
        assert "does not create one" in done.stderr
        assert "--config PATH or NVCF_LITE_CONFIG=PATH" in done.stderr
        assert "`nvcf-lite migrate`" in done.stderr
        assert sorted(os.listdir(tmp_path)) == [], args  # no data/, no signing.key


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    assert in_data(tmp_path, "migrate").returncode == 0
    fid = "3e4666bf-d5e5-4aa7-b8ce-cefe41c7568a"
    made = in_data(
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
    assert opened(made) == ("none (built-in defaults)", str(tmp_path / "data/nvcf-lite.db"))
    key = made.stdout.strip()
    assert key.startswith("nvapi-") and len(key) == 70
    assert not (tmp_path / "data" / "signing.key").exists()  # only `token` needs it
    listed = in_data(tmp_path, "keys", "list")
    assert listed.returncode == 0
    line = next(line for line in listed.stdout.splitlines() if key[:14] in line)
    assert "active" in line and "invoke_function,list_functions" in line
    assert f"function:{fid}/*" in line and key not in listed.stdout  # never the secret
    revoked = in_data(tmp_path, "keys", "revoke", key[:14])
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in in_data(tmp_path, "keys", "list").stdout
    again = in_data(tmp_path, "keys", "revoke", key[:14])
    assert again.returncode == 1 and "no active key" in again.stderr


def test_keys_create_rejects_unknown_scopes_and_bad_resources(tmp_path: Path) -> None:
    assert in_data(tmp_path, "migrate").returncode == 0
    bad = in_data(tmp_path, "keys", "create", "--scope", "do_everything")
    assert bad.returncode == 1 and "unknown scope" in bad.stderr
    bad = in_data(tmp_path, "keys", "create", "--scope", "invoke_function", "--function", "nope")
    assert bad.returncode == 1 and "invalid function resource" in bad.stderr


def test_migrate_reports_the_schema_version(tmp_path: Path) -> None:
    done = in_data(tmp_path, "migrate")
    assert done.returncode == 0
    assert f"at schema version {latest_version()}" in done.stdout
    assert (tmp_path / "data" / "nvcf-lite.db").exists()
    again = in_data(tmp_path, "migrate")  # nothing to do: no snapshot
    assert again.returncode == 0 and "snapshot" not in again.stdout
    assert not (tmp_path / "data" / "backups").exists()


def test_unknown_config_keys_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[server]\nprot = 1\n")
    done = in_data(tmp_path, "migrate")
    assert done.returncode == 2 and "server.prot" in done.stderr
    done = in_data(tmp_path, "--config", "missing.toml", "migrate")
    assert done.returncode == 2 and "does not exist" in done.stderr
    (tmp_path / "config.toml").unlink()
    done = in_data(tmp_path, "migrate", NVCF_LITE_SERVER__NOPE="1")
    assert done.returncode == 2 and "nope" in done.stderr


def old_database(path: Path, version: int) -> None:
    """A database as an older nvcf-lite left it: only the first `version` migrations, a key."""
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for number, sql in _migrations()[:version]:
        for statement in _split(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute(
        "INSERT INTO api_keys (key_id, key_prefix, key_hash, nca_id, scopes, resources,"
        " description, created_at) VALUES ('k1', 'nvapi-old', 'h', 'nca', '[]', '[]', 'old',"
        " '2026-01-01T00:00:00.000Z')"
    )
    conn.close()


def test_migrating_an_older_database_snapshots_it_first(tmp_path: Path) -> None:
    db = tmp_path / "data" / "nvcf-lite.db"
    old = latest_version() - 1
    old_database(db, old)
    refused = in_data(tmp_path, "keys", "list")  # admin verbs never migrate
    assert refused.returncode == 2
    assert f"schema version {old}, older than this nvcf-lite" in refused.stderr
    assert "run `nvcf-lite migrate`" in refused.stderr
    done = in_data(tmp_path, "migrate")
    assert done.returncode == 0, done.stderr
    assert f"at schema version {latest_version()}" in done.stdout
    (snapshot,) = (tmp_path / "data" / "backups").iterdir()
    assert re.fullmatch(
        rf"pre-migrate-{old:04d}-to-{latest_version():04d}-\d{{8}}T[\d.]+Z\.db", snapshot.name
    )
    assert f"snapshot of the database before migrating: {snapshot}" in done.stdout
    assert snapshot.stat().st_mode & 0o777 == 0o600
    conn = sqlite3.connect(snapshot)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == old
    assert conn.execute("SELECT description FROM api_keys").fetchall() == [("old",)]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert "k1" in in_data(tmp_path, "keys", "list").stdout  # the data went through


def test_a_database_from_a_newer_version_is_refused_by_every_verb(tmp_path: Path) -> None:
    assert in_data(tmp_path, "migrate").returncode == 0
    db = tmp_path / "data" / "nvcf-lite.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    for args in (
        ("migrate",),
        ("keys", "list"),
        ("keys", "create", "--scope", "all"),
        ("backup", str(tmp_path / "bk")),
        ("serve", "--port", "1"),
    ):
        done = in_data(tmp_path, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"database {db} is at schema version 99" in done.stderr, args
        assert f"newer than this nvcf-lite knows (schema version {latest_version()})" in done.stderr
        assert "Upgrade nvcf-lite, or restore a backup" in done.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99  # left as it was
    conn.close()
    assert not (tmp_path / "data" / "backups").exists() and not (tmp_path / "bk").exists()


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    env = {
        "NVCF_LITE_SYSTEM_CONFIG": str(tmp_path / "none.toml"),
        "NVCF_LITE_DOCKER__BASE_URL": "unix:///nonexistent/docker.sock",  # adopts nothing
        "NVCF_LITE_GPUS__USE_NVML": "false",
    }
    server = ServerProcess(tmp_path, env=env).start()
    try:
        pid = (tmp_path / "data" / "server.lock").read_text().strip()
        assert server.process is not None and pid == str(server.process.pid)
        second = in_data(tmp_path, "serve", "--port", "1")
        assert second.returncode == 2
        assert f"data_dir {tmp_path / 'data'} is in use by process {pid}" in second.stderr
        assert "stop that server first" in second.stderr
        bare = in_data(tmp_path)  # no verb is `serve`
        assert bare.returncode == 2 and f"in use by process {pid}" in bare.stderr
    finally:
        server.stop()
    # the lock went with the process; and no verb is `serve`
    with ServerProcess(tmp_path, env={**env, "PATH": "/usr/bin:/bin"}, bare=True) as bare:
        assert bare.call("GET", "/health")[0] == 200
        assert bare.process is not None and bare.process.poll() is None, bare.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo nvcf-lite migrate` has")
def test_root_leaves_a_service_users_files_to_that_user(tmp_path: Path) -> None:
    """`sudo nvcf-lite migrate|keys token` on the service's data_dir: the files it makes belong
    to the data_dir's owner, or the service could not open them next time."""
    data = tmp_path / "data"
    old_database(data / "nvcf-lite.db", latest_version() - 1)
    nobody = 65534
    os.chown(data, nobody, nobody)
    os.chown(data / "nvcf-lite.db", nobody, nobody)
    assert in_data(tmp_path, "migrate").returncode == 0
    (snapshot,) = (data / "backups").iterdir()
    made = in_data(tmp_path, "keys", "token", "k1")  # needs the signing key: makes it
    assert made.returncode == 0 and made.stdout.count(".") == 2, made.stderr  # a JWT
    for path in (data / "nvcf-lite.db", data / "backups", snapshot, data / "signing.key"):
        assert path.stat().st_uid == nobody, path
