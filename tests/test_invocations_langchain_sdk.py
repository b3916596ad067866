"""langchain-nvidia-ai-endpoints 1.5.0 (`ChatNVIDIA`) against a live `nvcf-lite serve` and a
real function container that answers OpenAI-style chat JSON (spec §7.2, §9 item 8).

As spec §7.2 describes, the model is registered with an absolute endpoint, the pexec URL of
the function (`/v2/nvcf/pexec/functions/{id}`), and the client's hard-coded polling URL is
pointed at the server. Covered: a blocking call, a 202 followed by status polls (the client
sends `NVCF-POLL-SECONDS: 1` and the function takes longer), streaming, and a container error
shown from the problem body. The library lives in its own venv under `.sdk-venvs/`; a socket
guard in the script makes any connection off 127.0.0.1 an error.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asset_support import plain_server
from invocation_support import docker_env, live_echo
from sdk_support import VENVS_DIR, ensure_venv
from server_support import ServerProcess, clean_environ

pytestmark = [pytest.mark.sdk, pytest.mark.docker]

LANGCHAIN_VERSION = "1.5.0"
REQUIREMENTS = [f"langchain-nvidia-ai-endpoints=={LANGCHAIN_VERSION}"]
VENV = VENVS_DIR / f"langchain-nvidia-ai-endpoints-{LANGCHAIN_VERSION}"

SCRIPT = r"""
import json, socket, sys

_connect = socket.socket.connect
def _loopback_only(self, address):
    if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise OSError(f"test guard: connection to {address!r} refused (loopback only)")
    return _connect(self, address)
socket.socket.connect = _loopback_only

import requests.adapters
WIRE = []
_send = requests.adapters.HTTPAdapter.send
def _recording_send(self, request, *a, **kw):
    response = _send(self, request, *a, **kw)
    WIRE.append([request.method, request.url, response.status_code,
                 request.headers.get("NVCF-POLL-SECONDS")])
    return response
requests.adapters.HTTPAdapter.send = _recording_send

from langchain_nvidia_ai_endpoints import ChatNVIDIA, Model, register_model

args = json.loads(sys.argv[1])
register_model(Model(id="local-echo", model_type="chat", client="ChatNVIDIA",
                     endpoint=args["endpoint"]))

def chat(**kw):
    llm = ChatNVIDIA(model="local-echo", api_key=args["key"], usage_telemetry_enabled=False, **kw)
    llm._client.polling_url_tmpl = args["status"]
    return llm

out = {}
answer = chat().invoke("hello there")
out["invoke"] = answer.content
out["usage"] = answer.response_metadata.get("token_usage")
out["stream"] = [c.content for c in chat().stream("stream me please")]
slow = chat(model_kwargs={"delay": 1.5}, default_headers={"NVCF-POLL-SECONDS": "1"})
out["polled"] = slow.invoke("after a wait").content
try:
    chat(model_kwargs={"status": 500, "errorMessage": "model exploded"}).invoke("x")
    out["error"] = None
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
out["wire"] = WIRE
print("@@RESULT@@ " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def python() -> Path:
    return ensure_venv(VENV, REQUIREMENTS, "import langchain_nvidia_ai_endpoints")


@pytest.fixture
def server(python: Path, tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    env = {**docker_env(ns), "NVCF_LITE_DOCKER__BASE_URL": ""}
    with plain_server(tmp_path / "server", extra_env=env) as live:
        yield live


def run(python: Path, tmp_path: Path, **args: Any) -> dict[str, Any]:
    script = tmp_path / "chat.py"
    script.write_text(SCRIPT)
    env = {
        **clean_environ(),
        "HOME": str(tmp_path),
        "NVIDIA_USAGE_TELEMETRY_ENABLED": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.pop("NVIDIA_API_KEY", None)
    env.pop("NVIDIA_BASE_URL", None)
    done = subprocess.run(
        [str(python), str(script), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("@@RESULT@@ ")), None)
    assert line is not None, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(line.removeprefix("@@RESULT@@ "))
    return result


def test_chatnvidia_on_a_pexec_endpoint(
    python: Path, server: ServerProcess, tmp_path: Path
) -> None:
    fid, _ = live_echo(server.json)
    endpoint = f"{server.url}/v2/nvcf/pexec/functions/{fid}"
    out = run(
        python,
        tmp_path,
        endpoint=endpoint,
        status=f"{server.url}/v2/nvcf/pexec/status/{{request_id}}",
        key=server.key,
    )
    assert out["invoke"] == "echo: hello there"
    assert out["usage"]["total_tokens"] >= 1
    assert "".join(out["stream"]) == "echo: stream me please"
    assert len([c for c in out["stream"] if c]) >= 3  # several chunks, not one
    assert out["polled"] == "echo: after a wait"
    assert out["error"] is not None
    assert "[500] Internal Server Error" in out["error"] and "model exploded" in out["error"]
    assert "RequestID:" in out["error"]

    assert all(url.startswith(server.url) for _, url, _, _ in out["wire"]), out["wire"]
    wire = [(m, url.removeprefix(server.url), s, p) for m, url, s, p in out["wire"]]
    assert {u for m, u, _, _ in wire if m == "POST"} == {f"/v2/nvcf/pexec/functions/{fid}"}
    posts = [(s, p) for m, _, s, p in wire if m == "POST"]
    assert posts == [(200, None), (200, None), (202, "1"), (500, None)]
    polls = [s for m, u, s, _ in wire if m == "GET" and u.startswith("/v2/nvcf/pexec/status/")]
    assert polls and polls[-1] == 200 and set(polls) <= {200, 202}
