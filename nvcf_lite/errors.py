"""The one error type of the platform, the one table of its kinds, the one problem renderer.

The domain raises `NvcfError` subclasses; drivers translate foreign exceptions into them at
their edge. Every problem+json body the platform sends is built by `problem_body`: the
Litestar handlers and the pexec fast path (`api/problems.py`) for exceptions, and
`domain/invocation_rules.problem` for the outcomes of requests (worker and container errors).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec

PROBLEM_JSON = "application/problem+json"
# Hosted NVCF control-plane errors use this prefix (spec §5.1); the suffix is the kind.
TYPE_PREFIX = "urn:kaizen:problem-details:"
# Outcomes of an invocation the worker produced rather than the container (spec §5.3).
WORKER_PREFIX = "urn:nvcf-worker-service:problem-details:"
WORKER_ERROR = WORKER_PREFIX + "internal-server-error"
GATEWAY_TIMEOUT = WORKER_PREFIX + "gateway-timeout"
GONE = WORKER_PREFIX + "not-found"
# The connection to the container failed (refused, reset) before it answered.
CONNECTION_ERROR = "urn:inference-connection:problem-details:internal-server-error"
# A container's own answer >= 400, wrapped (spec §4.4, §5.2).
CONTAINER_PREFIX = "urn:inference-service:problem-details:"

# The kind (the `type` suffix) of each status. Hosted NVCF names a 409 `exists` (spec §5.1);
# the rest are the kebab reason phrases, spelled out so a Python release that renames a phrase
# (3.13: 413 "Content Too Large") does not change the wire.
KINDS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "exists",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "unprocessable-entity",
    429: "too-many-requests",
    431: "request-header-fields-too-large",
    500: "internal-server-error",
    503: "service-unavailable",
    507: "insufficient-storage",
}


def title(status: int) -> str:
    """The HTTP reason phrase (spec §5.1); "Error" for a status without one (a container may
    answer any number, and its problem still needs a title)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def kebab_phrase(status: int) -> str:
    """The reason phrase in kebab case ("I'm a Teapot" -> "im-a-teapot")."""
    return title(status).lower().replace(" ", "-").replace("'", "")


def kind(status: int) -> str:
    """The control-plane `type` suffix of a status: the table's, else the kebab phrase."""
    return KINDS.get(status) or kebab_phrase(status)


def problem_body(
    status: int, detail: str, *, instance: str, type_: str | None = None, request_id: str = ""
) -> bytes:
    """RFC 9457 problem+json: `type` (control-plane kind unless given), `title`, `status`,
    `detail` (the reason phrase when empty, spec §5.1), `instance`, `requestId` when known."""
    body: dict[str, Any] = {
        "type": type_ or TYPE_PREFIX + kind(status),
        "title": title(status),
        "status": status,
        "detail": detail or title(status),
        "instance": instance,
    }
    if request_id:
        body["requestId"] = request_id
    return msgspec.json.encode(body)


# The OpenAI error shape, answered instead of problem+json on the gateway's paths (/v1/...).
OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 503: "service_unavailable"}


def openai_error_body(status: int, message: str, code: str | None = None) -> bytes:
    """`{"error": {"message", "type", "code", "param"}}` as OpenAI's API answers errors."""
    type_ = _OPENAI_TYPES.get(status) or (
        "server_error" if status >= 500 else "invalid_request_error"
    )
    error = {
        "message": message or title(status),
        "type": type_,
        "code": code or _OPENAI_CODES.get(status) or kebab_phrase(status).replace("-", "_"),
        "param": None,
    }
    return msgspec.json.encode({"error": error})


class NvcfError(Exception):
    status: int = 500

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        openai_code: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.openai_code = openai_code  # its `code` in the OpenAI shape (the gateway's paths)

    @property
    def type(self) -> str:
        return TYPE_PREFIX + kind(self.status)


class Invalid(NvcfError):
    status = 400


class Unauthorized(NvcfError):
    status = 401


class Forbidden(NvcfError):
    status = 403


class NotFound(NvcfError):
    status = 404


class Conflict(NvcfError):
    status = 409


class PayloadTooLarge(NvcfError):
    status = 413


class UnsupportedMediaType(NvcfError):
    status = 415


class Unprocessable(NvcfError):
    status = 422


class TooManyRequests(NvcfError):
    status = 429


class NoCapacity(NvcfError):
    """The host cannot place what was asked for right now."""

    status = 409


class Unavailable(NvcfError):
    status = 503


class InsufficientStorage(NvcfError):
    status = 507
