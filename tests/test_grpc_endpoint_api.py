"""The gRPC endpoint's answers that need no instance: keys, metadata and unknown or undeployed
functions are gRPC status codes (spec §2.3.10, §5.2), checked with a grpcio client against
the in-process app. (Calls that reach instances: tests/test_grpc_docker.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ADMIN_KEY, bearer, call, make_config
from litestar.testing import TestClient
from server_support import free_port

from nvcf_lite.api.grpc_status import code_of, http_of, problem_detail

FID = "6f9d9c3e-2f7a-4b1e-9d2a-0c6c4c1e5a10"
Code = grpc.StatusCode


@pytest.fixture
def endpoint(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> Iterator[tuple[TestClient[Any], Callable[..., Any]]]:
    port = free_port()
    api = app_factory(make_config(tmp_path / "data", NVCF_LITE_INVOCATION__GRPC_PORT=str(port)))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def unary(*metadata: tuple[str, str], method: str = "/any.Service/Method") -> Any:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(method)(b"x", metadata=metadata, timeout=10)
        err: Any = raised.value
        return err.code(), err.details()

    yield api, unary
    channel.close()


ADMIN = ("authorization", f"Bearer {ADMIN_KEY}")


def test_the_key_comes_first(endpoint: tuple[TestClient[Any], Callable[..., Any]]) -> None:
    _, unary = endpoint
    code, details = unary(("function-id", FID))
    assert code == Code.UNAUTHENTICATED and "Authorization" in details
    assert unary(("function-id", "nope"), ("authorization", "Bearer wrong"))[0] == (
        Code.UNAUTHENTICATED
    )
    assert unary(("authorization", "Basic abc"))[0] == Code.UNAUTHENTICATED


def test_a_key_without_invoke_function_or_the_function_is_permission_denied(
    endpoint: tuple[TestClient[Any], Callable[..., Any]],
) -> None:
    api, unary = endpoint
    lister, _ = call(api, api.app.state.platform.keys.create, ["list_functions"], ())
    code, _ = unary(("function-id", FID), ("authorization", f"Bearer {lister}"))
    assert code == Code.PERMISSION_DENIED
    # a key limited to another function
    body = {"name": "g", "inferenceUrl": "/grpc", "containerImage": "example/g:1"}
    fid = api.post("/v2/nvcf/functions", json=body, headers=bearer()).json()["function"]["id"]
    keys = api.app.state.platform.keys
    limited, _ = call(api, keys.create, ["invoke_function"], (f"{FID}/*",))
    code, details = unary(("function-id", fid), ("authorization", f"Bearer {limited}"))
    assert code == Code.PERMISSION_DENIED and fid in details


def test_metadata_naming_no_function_or_a_malformed_one_is_invalid_argument(
    endpoint: tuple[TestClient[Any], Callable[..., Any]],
) -> None:
    _, unary = endpoint
    code, details = unary(ADMIN)
    assert code == Code.INVALID_ARGUMENT and "function-id" in details
    code, details = unary(ADMIN, ("function-id", "../x"))
    assert (code, details) == (
        Code.INVALID_ARGUMENT,
        "Invalid request: function-id metadata '../x' is not a UUID",
    )
    code, details = unary(ADMIN, ("function-id", FID), ("function-version-id", "v1"))
    assert code == Code.INVALID_ARGUMENT and "function-version-id" in details


def test_an_unknown_or_undeployed_function_is_not_found(
    endpoint: tuple[TestClient[Any], Callable[..., Any]],
) -> None:
    api, unary = endpoint
    code, details = unary(ADMIN, ("function-id", FID))
    assert code == Code.NOT_FOUND and FID in details
    body = {"name": "g", "inferenceUrl": "/grpc", "containerImage": "example/g:1"}
    fid = api.post("/v2/nvcf/functions", json=body, headers=bearer()).json()["function"]["id"]
    code, details = unary(ADMIN, ("function-id", fid), method="/pkg.Svc/Streaming")
    assert code == Code.NOT_FOUND and fid in details  # INACTIVE: not invocable


def test_status_mappings() -> None:
    assert [code_of(s) for s in (200, 400, 401, 403, 404, 429, 503, 504, 500, 418)] == [
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.UNAUTHENTICATED,
        Code.PERMISSION_DENIED,
        Code.NOT_FOUND,
        Code.RESOURCE_EXHAUSTED,
        Code.UNAVAILABLE,
        Code.DEADLINE_EXCEEDED,
        Code.INTERNAL,
        Code.INTERNAL,
    ]
    assert [http_of(c) for c in (Code.OK, Code.OUT_OF_RANGE, Code.UNAVAILABLE, Code.DATA_LOSS)] == [
        200,
        400,
        503,
        500,
    ]
    assert problem_detail(b'{"status": 404, "detail": "gone"}') == "gone"
    assert problem_detail(b"not json") == ""


def test_grpcio_is_loaded_only_when_used() -> None:
    """A server without gRPC functions or endpoint does not pay grpcio's ~20 MB."""
    code = "import sys, nvcf_lite.app; assert 'grpc' not in sys.modules, 'grpc imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
