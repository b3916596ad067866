"""Helpers for the OpenAI-compatible gateway's tests: LLM functions (the `nvcf-lite-test/llm`
image, scripts/llm_function_server.py) registered and deployed on a live `nvcf-lite serve`
through the public API, and a raw HTTP client that reads an SSE answer chunk by chunk."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import wait_for
from docker_support import LLM_IMAGE, docker_client_or_skip, ensure_test_images, remove_namespace
from invocation_support import HEALTH, deploy_body, docker_env
from server_support import ServerProcess, serving

ENDPOINT_URIS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


def llm_body(name: str, model: str, **extra: Any) -> dict[str, Any]:
    """An LLM function serving `model` (llmConfig fields from `extra['llm']`)."""
    config = {"uris": extra.pop("uris", ENDPOINT_URIS), **extra.pop("llm", {})}
    return {
        "name": name,
        "inferenceUrl": "/v1/chat/completions",
        "containerImage": LLM_IMAGE,
        "health": HEALTH,
        "functionType": "LLM",
        "models": [{"name": model, "llmConfig": config}],
        **extra,
    }


def register_llm(server: ServerProcess, name: str, model: str, **extra: Any) -> tuple[str, str]:
    f = server.json("POST", "/v2/nvcf/functions", llm_body(name, model, **extra))["function"]
    return f["id"], f["versionId"]


def deploy_llm(
    server: ServerProcess, fid: str, vid: str, *, wait: bool = True, **spec: Any
) -> None:
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    server.json("POST", path, deploy_body(**{"maxRequestConcurrency": 8, **spec}))
    if not wait:
        return

    def active() -> bool:
        status = server.json("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]
        assert status["status"] not in ("ERROR", "INACTIVE"), status
        return bool(status["status"] == "ACTIVE")

    wait_for(active, timeout=60, what=f"function {fid} ACTIVE")


def live_llm(server: ServerProcess, name: str, model: str, **extra: Any) -> tuple[str, str]:
    """An LLM function registered, deployed (one instance unless `spec` says) and ACTIVE."""
    spec = extra.pop("spec", {})
    fid, vid = register_llm(server, name, model, **extra)
    deploy_llm(server, fid, vid, **spec)
    return fid, vid


@contextmanager
def llm_server(workdir: Path, **env: str) -> Iterator[ServerProcess]:
    """A live server on Docker, in a namespace of its own that is removed afterwards."""
    dock = docker_client_or_skip()
    ensure_test_images()
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    proc = ServerProcess(workdir, docker_env(namespace, **env))
    try:
        with serving(proc) as live:
            yield live
    finally:
        remove_namespace(dock, namespace)


def post(
    server: ServerProcess, path: str, body: Any, key: str | None = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    """POST JSON with the server's (or `key`'s) key; the answer's JSON decoded."""
    auth = {"Authorization": f"Bearer {key or server.key}", **headers}
    code, out, data = server.call("POST", path, body, headers=auth)
    return code, out, json.loads(data) if data else None


class SseReader:
    """One streamed POST on a plain connection: `events()` yields each SSE `data:` as it
    arrives (the chunk the container sent, not the whole answer at once)."""

    def __init__(
        self, server: ServerProcess, path: str, body: Any, key: str | None = None, **more: str
    ):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        headers = {
            "Authorization": f"Bearer {key or server.key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            **more,
        }
        self.conn.request("POST", path, json.dumps(body), headers)
        self.response = self.conn.getresponse()

    def events(self) -> Iterator[str]:
        buffer = b""
        while True:
            line = self.response.readline()
            if not line:
                return
            buffer += line
            if line.strip() == b"" and buffer.strip():
                event, buffer = buffer.decode(), b""
                for row in event.splitlines():
                    if row.startswith("data:"):
                        yield row[5:].strip()

    def close(self) -> None:
        self.conn.close()


def chat_body(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
