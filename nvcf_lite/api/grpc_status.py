"""gRPC status codes <-> the platform's HTTP statuses (spec §5.2), for the gRPC endpoint.

A platform error (an `NvcfError`, or the problem outcome of a request that never reached an
instance) becomes the gRPC code a client expects of NVCF; a proxied call's own code becomes the
HTTP status its request is recorded and counted with (the mapping of NVCF's invocation service).
"""

from __future__ import annotations

import grpc
import msgspec

Code = grpc.StatusCode

_CODE_OF_HTTP = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ALREADY_EXISTS,
    410: Code.CANCELLED,
    412: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}

_HTTP_OF_CODE = {
    Code.OK: 200,
    Code.INVALID_ARGUMENT: 400,
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.FAILED_PRECONDITION: 412,
    Code.CANCELLED: 503,
    Code.RESOURCE_EXHAUSTED: 503,
    Code.ABORTED: 503,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
    Code.UNIMPLEMENTED: 501,
}


def code_of(status: int) -> grpc.StatusCode:
    """The gRPC code of a platform answer with this HTTP status."""
    if status < 400:
        return Code.OK
    return _CODE_OF_HTTP.get(status, Code.INTERNAL)


def http_of(code: grpc.StatusCode) -> int:
    """The HTTP status a proxied call that ended with `code` is recorded with."""
    return _HTTP_OF_CODE.get(code, 500)


class _Problem(msgspec.Struct):
    detail: str = ""


def problem_detail(body: bytes) -> str:
    """The `detail` of a problem+json body (empty when it is none)."""
    try:
        return msgspec.json.decode(body, type=_Problem).detail
    except msgspec.DecodeError:
        return ""
