"""A stdlib-only HTTP/1.1 function server: the one program behind every nvcf-lite test image.

It plays an NVCF function container (spec section 4): an inference endpoint on any path, a health
endpoint, progress and large-output files, SSE streams and OpenAI-style chat completions.
Behaviour is chosen by environment variables, so each test image is this file plus an ENV:

    PORT            listen port (default 8000)
    HEALTH_PATH     health path (default /health); /v2/health/ready always answers too
    READY_DELAY_S   health answers 503 until this many seconds after start
    FAIL_HEALTH=1   health always answers 500
    CRASH_AFTER_S   the process exits with code 3 after this many seconds
    EXIT_AT_START   the process exits at once with this code

Any request that is not a health probe is echoed back as JSON (`method`, `path`, `query`,
`rawQuery`, `headers`, `body`, `bodySha256`, `bodySize`, `env`, `hostname`). A JSON object body
may hold control fields, applied in this order:

    log                a line to print to stderr first, as "function_server: <NVCF-REQID>:
                       <log>" (tests of `nvcf-lite logs` see it arrive)
    recordTo           a path under /var/inf: append "<NVCF-REQID>\n" to it (tests count
                       how often each request reached a container)
    crash              the process exits at once (code 7) without answering
    delay              seconds to sleep first
    progress           [{"progress": int, "partialResponse": {...}, "sleep": s}, ...] written in
                       order to <NVCF-LARGE-OUTPUT-DIR>/progress (temp file + rename)
    largeOutputFiles   {name: size in bytes | text} written into NVCF-LARGE-OUTPUT-DIR
                       (`<name>.partial`, then renamed)
    status             answer this status with {"error": errorMessage or "boom"}
    responseBytes      answer that many bytes (application/octet-stream, a repeating 0..255
                       pattern; header X-Body-Sha256)
    messages / stream  OpenAI chat completion (also on POST /v1/chat/completions)
    stream             SSE (also on Accept: text/event-stream): `events` (default 5) events
                       `data: {"i": n}` every `interval` s (default 0.2), then `data: [DONE]`
    readAssets         add {"assets": {id: {"sha256", "size", "path"}}} for NVCF-FUNCTION-ASSET-IDS
    readSecrets        add {"secrets": <parsed /var/secrets/secrets.json or {"error": ...}>}
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

STARTED_AT = time.monotonic()
HEALTH_PATHS = frozenset({os.environ.get("HEALTH_PATH", "/health"), "/v2/health/ready"})
READY_DELAY_S = float(os.environ.get("READY_DELAY_S", "0") or 0)
FAIL_HEALTH = os.environ.get("FAIL_HEALTH", "") == "1"
SECRETS_FILE = "/var/secrets/secrets.json"
HOSTNAME = socket.gethostname()
PATTERN = bytes(range(256)) * 256  # 64 KiB block for responseBytes
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
Json = Any


class FunctionHandler(BaseHTTPRequestHandler):
    """Answers one keep-alive connection; every response is written with a single send."""

    protocol_version = "HTTP/1.1"
    server_version = "nvcf-lite-test-function/1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in one write, but SSE chunks must not wait for Nagle.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging (and no reverse DNS lookups)."""

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write("function_server: " + (format % args) + "\n")

    # Every method goes through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, head: bool = False) -> None:
        try:
            raw = self._read_body()
            url = urlsplit(self.path)
            if url.path in HEALTH_PATHS:
                self._health(head)
            else:
                self._invoke(url.path, url.query, raw, head)
        except ConnectionError:
            self.close_connection = True
        except Exception as exc:  # a bug here must not kill the connection silently
            self.log_error("%s on %s %s: %r", type(exc).__name__, self.command, self.path, exc)
            self._send_json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(65537)

    # Responses -----------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        reason = REASONS.get(status) or self.responses.get(status, ("Status",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head_bytes if head else head_bytes + body)

    def _send_json(self, status: int, doc: Json, head: bool = False) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self._send(status, body, "application/json", head=head)

    def _start_stream(self) -> None:
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    # Endpoints -----------------------------------------------------------------------------

    def _health(self, head: bool) -> None:
        if FAIL_HEALTH:
            self._send_json(500, {"status": "failing"}, head)
        elif time.monotonic() - STARTED_AT < READY_DELAY_S:
            self._send_json(503, {"status": "starting"}, head)
        else:
            self._send_json(200, {"status": "ready"}, head)

    def _invoke(self, path: str, query: str, raw: bytes, head: bool) -> None:
        body = _decode(raw)
        ctl: dict[str, Json] = body if isinstance(body, dict) else {}
        if ctl.get("log"):
            request_id = self.headers.get("NVCF-REQID", "-")
            sys.stderr.write(f"function_server: {request_id}: {ctl['log']}\n")
            sys.stderr.flush()
        if ctl.get("recordTo"):
            _record(str(ctl["recordTo"]), self.headers.get("NVCF-REQID", "-"))
        if ctl.get("crash"):
            sys.stderr.write("function_server: crash requested: exiting with code 7\n")
            sys.stderr.flush()
            os._exit(7)
        if ctl.get("delay"):
            time.sleep(float(ctl["delay"]))
        out_dir = self.headers.get("NVCF-LARGE-OUTPUT-DIR")
        if (ctl.get("progress") or ctl.get("largeOutputFiles")) and not out_dir:
            self._send_json(400, {"error": "progress/largeOutputFiles need NVCF-LARGE-OUTPUT-DIR"})
            return
        if ctl.get("progress") and out_dir:
            _write_progress(out_dir, self.headers.get("NVCF-REQID", ""), ctl["progress"])
        written = None
        if ctl.get("largeOutputFiles") and out_dir:
            written = _write_large_output(out_dir, ctl["largeOutputFiles"])
        if ctl.get("status"):
            self._send_json(int(ctl["status"]), {"error": ctl.get("errorMessage") or "boom"}, head)
        elif ctl.get("responseBytes") is not None:
            self._send_bytes(int(ctl["responseBytes"]), head)
        elif path == "/v1/chat/completions" or "messages" in ctl:
            self._chat(ctl, head)
        elif ctl.get("stream") is True or "text/event-stream" in self.headers.get("Accept", ""):
            self._sse(int(ctl.get("events", 5)), float(ctl.get("interval", 0.2)))
        else:
            doc = self._echo(path, query, raw, body)
            if written is not None:
                doc["largeOutput"] = written
            if ctl.get("readAssets"):
                doc["assets"] = self._assets()
            if ctl.get("readSecrets"):
                doc["secrets"] = _read_secrets()
            self._send_json(200, doc, head)

    def _echo(self, path: str, query: str, raw: bytes, body: Json) -> dict[str, Json]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return {
            "method": self.command,
            "path": path,
            "query": dict(parse_qsl(query, keep_blank_values=True)),
            "rawQuery": query,
            "headers": headers,
            "body": body,
            "bodySha256": hashlib.sha256(raw).hexdigest(),
            "bodySize": len(raw),
            "env": {k: v for k, v in os.environ.items() if k.startswith("NVCF_")},
            "hostname": HOSTNAME,
        }

    def _send_bytes(self, size: int, head: bool) -> None:
        reps, rest = divmod(size, len(PATTERN))
        body = PATTERN * reps + PATTERN[:rest]
        extra = {"X-Body-Sha256": hashlib.sha256(body).hexdigest()}
        self._send(200, body, "application/octet-stream", extra, head)

    def _sse(self, events: int, interval: float) -> None:
        self._start_stream()
        for i in range(events):
            if i:
                time.sleep(interval)
            self._chunk(b'data: {"i": %d}\n\n' % i)
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _chat(self, req: dict[str, Json], head: bool) -> None:
        content = "echo: " + _last_user_message(req.get("messages") or [])
        model = str(req.get("model") or "echo")
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
        streaming = req.get("stream") is True
        if not streaming:
            prompt = sum(len(_text(m.get("content")).split()) for m in req.get("messages") or [])
            done = len(content.split())
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
            usage = {"prompt_tokens": prompt, "completion_tokens": done}
            usage["total_tokens"] = prompt + done
            doc = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            self._send_json(200, doc, head)
            return
        self._start_stream()
        words = content.split(" ")
        deltas: list[dict[str, str]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        for delta in [*deltas, {}]:
            choice = {"index": 0, "delta": delta, "finish_reason": None if delta else "stop"}
            chunk = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            self._chunk(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _assets(self) -> dict[str, Json]:
        asset_dir = self.headers.get("NVCF-ASSET-DIR", "")
        ids = [i.strip() for i in self.headers.get("NVCF-FUNCTION-ASSET-IDS", "").split(",")]
        found: dict[str, Json] = {}
        for asset_id in filter(None, ids):
            path = os.path.join(asset_dir, asset_id)
            try:
                found[asset_id] = {**_file_digest(path), "path": path}
            except OSError as exc:
                found[asset_id] = {"error": f"{type(exc).__name__}: {exc}", "path": path}
        return found


def _decode(raw: bytes) -> Json:
    """The body as JSON when it parses, else as text."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _text(content: Json) -> str:
    """Text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _last_user_message(messages: list[Json]) -> str:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return _text(users[-1].get("content")) if users else ""


def _record(path: str, request_id: str) -> None:
    target = os.path.normpath(path)
    if not target.startswith("/var/inf/"):
        raise ValueError(f"recordTo must be a path under /var/inf, got {path!r}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "a") as f:  # one short O_APPEND write per request: lines never mix
        f.write(request_id + "\n")


def _atomic_write(path: str, data: bytes, tmp_path: str) -> None:
    with open(tmp_path, "wb") as f:
        f.write(data)
    os.replace(tmp_path, path)


def _write_progress(out_dir: str, request_id: str, steps: list[Json]) -> None:
    """Writes each progress step to <out_dir>/progress, sleeping after each as asked."""
    for step in steps:
        doc = {
            "id": request_id,
            "progress": step.get("progress", 0),
            "partialResponse": step.get("partialResponse", {}),
        }
        target = os.path.join(out_dir, "progress")
        _atomic_write(target, json.dumps(doc).encode(), os.path.join(out_dir, ".progress.tmp"))
        if step.get("sleep"):
            time.sleep(float(step["sleep"]))


def _write_large_output(out_dir: str, files: dict[str, Json]) -> dict[str, Json]:
    """Writes each file as <name>.partial, renamed when complete; returns sizes and digests."""
    written: dict[str, Json] = {}
    for name, spec in files.items():
        path = os.path.normpath(os.path.join(out_dir, name))
        if not path.startswith(os.path.normpath(out_dir) + os.sep):
            raise ValueError(f"largeOutputFiles name escapes the output dir: {name!r}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        digest = hashlib.sha256()
        with open(path + ".partial", "wb") as f:
            if isinstance(spec, int):
                left = spec
                while left > 0:
                    block = PATTERN[: min(left, len(PATTERN))]
                    f.write(block)
                    digest.update(block)
                    left -= len(block)
            else:
                data = str(spec).encode()
                f.write(data)
                digest.update(data)
            size = f.tell()
        os.replace(path + ".partial", path)
        written[name] = {"size": size, "sha256": digest.hexdigest()}
    return written


def _file_digest(path: str) -> dict[str, Json]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "size": size}


def _read_secrets() -> Json:
    try:
        with open(SECRETS_FILE, "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


class FunctionServer(ThreadingHTTPServer):
    """ThreadingHTTPServer without the reverse DNS lookup at bind time and with a deep backlog."""

    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _crash_later(after_s: float) -> None:
    def crash() -> None:
        sys.stderr.write(f"function_server: CRASH_AFTER_S={after_s}: crashing with exit code 3\n")
        sys.stderr.flush()
        os._exit(3)

    timer = threading.Timer(after_s, crash)
    timer.daemon = True
    timer.start()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # As PID 1 in a container, SIGTERM is ignored unless handled: `docker stop` would take 10 s.
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    exit_code = os.environ.get("EXIT_AT_START")
    if exit_code:
        sys.stderr.write(f"function_server: EXIT_AT_START={exit_code}: exiting at start\n")
        sys.exit(int(exit_code))
    if os.environ.get("CRASH_AFTER_S"):
        _crash_later(float(os.environ["CRASH_AFTER_S"]))
    port = int(os.environ.get("PORT", "8000"))
    server = FunctionServer(("0.0.0.0", port), FunctionHandler)
    sys.stderr.write(f"function_server: listening on :{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
