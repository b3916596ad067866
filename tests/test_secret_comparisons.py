"""Key material and signed URLs are compared in constant time (issue #14): an API key is never
compared at all, only its SHA-256 looked up (the database holds no key); a bearer token's MAC
and a signed URL's signature go through hmac.compare_digest, never `==`."""

from __future__ import annotations

import ast
import inspect
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

from conftest import ADMIN_KEY, bearer
from litestar.testing import TestClient

from nvcf_lite.domain import signing, tokens
from nvcf_lite.domain.auth import hash_key


def _calls(function: Any) -> set[str]:
    """The names a function calls."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }


def test_signatures_and_token_macs_are_compared_with_compare_digest() -> None:
    for checker in (signing.Signer.verify, tokens.TokenSigner.claims):
        assert "compare_digest" in _calls(checker), checker.__qualname__


def test_the_database_holds_key_hashes_not_keys(client: TestClient[Any], tmp_path: Path) -> None:
    assert client.get("/v2/nvcf/functions", headers=bearer()).status_code == 200
    db = sqlite3.connect(tmp_path / "data" / "nvcf-lite.db")
    try:
        rows = db.execute("SELECT key_hash, key_prefix FROM api_keys").fetchall()
    finally:
        db.close()
    assert (hash_key(ADMIN_KEY), ADMIN_KEY[:14]) in rows
    blob = (tmp_path / "data" / "nvcf-lite.db").read_bytes()
    assert ADMIN_KEY.encode() not in blob  # looked up by hash: nothing to compare
