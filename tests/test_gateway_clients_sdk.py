"""Real OpenAI-API clients against the gateway of a live `nvcf-lite serve` and a real LLM
function container: the `openai` SDK (sync, stream, async) and langchain-nvidia-ai-endpoints
(`ChatNVIDIA(base_url=...)` sync and stream, `NVIDIAEmbeddings(base_url=...)`), each in its own
virtualenv built from PyPI (under `.sdk-venvs/`, as the NGC SDK tests do).

The README's "Serving LLMs" snippets are run as they are (only their URL pointed at the test
server), so the documentation cannot drift from what works. A socket guard in every script
makes any connection off 127.0.0.1 an error.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_support import live_llm, llm_server
from sdk_support import VENVS_DIR, ensure_venv
from server_support import ServerProcess, clean_environ

pytestmark = [pytest.mark.sdk, pytest.mark.docker]

OPENAI_REQUIREMENTS = ["openai==3.60.0"]
OPENAI_VENV = VENVS_DIR / "openai-3.60.0"
# the same venv as tests/test_invocations_langchain_sdk.py
LANGCHAIN_REQUIREMENTS = ["langchain-nvidia-ai-endpoints==1.5.0"]
LANGCHAIN_VENV = VENVS_DIR / "langchain-nvidia-ai-endpoints-1.5.0"
README = Path(__file__).resolve().parents[1] / "README.md"
README_URL = "http://127.0.0.1:8080"
MODEL = "my-llama"  # the README's model name

GUARD = r"""
import socket
_connect = socket.socket.connect
def _loopback_only(self, address):
    if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise OSError(f"test guard: connection to {address!r} refused (loopback only)")
    return _connect(self, address)
socket.socket.connect = _loopback_only
"""

OPENAI_DETAILS = r"""
import asyncio, json, os, sys
import openai
from openai import AsyncOpenAI, OpenAI

args = json.loads(sys.argv[1])
client = OpenAI(base_url=args["base"], api_key=args["key"], max_retries=0)
out = {"models": [m.id for m in client.models.list()]}
out["retrieved"] = client.models.retrieve(args["model"]).id
chunks = list(client.chat.completions.create(
    model=args["model"], messages=[{"role": "user", "content": "a b c d"}], stream=True))
out["stream"] = [c.choices[0].delta.content for c in chunks if c.choices]
out["stream_usage"] = [c.usage.completion_tokens for c in chunks if c.usage]
done = client.completions.create(model=args["model"], prompt="one two three", max_tokens=2)
out["completion"] = [done.choices[0].text, done.choices[0].finish_reason, done.usage.total_tokens]
vectors = client.embeddings.create(model=args["model"], input=["x y", "z"])
out["embeddings"] = [len(d.embedding) for d in vectors.data]
try:
    client.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as exc:
    out["not_found"] = [exc.status_code, exc.code, exc.type]

async def streamed() -> list:
    aclient = AsyncOpenAI(base_url=args["base"], api_key=args["key"], max_retries=0)
    stream = await aclient.chat.completions.create(
        model=args["model"], messages=[{"role": "user", "content": "async stream"}], stream=True)
    return [c.choices[0].delta.content async for c in stream if c.choices]

out["async_stream"] = asyncio.run(streamed())
print("@@RESULT@@ " + json.dumps(out))
"""

LANGCHAIN_DETAILS = r"""
import json, sys
from langchain_nvidia_ai_endpoints import ChatNVIDIA, NVIDIAEmbeddings

args = json.loads(sys.argv[1])
llm = ChatNVIDIA(base_url=args["base"], api_key=args["key"], model=args["model"])
answer = llm.invoke("count my tokens")
out = {"usage": answer.response_metadata.get("token_usage")}
out["chunks"] = [c.content for c in llm.stream("one two three")]
embedder = NVIDIAEmbeddings(base_url=args["base"], api_key=args["key"], model=args["model"])
out["documents"] = [len(v) for v in embedder.embed_documents(["first doc", "second"])]
print("@@RESULT@@ " + json.dumps(out))
"""


def readme_snippet(name: str) -> str:
    """The python block after `<!-- serving-llms: NAME -->` in the README."""
    text = README.read_text()
    found = re.search(rf"<!-- serving-llms: {name} -->\n```python\n(.*?)```", text, re.S)
    assert found, f"README has no '{name}' snippet under 'Serving LLMs'"
    return found.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with llm_server(tmp_path_factory.mktemp("clients")) as live:
        live_llm(live, "llama", MODEL)
        yield live


def run(python: Path, workdir: Path, code: str, server: ServerProcess, **args: Any) -> str:
    script = workdir / "client.py"
    script.write_text(GUARD + code)
    env = {
        **clean_environ(),
        "HOME": str(workdir),
        "NVCF_API_KEY": server.key,
        "NVIDIA_USAGE_TELEMETRY_ENABLED": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NVIDIA_API_KEY", "NVIDIA_BASE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [str(python), str(script), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=180,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def result(stdout: str) -> dict[str, Any]:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("@@RESULT@@ ")), None)
    assert line is not None, stdout
    out: dict[str, Any] = json.loads(line.removeprefix("@@RESULT@@ "))
    return out


def test_the_readme_openai_snippet(server: ServerProcess, tmp_path: Path) -> None:
    python = ensure_venv(OPENAI_VENV, OPENAI_REQUIREMENTS, "import openai")
    code = readme_snippet("openai").replace(README_URL, server.url)
    lines = run(python, tmp_path, code, server).splitlines()
    assert lines == ["echo: hello openai 5", "echo: stream it", "echo: async hello"]


def test_openai_sdk_stream_completions_embeddings_errors(
    server: ServerProcess, tmp_path: Path
) -> None:
    python = ensure_venv(OPENAI_VENV, OPENAI_REQUIREMENTS, "import openai")
    base = f"{server.url}/v1"
    out = result(
        run(python, tmp_path, OPENAI_DETAILS, server, base=base, key=server.key, model=MODEL)
    )
    assert out["models"] == [MODEL]
    assert out["retrieved"] == MODEL
    assert out["stream"] == ["echo:", " a", " b", " c", " d"]
    assert out["stream_usage"] == [5]
    assert out["completion"] == ["echo: one", "length", 5]
    assert out["embeddings"] == [8, 8]
    assert out["not_found"] == [404, "model_not_found", "invalid_request_error"]
    assert out["async_stream"] == ["echo:", " async", " stream"]


def test_the_readme_langchain_snippet(server: ServerProcess, tmp_path: Path) -> None:
    python = ensure_venv(
        LANGCHAIN_VENV, LANGCHAIN_REQUIREMENTS, "import langchain_nvidia_ai_endpoints"
    )
    code = readme_snippet("langchain").replace(README_URL, server.url)
    lines = run(python, tmp_path, code, server).splitlines()
    assert lines[-3:] == ["echo: hello langchain", "echo: stream langchain", "8"]


def test_langchain_usage_chunks_and_documents(server: ServerProcess, tmp_path: Path) -> None:
    python = ensure_venv(
        LANGCHAIN_VENV, LANGCHAIN_REQUIREMENTS, "import langchain_nvidia_ai_endpoints"
    )
    base = f"{server.url}/v1"
    out = result(
        run(python, tmp_path, LANGCHAIN_DETAILS, server, base=base, key=server.key, model=MODEL)
    )
    assert out["usage"]["prompt_tokens"] == 3 and out["usage"]["completion_tokens"] == 4
    assert "".join(out["chunks"]) == "echo: one two three"
    assert len([c for c in out["chunks"] if c]) == 4  # a chunk per token, not one
    assert out["documents"] == [8, 8]
