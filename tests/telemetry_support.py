"""Helpers of the telemetry tests: request bodies, and a minimal OTLP/HTTP receiver.

`OtlpReceiver` stands in for an OpenTelemetry collector (Debian 12 packages none: `apt-cache
policy otelcol otelcol-contrib opentelemetry-collector` finds nothing). It is a stdlib HTTP
server on 127.0.0.1 that accepts what an OTLP/HTTP collector accepts on `/v1/logs` and
`/v1/metrics` (JSON encoding, spec'd by OTLP 1.x), records each body with its headers, and
answers 401 to a request without the expected `Authorization` header, like a collector with a
bearer-token authenticator. `fail_next` makes it answer 503 a number of times first (retries).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from conftest import bearer
from litestar.testing import TestClient

SECRET = "otel-token-never-shown"


def telemetry_body(**overrides: Any) -> dict[str, Any]:
    """A valid TelemetryRequest (ngcsdk 4.37's shape); a value of `...` removes the field."""
    out = {
        "endpoint": "https://otel.example.com:4318",
        "protocol": "HTTP",
        "provider": "OTEL_COLLECTOR",
        "types": ["LOGS", "METRICS"],
        "secret": {"name": f"otel-{uuid.uuid4().hex[:8]}", "value": SECRET},
        **overrides,
    }
    return {k: v for k, v in out.items() if v is not ...}


def create_telemetry(
    client: TestClient[Any], prefix: str = "/v2/nvcf", key: str | None = None, **overrides: Any
) -> dict[str, Any]:
    headers = bearer(key) if key else bearer()
    r = client.post(f"{prefix}/telemetries", json=telemetry_body(**overrides), headers=headers)
    assert r.status_code == 200, r.text
    made: dict[str, Any] = r.json()["telemetry"]
    return made


@dataclass
class Export:
    """One POST the receiver took: its path, headers (lower-case names) and decoded body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class OtlpReceiver:
    token: str = SECRET
    exports: list[Export] = field(default_factory=list)
    refused: list[Export] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        export = Export(path, headers, json.loads(raw) if raw else {})
        with self.lock:
            if headers.get("authorization") != f"Bearer {self.token}":
                self.refused.append(export)
                return 401
            if self.fail_next > 0:
                self.fail_next -= 1
                self.refused.append(export)
                return 503
            if path not in ("/v1/logs", "/v1/metrics"):
                return 404
            self.exports.append(export)
            return 200

    def of(self, path: str) -> list[Export]:
        with self.lock:
            return [e for e in self.exports if e.path == path]

    def log_records(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource attributes as a dict, log record) of every record received."""
        out = []
        for export in self.of("/v1/logs"):
            for rl in export.body["resourceLogs"]:
                attrs = attributes(rl["resource"])
                for sl in rl["scopeLogs"]:
                    out.extend((attrs, rec) for rec in sl["logRecords"])
        return out

    def metrics(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource attributes, metric) of every metric received, in arrival order."""
        out = []
        for export in self.of("/v1/metrics"):
            for rm in export.body["resourceMetrics"]:
                attrs = attributes(rm["resource"])
                for sm in rm["scopeMetrics"]:
                    out.extend((attrs, m) for m in sm["metrics"])
        return out


def attributes(holder: dict[str, Any]) -> dict[str, Any]:
    """OTLP `attributes` [{"key", "value": {"stringValue": ...}}] as a plain dict."""
    return {a["key"]: next(iter(a["value"].values())) for a in holder.get("attributes", [])}


def serve_receiver(receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    """Run `receiver` on an ephemeral 127.0.0.1 port until the generator is closed."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(self.path, headers, raw)
            body = b"{}"
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
