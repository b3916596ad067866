"""gRPC functions through the public API with grpcio clients (spec §2.3.10, §4.1).

A function with `inferenceUrl: /grpc` gets a grpc.health.v1 health check and becomes ACTIVE
when its server answers SERVING; calls to nvcf-lite's gRPC endpoint (`invocation.grpc_port`)
with `function-id` and `authorization: Bearer` metadata reach it, unary and streaming, as raw
bytes (the echo function, scripts/grpc_echo_server.py, speaks JSON in its messages).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ADMIN_KEY, bearer, call, wait_for
from docker_support import GRPC_ECHO_IMAGE
from invocation_support import deploy, docker_config, echo
from litestar.testing import TestClient
from server_support import free_port

from nvcf_lite.app import docker_runtime

pytestmark = pytest.mark.docker

UNARY, STREAM, BIDI, COLLECT = (
    f"/nvcf.test.Echo/{m}" for m in ("Unary", "ServerStream", "Bidi", "Collect")
)
UNKNOWN_FID = "00000000-0000-4000-8000-000000000000"


class Grpc:
    """The app under test and a grpcio channel to its gRPC endpoint."""

    def __init__(self, api: TestClient[Any], port: int) -> None:
        self.api = api
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def metadata(self, fid: str, key: str | None = ADMIN_KEY, **extra: str) -> list[Any]:
        md = [("function-id", fid), *extra.items()]
        return md + ([("authorization", f"Bearer {key}")] if key else [])

    def unary(self, fid: str, message: bytes, **kw: Any) -> Any:
        md = self.metadata(fid, **kw.pop("md", {}))
        return self.channel.unary_unary(UNARY).with_call(message, metadata=md, **kw)


@pytest.fixture
def rpc(
    ns: str, app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> Iterator[Grpc]:  # `ns` first: its cleanup runs after the app stops
    port = free_port()
    env = {"NVCF_LITE_INVOCATION__GRPC_PORT": str(port)}
    api = app_factory(docker_config(tmp_path, ns, **env), runtime_factory=docker_runtime)
    client = Grpc(api, port)
    yield client
    client.channel.close()


def grpc_function(api: TestClient[Any], **fields: Any) -> tuple[str, str]:
    body = {
        "name": "grpc-echo",
        "inferenceUrl": "/grpc",
        "inferencePort": 8001,
        "containerImage": GRPC_ECHO_IMAGE,
        **fields,
    }
    r = api.post("/v2/nvcf/functions", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    f = r.json()["function"]
    assert f["health"]["protocol"] == "gRPC" and f["health"]["port"] == 8001
    return f["id"], f["versionId"]


def version_status(api: TestClient[Any], fid: str, vid: str) -> Any:
    r = api.get(f"/v2/nvcf/functions/{fid}/versions/{vid}", headers=bearer())
    return r.json()["function"]


def deployed(api: TestClient[Any], **spec: Any) -> tuple[str, str]:
    fid, vid = grpc_function(api)
    deploy(api, fid, vid, **spec)

    def active() -> bool:
        status = version_status(api, fid, vid)["status"]
        assert status not in ("ERROR", "INACTIVE"), status
        return bool(status == "ACTIVE")

    wait_for(active, what="the gRPC function ACTIVE (its gRPC health check SERVING)")
    return fid, vid


def code_of(call_: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call_()
    err: Any = raised.value
    return err.code(), err.details()


def test_unary_reaches_the_instance_with_its_metadata(rpc: Grpc) -> None:
    fid, vid = deployed(rpc.api)
    answer, done = rpc.unary(fid, b"hello", md={"x-custom": "yes"})
    seen = json.loads(answer)
    assert (seen["method"], seen["message"]) == ("Unary", "hello")
    md = seen["metadata"]
    assert md["x-custom"] == "yes"
    assert (md["nvcf-function-id"], md["nvcf-function-version-id"]) == (fid, vid)
    assert len(md["nvcf-reqid"]) == 36 and md["nvcf-ncaid"]
    assert "authorization" not in md and "function-id" not in md
    assert dict(done.initial_metadata())["nvcf-reqid"] == md["nvcf-reqid"]
    assert dict(done.trailing_metadata())["x-echo-trailer"] == "done"
    # a version by metadata; the instance's own error status comes back as it was
    answer, _ = rpc.unary(fid, b"v", md={"function-version-id": vid})
    assert json.loads(answer)["metadata"]["nvcf-function-version-id"] == vid
    control = json.dumps({"code": "NOT_FOUND", "details": "no such thing"}).encode()
    assert code_of(lambda: rpc.unary(fid, control)) == (grpc.StatusCode.NOT_FOUND, "no such thing")
    # the calls are invocations: counted by the HTTP status of their gRPC code (spec §5.2)
    assert counted(rpc.api, fid, vid) == {"200": 2, "404": 1}


def counted(api: TestClient[Any], fid: str, vid: str) -> dict[str, int]:
    """nvcf_lite_invocations_total of the version, by status."""
    prefix = f'nvcf_lite_invocations_total{{function_id="{fid}",version_id="{vid}",status="'
    lines = [line for line in api.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return {line[len(prefix) :].split('"')[0]: int(float(line.split()[-1])) for line in lines}


def test_a_call_to_a_function_scaled_to_zero_waits_for_its_instance(rpc: Grpc) -> None:
    fid, vid = deployed(rpc.api, minInstances=0, maxInstances=1)
    assert rpc.api.app.state.platform.scheduler.views(vid) == []
    answer, _ = rpc.unary(fid, b"cold", timeout=30)
    assert json.loads(answer)["message"] == "cold"
    assert len(rpc.api.app.state.platform.scheduler.views(vid)) == 1
    assert counted(rpc.api, fid, vid) == {"200": 1}


def test_server_client_and_bidi_streaming(rpc: Grpc) -> None:
    fid, _ = deployed(rpc.api)
    collect = rpc.channel.stream_unary(COLLECT)
    assert collect(iter([b"a", b"b", b"c"]), metadata=rpc.metadata(fid)) == b"a|b|c"
    stream = rpc.channel.unary_stream(STREAM)
    request = json.dumps({"count": 5, "interval": 0.01}).encode()
    answers = list(stream(request, metadata=rpc.metadata(fid)))
    assert [json.loads(a) for a in answers] == [{"i": i} for i in range(5)]
    # bidi, live: each answer arrives before the next message is sent
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def messages() -> Iterator[bytes]:
        while (message := outbox.get()) is not None:
            yield message

    responses = rpc.channel.stream_stream(BIDI)(messages(), metadata=rpc.metadata(fid))
    for word in (b"one", b"two", b"three"):
        outbox.put(word)
        assert next(responses) == b"echo:" + word
    outbox.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK
    assert dict(responses.trailing_metadata())["x-echo-trailer"] == "done"


def test_keys_functions_and_metadata_errors_are_grpc_codes(rpc: Grpc) -> None:
    fid, _ = deployed(rpc.api)
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: rpc.unary(fid, b"", md={"key": None}))[0] == unauthenticated
    assert code_of(lambda: rpc.unary(fid, b"", md={"key": "nvapi-wrong"}))[0] == unauthenticated
    lister, _ = call(rpc.api, rpc.api.app.state.platform.keys.create, ["list_functions"], ())
    assert code_of(lambda: rpc.unary(fid, b"", md={"key": lister}))[0] == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    code, details = code_of(lambda: rpc.unary(UNKNOWN_FID, b""))
    assert code == grpc.StatusCode.NOT_FOUND and UNKNOWN_FID in details
    code, details = code_of(lambda: rpc.unary("nope", b""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "function-id" in details
    no_function = rpc.channel.unary_unary(UNARY)
    code, details = code_of(lambda: no_function(b"", metadata=[("authorization", "Bearer x")]))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    admin = [("authorization", f"Bearer {ADMIN_KEY}")]
    code, details = code_of(lambda: no_function(b"", metadata=admin))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "function-id" in details


def test_each_protocol_on_its_own_endpoint(rpc: Grpc) -> None:
    grpc_fid, _ = deployed(rpc.api)
    http_fid, _ = echo(rpc.api)
    r = rpc.api.post(f"/v2/nvcf/pexec/functions/{grpc_fid}", json={}, headers=bearer())
    assert r.status_code == 400 and "call it on the gRPC endpoint" in r.json()["detail"]
    code, details = code_of(lambda: rpc.unary(http_fid, b"x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "invoke it over HTTP" in details


def test_a_call_holds_its_instance_slot_and_a_waiting_call_ends_at_its_deadline(
    rpc: Grpc,
) -> None:
    fid, _ = deployed(rpc.api, maxRequestConcurrency=1)
    stream = rpc.channel.unary_stream(STREAM)
    slow = stream(json.dumps({"count": 2, "interval": 4}).encode(), metadata=rpc.metadata(fid))
    assert json.loads(next(slow)) == {"i": 0}  # it runs: the one slot is taken
    code, details = code_of(lambda: rpc.unary(fid, b"waits", timeout=1))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "free" in details
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(rpc.unary(fid, b"later", timeout=30)))
    waiter.start()  # queued until the stream ends and frees the slot
    assert [json.loads(a) for a in slow] == [{"i": 1}]
    waiter.join(30)
    assert json.loads(got[0][0])["message"] == "later"


def test_a_function_whose_health_check_is_not_serving_never_becomes_active(
    ns: str, app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    env = {
        "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "2",
        "NVCF_LITE_SCHEDULER__DEPLOY_ATTEMPTS": "1",
    }
    api = app_factory(docker_config(tmp_path, ns, **env), runtime_factory=docker_runtime)
    fid, vid = grpc_function(api, containerEnvironment=[{"key": "FAIL_HEALTH", "value": "1"}])
    deploy(api, fid, vid)
    wait_for(lambda: version_status(api, fid, vid)["status"] == "ERROR", what="ERROR")
    r = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    reasons = json.dumps(r.json())
    assert "gRPC health check timed out" in reasons and "port 8001" in reasons, reasons
    assert "not SERVING" in reasons, reasons


def test_a_full_queue_is_resource_exhausted(
    ns: str, app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "NVCF_LITE_INVOCATION__GRPC_PORT": str(port),
        "NVCF_LITE_INVOCATION__MAX_QUEUE_PER_FUNCTION": "1",
    }
    rpc = Grpc(
        app_factory(docker_config(tmp_path, ns, **env), runtime_factory=docker_runtime), port
    )
    fid, _ = deployed(rpc.api)
    stream = rpc.channel.unary_stream(STREAM)
    slow = stream(json.dumps({"count": 2, "interval": 2}).encode(), metadata=rpc.metadata(fid))
    assert json.loads(next(slow)) == {"i": 0}  # the function's one accepted call, running
    code, details = code_of(lambda: rpc.unary(fid, b"one too many", timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in details
    assert [json.loads(a) for a in slow] == [{"i": 1}]
    rpc.channel.close()
