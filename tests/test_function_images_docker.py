"""The test function images (scripts/build_test_images.py) behave as NVCF function containers."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker_support import (
    CRASH_IMAGE,
    ECHO_IMAGE,
    EXIT_IMAGE,
    FAST_IMAGE,
    SLOW_READY_IMAGE,
    UNHEALTHY_IMAGE,
    RunningContainer,
    docker_client_or_skip,
    ensure_test_images,
    http_request,
    running_container,
    wait_http,
)

pytestmark = pytest.mark.docker

SECRETS = {"apiKey": "s3cret", "nested": {"a": 1}}


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    client = docker_client_or_skip()
    ensure_test_images()
    return client


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mounted at /work in the echo container: output dirs and assets live here."""
    path = tmp_path_factory.mktemp("function-work")
    secrets = path / "secrets"
    secrets.mkdir()
    (secrets / "secrets.json").write_text(json.dumps(SECRETS))
    return path


@pytest.fixture(scope="module")
def echo(client: docker.DockerClient, shared_dir: Path) -> Iterator[RunningContainer]:
    volumes = {
        str(shared_dir): {"bind": "/work", "mode": "rw"},
        str(shared_dir / "secrets"): {"bind": "/var/secrets", "mode": "ro"},
    }
    env = {"NVCF_FUNCTION_ID": "fn-1", "NVCF_REGION": "local", "UNRELATED": "x"}
    with running_container(client, ECHO_IMAGE, environment=env, volumes=volumes) as running:
        wait_http(f"{running.url}/health", timeout_s=20)
        yield running


