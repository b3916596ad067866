"""The gRPC echo function of the tests (image nvcf-lite-test/grpc-echo): grpcio, no protobuf.

Messages are raw bytes holding JSON, so neither side needs generated code. Service
`nvcf.test.Echo` on $GRPC_PORT (default 8001), with the standard `grpc.health.v1.Health/Check`
(SERVING; NOT_SERVING with FAIL_HEALTH=1):

    Unary         -> {"method", "message": <the request as text>, "metadata": {...}}; a request
                     {"code": "NOT_FOUND", "details": "..."} ends the call with that status
    ServerStream  {"count": n, "interval": s} -> n messages {"i": k}, s seconds apart
    Bidi          each message back as it arrives, prefixed "echo:" (until the client ends)
    Collect       the client's messages, once it has sent them all, joined with "|"

Every call sends the trailing metadata `x-echo-trailer: done`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

SERVICE = "nvcf.test.Echo"
SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}


def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-echo-trailer", "done"),))
    try:
        control: Any = json.loads(request or b"{}")
    except ValueError:
        control = None
    if isinstance(control, dict) and "code" in control:
        context.abort(grpc.StatusCode[control["code"]], control.get("details", ""))
    answer = {
        "method": "Unary",
        "message": request.decode("utf-8", "replace"),
        "metadata": _metadata(context),
    }
    return json.dumps(answer).encode()


def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    context.set_trailing_metadata((("x-echo-trailer", "done"),))
    control = json.loads(request or b"{}")
    for i in range(int(control.get("count", 3))):
        if i:
            time.sleep(float(control.get("interval", 0)))
        yield json.dumps({"i": i}).encode()


def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    context.set_trailing_metadata((("x-echo-trailer", "done"),))
    for message in requests:
        yield b"echo:" + message


def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-echo-trailer", "done"),))
    return b"|".join(requests)


def health(request: bytes, context: grpc.ServicerContext) -> bytes:
    return NOT_SERVING if os.environ.get("FAIL_HEALTH") else SERVING


def main() -> int:
    port = int(os.environ.get("GRPC_PORT", "8001"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    echo = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
    }
    checks = {"Check": grpc.unary_unary_rpc_method_handler(health)}
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(SERVICE, echo),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", checks),
        )
    )
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print(f"grpc echo listening on {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
