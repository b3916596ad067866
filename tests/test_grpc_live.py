"""The gRPC endpoint of a real `nvcf-lite serve` (granian on uvloop, as users run it), plain and
with the server's TLS files, and a stop while a bidi stream is open."""

from __future__ import annotations

import json
import os
import queue
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ADMIN_KEY, wait_for
from docker_support import GRPC_ECHO_IMAGE
from invocation_support import deploy_body, docker_env
from sdk_support import make_cert
from server_support import ServerProcess, free_port

pytestmark = pytest.mark.docker


def grpc_echo(server: ServerProcess) -> str:
    body = {
        "name": "grpc-echo",
        "inferenceUrl": "/grpc",
        "inferencePort": 8001,
        "containerImage": GRPC_ECHO_IMAGE,
    }
    f = server.json("POST", "/v2/nvcf/functions", body)["function"]
    fid, vid = f["id"], f["versionId"]
    server.json("POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", deploy_body())

    def active() -> bool:
        status = server.json("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]
        assert status["status"] not in ("ERROR", "INACTIVE"), status
        return bool(status["status"] == "ACTIVE")

    wait_for(active, what="the gRPC function ACTIVE")
    return str(fid)


def metadata(fid: str) -> list[tuple[str, str]]:
    return [("function-id", fid), ("authorization", f"Bearer {ADMIN_KEY}")]


@pytest.fixture
def served(tmp_path: Path, ns: str) -> Iterator[tuple[ServerProcess, int]]:
    port = free_port()
    env = docker_env(ns, NVCF_LITE_INVOCATION__GRPC_PORT=str(port))
    proc = ServerProcess(tmp_path / "srv", env=env)
    with proc:
        yield proc, port


def test_unary_and_bidi_on_a_live_server_and_a_stop_ends_the_open_stream(
    served: tuple[ServerProcess, int],
) -> None:
    server, port = served
    fid = grpc_echo(server)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = channel.unary_unary("/nvcf.test.Echo/Unary")(b"live", metadata=metadata(fid))
        assert json.loads(answer)["message"] == "live"
        outbox: queue.Queue[bytes | None] = queue.Queue()

        def messages() -> Iterator[bytes]:
            while (message := outbox.get()) is not None:
                yield message

        bidi = channel.stream_stream("/nvcf.test.Echo/Bidi")
        responses: Any = bidi(messages(), metadata=metadata(fid))
        outbox.put(b"ping")
        assert next(responses) == b"echo:ping"
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGTERM)  # with the stream open
        with pytest.raises(grpc.RpcError):
            outbox.put(b"after")
            list(responses)  # the stream ends
        outbox.put(None)
        assert server.process.wait(timeout=30) == 0  # and the server stops by itself
        server.process = None


def test_the_endpoint_serves_tls_with_the_servers_files(tmp_path: Path, ns: str) -> None:
    cert, key = make_cert(tmp_path / "tls")
    port = free_port()
    env = docker_env(ns, NVCF_LITE_INVOCATION__GRPC_PORT=str(port))
    with ServerProcess(tmp_path / "srv", env=env, cert=cert, tls_key=key) as server:
        fid = grpc_echo(server)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            unary = channel.unary_unary("/nvcf.test.Echo/Unary")
            assert json.loads(unary(b"secure", metadata=metadata(fid)))["message"] == "secure"
