"""Function secrets are sealed at rest (store/sealing.py): the database holds none in plain text,
the key lives beside it in a 0600 file, a value opens only for the row it was sealed for, and
secrets stored in plain text by an older server are sealed at the next start."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, call
from function_support import BODY, PLAIN, create
from litestar.testing import TestClient

from nvcf_lite.store.sealing import KEY_FILE, PREFIX, SealBroken, SecretBox

VALUE = "s3cr3t-value-that-must-never-be-on-disk"
OBJECT_VALUE = {"password": "another-secret-in-an-object"}
SECRETS = [{"name": "TOKEN", "value": VALUE}, {"name": "conf.json", "value": OBJECT_VALUE}]


def data_bytes(data_dir: Path) -> bytes:
    """Every byte of every file under data_dir except the key file itself."""
    return b"".join(
        p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file() and p.name != KEY_FILE
    )


def test_a_sealed_value_opens_only_with_its_key_and_its_context() -> None:
    box = SecretBox(bytes(range(32)))
    sealed = box.seal(b"hello", "function-secrets:v1")
    assert sealed.startswith(PREFIX) and "hello" not in sealed
    assert box.seal(b"hello", "function-secrets:v1") != sealed  # a fresh nonce each time
    assert box.open(sealed, "function-secrets:v1") == b"hello"
    with pytest.raises(SealBroken, match=r"secrets\.key"):
        box.open(sealed, "function-secrets:v2")  # copied onto another row
    with pytest.raises(SealBroken):
        SecretBox(bytes(32)).open(sealed, "function-secrets:v1")  # another key
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealBroken):
        box.open(tampered, "function-secrets:v1")
    with pytest.raises(SealBroken):
        box.open(PREFIX + "not base64!", "function-secrets:v1")
    assert box.open('{"A": "plain"}', "function-secrets:v1") == b'{"A": "plain"}'  # legacy


def test_the_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = SecretBox.in_data_dir(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert len((tmp_path / KEY_FILE).read_bytes()) == 32
    again = SecretBox.in_data_dir(tmp_path)
    assert again.open(first.seal(b"x", "c"), "c") == b"x"


def test_no_secret_value_is_in_the_database_or_the_data_dir(
    client: TestClient[Any], tmp_path: Path
) -> None:
    fn = create(client, {**BODY, "secrets": SECRETS})
    path = f"{PLAIN}/secrets/functions/{fn['id']}/versions/{fn['versionId']}"
    update = {"secrets": [{"name": "TOKEN", "value": VALUE + "-2"}]}
    assert client.put(path, json=update, headers=bearer()).status_code == 204
    data = tmp_path / "data"
    blob = data_bytes(data)
    assert b"nvcf-lite.db" in b"".join(p.name.encode() for p in data.iterdir())
    for secret in (VALUE, OBJECT_VALUE["password"]):
        assert secret.encode() not in blob
    # ... and yet the server reads them back (what the containers get)
    got = client.app.state.platform.functions.secrets
    assert call(client, got, fn["versionId"]) == {"TOKEN": VALUE + "-2", "conf.json": OBJECT_VALUE}


def test_plain_text_secrets_of_an_older_server_are_sealed_at_start(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    client = app_factory()
    fn = create(client, {**BODY, "secrets": SECRETS})
    client.__exit__(None, None, None)
    db = tmp_path / "data" / "nvcf-lite.db"
    plain = json.dumps({"TOKEN": VALUE, "conf.json": {"password": "p"}})
    with sqlite3.connect(db) as conn:  # as a server before sealing stored them
        conn.execute("UPDATE function_secrets SET secrets = ?", (plain,))
    again = app_factory()
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT secrets FROM function_secrets").fetchone()
    assert stored.startswith(PREFIX) and VALUE not in stored
    got = call(again, again.app.state.platform.functions.secrets, fn["versionId"])
    assert got == {"TOKEN": VALUE, "conf.json": {"password": "p"}}
