"""Helpers shared by the backup and restore tests (test_backup_live, test_backup_restore_safety)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def add_request(data_dir: Path, request_id: str, state: str, assets: list[str]) -> None:
    """A request row in data_dir's database, as the durable queue writes it."""
    with sqlite3.connect(data_dir / "nvcf-lite.db") as conn:
        conn.execute(
            "INSERT INTO requests (request_id, function_id, version_id, nca_id, key_id, state,"
            " method, path, headers, body, poll_seconds, mode, assets, accepted_at)"
            " VALUES (?, 'f', 'v', 'n', 'k', ?, 'POST', '/', '[]', x'', 5, 'pexec', ?, 0)",
            (request_id, state, json.dumps(assets)),
        )
    conn.close()
