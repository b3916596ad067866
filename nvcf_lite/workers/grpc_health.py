"""The gRPC health check of function instances (grpc.health.v1, spec §4.1).

nvcf-lite needs no protobuf code for it: the request is an empty `HealthCheckRequest` (the
server as a whole), and the answer a `HealthCheckResponse` whose field 1 is the serving status
(1 = SERVING), read as raw bytes.
"""

from __future__ import annotations

import grpc
import grpc.aio

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
NOT_SERVING_STATUS = 503  # what the prober reports for an answer other than SERVING


def _raw(data: bytes) -> bytes:
    return data


async def health_status(
    address: str, port: int, timeout_s: float, serving_status: int
) -> int | None:
    """`serving_status` when `address`:`port` answers the health check SERVING, 503 when it
    answers anything else, None when nothing answered (a fresh channel each, as a new client
    would see it)."""
    async with grpc.aio.insecure_channel(f"{address}:{port}") as channel:
        check = channel.unary_unary(
            HEALTH_CHECK, request_serializer=_raw, response_deserializer=_raw
        )
        try:
            answer = await check(b"", timeout=timeout_s, wait_for_ready=False)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            answered = code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return NOT_SERVING_STATUS if answered else None
    return serving_status if answer == SERVING else NOT_SERVING_STATUS
