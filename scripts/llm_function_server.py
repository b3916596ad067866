"""A stdlib-only, deterministic OpenAI-compatible server: the `nvcf-lite-test/llm` test image.

It plays an LLM function container (a NIM or vLLM stand-in) for the gateway's tests and
scripts/bench_gateway.py. No model: the answer to a prompt is its words echoed back, one
token per word, so a test knows every token and count in advance.

    PORT             listen port (default 8000)
    MODEL_NAME       the id /v1/models lists (default "test-llm")
    TOKEN_DELAY_S    seconds between streamed tokens (default 0)

    GET  /health, /v2/health/ready       200
    GET  /v1/models                      {"object": "list", "data": [{"id": MODEL_NAME, ...}]}
    POST /v1/chat/completions            the last message's words, prefixed by "echo:"
    POST /v1/completions                 the prompt's words, prefixed by "echo:"
    POST /v1/embeddings                  an 8-float vector per input (from its SHA-256)
    POST /gate/{name}                    opens the gate {name} (see `gate` below)
    POST /custom/...                     the same as /v1/... (for llmConfig.uris tests)

Request fields honoured: `max_tokens` (the answer stops there, finish_reason "length"),
`min_tokens` (vLLM's: the words repeat until the answer has that many), `stream` (SSE, one
chunk per token, `data: [DONE]` last; the last choice chunk carries `usage`, as NIM sends it),
and two test-only fields: `token_delay_s` (overrides TOKEN_DELAY_S) and `gate` (a name: after
the first streamed token the stream waits, up to 30 s, until POST /gate/{name} arrives, so a
test can prove the first chunk left before the stream ended without timing anything).
Usage: prompt_tokens = words of every message (or the prompt), completion_tokens = tokens sent.
Every answer carries `X-Served-Path`: the path it was asked on, and those to completions and
embeddings `X-Served-Seq`: the how-manieth such call it is (the order the container saw).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = os.environ.get("MODEL_NAME", "test-llm")
TOKEN_DELAY_S = float(os.environ.get("TOKEN_DELAY_S", "0") or 0)
HEALTH = {"/health", "/v2/health/ready"}
GATE_WAIT_S = 30.0
_gates: dict[str, threading.Event] = {}
_gates_lock = threading.Lock()
_served = [0]  # completions and embeddings begun so far (X-Served-Seq)
Json = Any


def gate(name: str) -> threading.Event:
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


def words(text: Any) -> list[str]:
    if isinstance(text, list):  # content parts
        text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
    return str(text or "").split()


def answer_tokens(prompt: list[str], body: Json) -> tuple[list[str], str]:
    """The tokens of the answer and its finish_reason."""
    base = ["echo:", *prompt]
    tokens = list(base)
    least = int(body.get("min_tokens") or 0)
    while len(tokens) < least:
        tokens.append(base[len(tokens) % len(base)])
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(limit, int) and 0 < limit < len(tokens):
        return tokens[:limit], "length"
    return tokens, "stop"


def pieces(tokens: list[str]) -> list[str]:
    return [t if i == 0 else " " + t for i, t in enumerate(tokens)]


def embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255.0, 6) for b in digest[:8]]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nvcf-lite-test-llm/1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in HEALTH:
            self._json(200, {"status": "ok"})
        elif path.endswith("/models"):
            item = {"id": MODEL, "object": "model", "created": 0, "owned_by": "nvcf-lite-test"}
            self._json(200, {"object": "list", "data": [item]})
        else:
            self._error(404, f"no route {path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?", 1)[0]
        if path.startswith("/gate/"):
            gate(path.removeprefix("/gate/")).set()
            self._json(200, {"opened": path.removeprefix("/gate/")})
            return
        with _gates_lock:
            _served[0] += 1
            self.seq = _served[0]
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "the body is not JSON")
            return
        if not isinstance(body, dict):
            self._error(400, "the body must be a JSON object")
        elif path.endswith("/chat/completions"):
            messages = body.get("messages") or []
            last = messages[-1].get("content") if messages else ""
            every = [w for m in messages if isinstance(m, dict) for w in words(m.get("content"))]
            self._complete(body, words(last), len(every), chat=True)
        elif path.endswith("/completions"):
            prompt = words(body.get("prompt"))
            self._complete(body, prompt, len(prompt), chat=False)
        elif path.endswith("/embeddings"):
            self._embed(body)
        else:
            self._error(404, f"no route {path}")

    def _complete(self, body: Json, prompt: list[str], prompt_tokens: int, chat: bool) -> None:
        tokens, finish = answer_tokens(prompt, body)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        base = {
            "id": f"cmpl-{hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or MODEL,
        }
        if body.get("stream"):
            self._stream(body, base, pieces(tokens), finish, usage, chat)
            return
        text = "".join(pieces(tokens))
        choice: Json = {"index": 0, "finish_reason": finish}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        self._json(200, {**base, "choices": [choice], "usage": usage})

    def _stream(
        self, body: Json, base: Json, parts: list[str], finish: str, usage: Json, chat: bool
    ) -> None:
        delay = float(body.get("token_delay_s", TOKEN_DELAY_S) or 0)
        kind = "chat.completion.chunk" if chat else "text_completion"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Served-Path", self.path)
        self.send_header("X-Served-Seq", str(getattr(self, "seq", 0)))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            choice: Json = {"index": 0, "finish_reason": finish if last else None}
            if chat:
                choice["delta"] = (
                    {"role": "assistant", "content": part} if i == 0 else {"content": part}
                )
            else:
                choice["text"] = part
            chunk = {**base, "object": kind, "choices": [choice]}
            if last:
                chunk["usage"] = usage
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            if i == 0 and body.get("gate"):
                gate(str(body["gate"])).wait(GATE_WAIT_S)
            elif delay and not last:
                time.sleep(delay)
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _embed(self, body: Json) -> None:
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else list(given or [])
        data = [
            {"object": "embedding", "index": i, "embedding": embedding(str(text))}
            for i, text in enumerate(inputs)
        ]
        count = sum(len(words(str(t))) for t in inputs)
        usage = {"prompt_tokens": count, "total_tokens": count}
        out = {"object": "list", "data": data, "model": body.get("model") or MODEL, "usage": usage}
        self._json(200, out)

    def _error(self, status: int, message: str) -> None:
        error = {"message": message, "type": "invalid_request_error", "code": status}
        self._json(status, {"error": error})

    def _json(self, status: int, payload: Json) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Served-Path", self.path)
        self.send_header("X-Served-Seq", str(getattr(self, "seq", 0)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    port = int(os.environ.get("PORT", "8000"))
    server = Server(("0.0.0.0", port), Handler)
    sys.stderr.write(f"llm_function_server: {MODEL} on :{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
