"""The first-start admin key in a JSON log: one JSON line that carries the key (the one
deliberate exception to redaction), and every other line stays JSON."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from server_support import ServerProcess

KEY = re.compile(r"nvapi-[A-Za-z0-9_-]{64}")


def test_a_json_log_shows_the_first_admin_key_as_one_json_line(tmp_path: Path) -> None:
    env = {
        "NVCF_LITE_AUTH__BOOTSTRAP_KEY": "",
        "NVCF_LITE_SERVER__LOG_FORMAT": "json",
        "NVCF_LITE_DOCKER__NAMESPACE": f"test-{uuid.uuid4().hex[:10]}",
    }
    server = ServerProcess(tmp_path / "server", env).start()
    try:
        status, _, _ = server.call("GET", "/v2/nvcf/functions")
        assert status == 401  # the configured test key is not there: only the new one works
        server.stop()
        lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
        docs = [json.loads(line) for line in lines]  # every line is JSON
        (shown,) = [d for d in docs if KEY.search(json.dumps(d))]
        key = shown["admin_key"]
        assert KEY.fullmatch(key) and key in next(x for x in lines if KEY.search(x))
        server.start()
        status, _, _ = server.call(
            "GET", "/v2/nvcf/functions", headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 200
    finally:
        server.kill()
