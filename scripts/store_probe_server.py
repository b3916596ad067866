"""A function server that reports what the model store mounted into its container (stdlib only).

The model store tests push this file as a resource and run it from its mount
(`python3 /config/resources/<name>/store_probe_server.py`), or name it in `models.default_args`
for a model-only function. It listens on 0.0.0.0:8000:

- `GET /health` answers 200.
- `POST /probe` answers `{"argv": [...], "files": {path: sha256}, "writeError": "..."}`: its
  own command line, every file below /config with the sha256 of its bytes, and the error a
  write into a mounted model tree got (none if the write worked, which a read-only mount forbids).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = "/config"


def _files() -> dict[str, str]:
    out = {}
    for folder, _, names in os.walk(ROOT):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, ROOT)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _write_error() -> str:
    """The error a write into the first mounted model tree (/config/models/<name>) got."""
    models = os.path.join(ROOT, "models")
    names = sorted(os.listdir(models)) if os.path.isdir(models) else []
    if not names:
        return "no model is mounted under /config/models"
    try:
        with open(os.path.join(models, names[0], "written-by-the-container"), "w") as f:
            f.write("x")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/health" else 404, b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        report = {"argv": sys.argv, "files": _files(), "writeError": _write_error()}
        self._answer(200, json.dumps(report).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
