"""A webhook receiver for the live tests: an HTTP server on 127.0.0.1 in the test's process
that keeps every POST (headers and raw body) and answers 500 to the first `fail` of them (or
to all while `down`), and the README's `verify` snippet to check their signatures with.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_verify() -> Any:
    """The README's `verify` (the block after `<!-- webhook-verify -->`), run as it is."""
    match = re.search(r"<!-- webhook-verify -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README lost its webhook verification snippet"
    space: dict[str, Any] = {}
    exec(compile(match.group(1), "README.md", "exec"), space)
    return space["verify"]


@dataclass
class Post:
    status: int  # what the receiver answered
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.down = False
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    failing = receiver.down or receiver.fail > 0
                    receiver.fail -= 1 if receiver.fail > 0 else 0
                    status = 500 if failing else 204
                    receiver.posts.append(Post(status, dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of(self, request_id: str) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if p.headers.get("NVCF-REQID") == request_id]

    def delivered(self, request_id: str) -> list[Post]:
        return [p for p in self.of(request_id) if p.status < 300]
