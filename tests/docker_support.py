"""Docker helpers for tests: a client or a skip, the test images, containers on loopback ports.

Without a reachable Docker daemon, tests that need one skip; with NVCF_LITE_REQUIRE_DOCKER=1 (CI)
that is a failure instead. Containers publish their port on 127.0.0.1 only and tests talk to
that address, never to a bridge (172.x) address.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import pytest
from docker.models.containers import Container

REQUIRE_ENV = "NVCF_LITE_REQUIRE_DOCKER"
BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_test_images.py"
ECHO_IMAGE = "nvcf-lite-test/echo:1"
UNHEALTHY_IMAGE = "nvcf-lite-test/unhealthy:1"
CRASH_IMAGE = "nvcf-lite-test/crash:1"
SLOW_READY_IMAGE = "nvcf-lite-test/slow-ready:1"
EXIT_IMAGE = "nvcf-lite-test/exit:1"
FAST_IMAGE = "nvcf-lite-test/fast:1"  # scripts/fast_function_server.py, the bench baseline
GRPC_ECHO_IMAGE = "nvcf-lite-test/grpc-echo:1"  # scripts/grpc_echo_server.py
LLM_IMAGE = "nvcf-lite-test/llm:1"  # scripts/llm_function_server.py, OpenAI-compatible
TEST_LABEL = "nvcf-lite.test"

_client: docker.DockerClient | None = None
_images_ready = False


def docker_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def docker_client_or_skip() -> docker.DockerClient:
    """A connected client, or skip the test (fail under NVCF_LITE_REQUIRE_DOCKER=1)."""
    global _client
    if _client is not None:
        return _client
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        reason = f"Docker daemon unreachable: {exc}"
        if docker_required():
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    _client = client
    return client


def engine_answering(
    process: subprocess.Popen[bytes], url: str, timeout_s: float, what: str, log: Callable[[], str]
) -> docker.DockerClient:
    """A client of the dockerd `process` started, once it answers at `url` (a private engine of
    a test); RuntimeError with the tail of its `log()` when it exits or stays silent."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log()[-4000:]}")
        try:
            client = docker.DockerClient(base_url=url, timeout=30)
            client.ping()
            return client
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer:\n{log()[-4000:]}")


def ensure_test_images() -> None:
    """Builds the nvcf-lite-test/* images when missing or stale (a no-op re-run takes ~0.1 s)."""
    global _images_ready
    if _images_ready:
        return
    done = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        pytest.fail(f"building test images failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    _images_ready = True


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    elapsed_s: float


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> HttpAnswer:
    """One request on a fresh connection."""
    parts = urlsplit(url)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.read(), time.perf_counter() - started)
    finally:
        conn.close()


def wait_http(
    url: str, timeout_s: float, expect: int = 200, interval_s: float = 0.02
) -> HttpAnswer:
    """Polls GET `url` until it answers `expect`; raises TimeoutError with the last outcome."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        try:
            answer = http_request(url, timeout_s=max(0.5, min(2.0, deadline - time.monotonic())))
            if answer.status == expect:
                return answer
            last = f"HTTP {answer.status}: {answer.body[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            # docker-proxy accepts and then drops the connection until the server listens.
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer {expect} within {timeout_s} s; last: {last}")
        time.sleep(interval_s)


def host_port(container: Container, port: str = "8000/tcp") -> int | None:
    """The 127.0.0.1 port published for `port`, or None (e.g. the container already exited)."""
    container.reload()
    bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(port) or []
    return int(bindings[0]["HostPort"]) if bindings else None


@dataclass
class RunningContainer:
    container: Container
    port: int | None

    @property
    def url(self) -> str:
        if self.port is None:
            raise AssertionError(f"container {self.container.short_id} has no published port")
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running_container(
    client: docker.DockerClient, image: str, **kwargs: Any
) -> Iterator[RunningContainer]:
    """Runs `image` detached with port 8000 published on 127.0.0.1; removes it afterwards."""
    kwargs.setdefault("ports", {"8000/tcp": ("127.0.0.1", None)})
    kwargs.setdefault("labels", {TEST_LABEL: "1"})
    container = client.containers.run(image, detach=True, **kwargs)
    try:
        yield RunningContainer(container, host_port(container))
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def namespace_containers(client: docker.DockerClient, namespace: str) -> list[Container]:
    """The containers of an nvcf-lite namespace, fully inspected.

    The server may remove one between the list and its inspect: those are skipped (a plain
    `containers.list` would raise NotFound).
    """
    label = f"nvcf-lite.namespace={namespace}"
    found = []
    for row in client.api.containers(all=True, filters={"label": label}):
        try:
            found.append(client.containers.get(row["Id"]))
        except docker.errors.NotFound:
            continue
    return found


def remove_namespace(client: docker.DockerClient, namespace: str) -> None:
    """Remove every container of an nvcf-lite namespace (test clean-up).

    The server may still be removing some of them itself: a removal already in progress
    (409) or a container already gone (404) is fine.
    """
    for c in namespace_containers(client, namespace):
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