def post(
    running: RunningContainer,
    path: str,
    doc: Any = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, Any, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    try:
        body = None if doc is None else json.dumps(doc).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        raw = resp.read()
        is_json = resp.getheader("Content-Type") == "application/json"
        return resp.status, json.loads(raw) if is_json else raw, resp
    finally:
        conn.close()


def test_images_are_small_and_labelled(client: docker.DockerClient) -> None:
    for ref in (ECHO_IMAGE, UNHEALTHY_IMAGE, CRASH_IMAGE, SLOW_READY_IMAGE, EXIT_IMAGE):
        image = client.images.get(ref)
        config = image.attrs["Config"]
        assert config["Cmd"] == ["python3", "/app/function_server.py"]
        assert "8000/tcp" in config["ExposedPorts"]
        assert image.labels.get("nvcf-lite.test-image-hash")
        assert image.attrs["Size"] < 60e6


def test_image_has_what_the_nvidia_toolkit_needs(client: docker.DockerClient) -> None:
    """nvidia-smi, mounted in by the toolkit, links glibc's compatibility libraries; the
    toolkit picks the multiarch library directory when /etc/debian_version exists."""
    wanted = [
        f"/lib/x86_64-linux-gnu/{name}"
        for name in ("libdl.so.2", "libpthread.so.0", "librt.so.1")
        if Path(f"/lib/x86_64-linux-gnu/{name}").exists()
    ]
    wanted += [name for name in ("/etc/debian_version", "/etc/ld.so.conf") if Path(name).exists()]
    assert wanted, "this test expects a Debian-like host"
    script = f"import os; print([p for p in {wanted!r} if not os.path.exists(p)])"
    out = client.containers.run(ECHO_IMAGE, ["python3", "-c", script], remove=True)
    assert out.decode().strip() == "[]"


def test_echo_returns_request(echo: RunningContainer) -> None:
    status, doc, _ = post(
        echo, "/echo?a=1&b=two", {"hello": "world"}, headers={"NVCF-REQID": "req-1", "X-Ab": "c"}
    )
    raw = json.dumps({"hello": "world"}).encode()
    assert status == 200
    assert doc["method"] == "POST"
    assert doc["path"] == "/echo"
    assert doc["query"] == {"a": "1", "b": "two"}
    assert doc["headers"]["nvcf-reqid"] == "req-1"
    assert doc["headers"]["x-ab"] == "c"
    assert doc["body"] == {"hello": "world"}
    assert doc["bodySize"] == len(raw)
    assert doc["bodySha256"] == hashlib.sha256(raw).hexdigest()
    assert doc["env"] == {"NVCF_FUNCTION_ID": "fn-1", "NVCF_REGION": "local"}
    assert doc["hostname"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
def test_echo_any_method_and_path(echo: RunningContainer, method: str) -> None:
    status, doc, _ = post(echo, "/v2/models/m/infer", {"x": 1}, method=method)
    assert status == 200
    assert (doc["method"], doc["path"], doc["body"]) == (method, "/v2/models/m/infer", {"x": 1})


def test_text_body_and_keep_alive(echo: RunningContainer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        conn.request("POST", "/echo", body=b"not json")
        first = conn.getresponse()
        doc = json.loads(first.read())
        sock = conn.sock
        for _ in range(20):
            conn.request("POST", "/echo", body=b"{}")
            assert conn.getresponse().read()
        assert conn.sock is sock  # the same connection served every request
    finally:
        conn.close()
    assert doc["body"] == "not json"


def test_health_paths(echo: RunningContainer) -> None:
    for path in ("/health", "/v2/health/ready"):
        assert http_request(f"{echo.url}{path}").status == 200


def test_status_delay_and_response_bytes(echo: RunningContainer) -> None:
    status, doc, _ = post(echo, "/echo", {"status": 503, "errorMessage": "overloaded"})
    assert (status, doc) == (503, {"error": "overloaded"})
    assert post(echo, "/echo", {"status": 500})[1] == {"error": "boom"}
    started = time.perf_counter()
    assert post(echo, "/echo", {"delay": 0.3})[0] == 200
    assert time.perf_counter() - started >= 0.3
    size = 6 * 1024 * 1024 + 7
    status, body, resp = post(echo, "/echo", {"responseBytes": size})
    assert (status, len(body)) == (200, size)
    assert resp.getheader("Content-Type") == "application/octet-stream"
    assert resp.getheader("X-Body-Sha256") == hashlib.sha256(body).hexdigest()


def test_sse_first_event_arrives_before_the_last(echo: RunningContainer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        started = time.perf_counter()
        body = json.dumps({"events": 5, "interval": 0.3}).encode()
        conn.request("POST", "/echo", body=body, headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "text/event-stream"
        assert resp.getheader("Transfer-Encoding") == "chunked"
        events: list[tuple[float, bytes]] = []
        while line := resp.readline():
            if line.startswith(b"data: "):
                events.append((time.perf_counter() - started, line[6:].strip()))
    finally:
        conn.close()
    assert [e[1] for e in events] == [b'{"i": %d}' % i for i in range(5)] + [b"[DONE]"]
    first, last = events[0][0], events[-1][0]
    assert first < 0.5
    assert last - first > 1.0


def test_progress_and_large_output_files(echo: RunningContainer, shared_dir: Path) -> None:
    out = shared_dir / "response" / "req-progress"
    out.mkdir(parents=True)
    out.chmod(0o777)
    request = {
        "progress": [
            {"progress": 10, "partialResponse": {"step": 1}, "sleep": 0.4},
            {"progress": 60, "partialResponse": {"step": 2}, "sleep": 0.4},
        ],
        "largeOutputFiles": {"result.bin": 100_000, "notes/readme.txt": "hi"},
    }
    headers = {"NVCF-LARGE-OUTPUT-DIR": "/work/response/req-progress", "NVCF-REQID": "req-progress"}
    seen: list[int] = []
    result: dict[str, Any] = {}

    def call() -> None:
        result["answer"] = post(echo, "/infer", request, headers=headers)

    caller = threading.Thread(target=call)
    caller.start()
    while caller.is_alive():
        try:
            progress = json.loads((out / "progress").read_text())["progress"]
        except (OSError, ValueError):
            progress = None  # not there yet; renames make a torn read impossible
        if progress is not None and progress not in seen:
            seen.append(progress)
        time.sleep(0.02)
    caller.join()
    status, doc, _ = result["answer"]
    assert status == 200
    assert seen == [10, 60]
    assert json.loads((out / "progress").read_text()) == {
        "id": "req-progress",
        "progress": 60,
        "partialResponse": {"step": 2},
    }
    assert (out / "result.bin").stat().st_size == 100_000
    assert (out / "notes" / "readme.txt").read_text() == "hi"
    digest = hashlib.sha256((out / "result.bin").read_bytes()).hexdigest()
    assert doc["largeOutput"]["result.bin"] == {"size": 100_000, "sha256": digest}
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith((".partial", ".tmp"))]
    assert leftovers == []


def test_progress_without_output_dir_is_a_400(echo: RunningContainer) -> None:
    status, doc, _ = post(echo, "/infer", {"progress": [{"progress": 1}]})
    assert status == 400
    assert "NVCF-LARGE-OUTPUT-DIR" in doc["error"]


def test_assets_and_secrets(echo: RunningContainer, shared_dir: Path) -> None:
    assets = shared_dir / "assets" / "req-assets"
    assets.mkdir(parents=True)
    data = os.urandom(300_000)
    (assets / "asset-1").write_bytes(data)
    headers = {
        "NVCF-ASSET-DIR": "/work/assets/req-assets",
        "NVCF-FUNCTION-ASSET-IDS": "asset-1, missing",
    }
    status, doc, _ = post(echo, "/echo", {"readAssets": True, "readSecrets": True}, headers)
    assert status == 200
    assert doc["assets"]["asset-1"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "path": "/work/assets/req-assets/asset-1",
    }
    assert "FileNotFoundError" in doc["assets"]["missing"]["error"]
    assert doc["secrets"] == SECRETS


def test_chat_completion(echo: RunningContainer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello big world"},
    ]
    status, doc, _ = post(echo, "/v1/chat/completions", {"model": "m1", "messages": messages})
    assert status == 200
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "m1"
    assert doc["id"] and isinstance(doc["created"], int)
    assert doc["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello big world"},
            "finish_reason": "stop",
        }
    ]
    assert set(doc["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_chat_completion_stream(echo: RunningContainer) -> None:
    request = {"stream": True, "messages": [{"role": "user", "content": "hello big world"}]}
    status, raw, resp = post(echo, "/v1/chat/completions", request)
    assert status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    lines = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: hello big world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_create_start_to_first_healthy_answer(client: docker.DockerClient) -> None:
    started = time.perf_counter()
    with running_container(client, ECHO_IMAGE) as running:
        wait_http(f"{running.url}/v2/health/ready", timeout_s=20, interval_s=0.005)
        elapsed = time.perf_counter() - started
    print(f"create+start -> first healthy 200: {elapsed * 1000:.0f} ms")
    assert elapsed < 10


def test_unhealthy_answers_500(client: docker.DockerClient) -> None:
    with running_container(client, UNHEALTHY_IMAGE) as running:
        wait_http(f"{running.url}/health", timeout_s=20, expect=500)
        assert http_request(f"{running.url}/v2/health/ready").status == 500
        assert http_request(f"{running.url}/echo", method="POST", body=b"{}").status == 200


def test_slow_ready_becomes_ready_after_3_s(client: docker.DockerClient) -> None:
    started = time.perf_counter()
    with running_container(client, SLOW_READY_IMAGE) as running:
        wait_http(f"{running.url}/health", timeout_s=20, expect=503)
        assert time.perf_counter() - started < 2.5
        wait_http(f"{running.url}/health", timeout_s=20)
        assert 2.5 <= time.perf_counter() - started < 10


def test_crash_exits_with_code_3(client: docker.DockerClient) -> None:
    with running_container(client, CRASH_IMAGE) as running:
        wait_http(f"{running.url}/health", timeout_s=20)
        assert running.container.wait(timeout=20)["StatusCode"] == 3
        assert b"exit code 3" in running.container.logs()


def test_exit_image_exits_1(client: docker.DockerClient) -> None:
    with running_container(client, EXIT_IMAGE) as running:
        assert running.container.wait(timeout=20)["StatusCode"] == 1
        assert b"EXIT_AT_START" in running.container.logs()


def test_fast_image_health_echo_and_keep_alive(client: docker.DockerClient) -> None:
    """nvcf-lite-test/fast (the bench baseline): health, a JSON echo per POST, keep-alive."""
    config = client.images.get(FAST_IMAGE).attrs["Config"]
    assert config["Cmd"] == ["python3", "/app/fast_function_server.py"]
    with running_container(client, FAST_IMAGE) as running:
        wait_http(f"{running.url}/health", timeout_s=20)
        assert http_request(f"{running.url}/v2/health/ready").status == 200
        assert http_request(f"{running.url}/nope").status == 404
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        try:
            for body in (b'{"a": 1}', b"x" * 70_000):
                conn.request("POST", "/echo?q=1", body=body)
                resp = conn.getresponse()
                assert resp.status == 200
                assert json.loads(resp.read()) == {"ok": True, "path": "/echo", "bytes": len(body)}
            conn.request("POST", "/echo", body=b"{}", headers={"Connection": "close"})
            resp = conn.getresponse()
            assert resp.getheader("Connection") == "close"
            assert resp.read()
        finally:
            conn.close()
