"""Exceptions become RFC 9457 problem+json here (spec §5), for the Litestar handlers and the
pexec fast path alike: one ladder (`problem_of`) over the one renderer in `errors`. On the
OpenAI-compatible gateway's paths (/v1/...) the same answer takes OpenAI's error shape."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from nvcf_lite import logs
from nvcf_lite.api.host_routes import client_path
from nvcf_lite.errors import (
    OPENAI_PREFIX,
    PROBLEM_JSON,
    NvcfError,
    PayloadTooLarge,
    openai_error_body,
    problem_body,
)

log = logging.getLogger("nvcf_lite.api")
JSON = "application/json"

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "Problem", "body_too_large", "problem_of"]

Problem = tuple[int, list[tuple[str, str]], bytes]  # status, headers, problem+json body


def problem_of(
    exc: BaseException, method: str, instance: str, about: dict[str, Any] | None = None
) -> Problem:
    """The answer to `exc` on the request `method instance` (its path); an unexpected exception
    is logged (with `about`, the request's ids) and answered 500 with its message."""
    if isinstance(exc, NvcfError):
        return _render(exc.status, exc.detail, instance, exc.type, exc.headers)
    if isinstance(exc, HTTPException):
        detail = exc.detail
        if isinstance(exc, ValidationException) and exc.extra:
            detail = f"{detail}: {_validation_text(exc.extra)}"
        return _render(exc.status_code, detail, instance, None, exc.headers)
    log.exception("unhandled error on %s %s", method, instance, exc_info=exc, extra=about or {})
    return _render(500, f"Internal error: {exc}", instance, None, None)


def _render(
    status: int, detail: str, instance: str, type_: str | None, headers: dict[str, str] | None
) -> Problem:
    body = problem_body(status, detail, instance=instance, type_=type_)
    return status, list((headers or {}).items()), body


def body_too_large(limit: int) -> PayloadTooLarge:
    """A request body over `server.max_body_bytes` (or a route's own limit)."""
    return PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")


def _validation_text(extra: Any) -> str:
    if isinstance(extra, list):
        parts = []
        for item in extra:
            if isinstance(item, dict):
                where = item.get("key") or item.get("source") or ""
                parts.append(f"{item.get('message', '')}{f' ({where})' if where else ''}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(extra)


def _handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    params = request.path_params
    about = logs.ids(
        function_id=str(params.get("function_id") or ""),
        version_id=str(params.get("version_id") or ""),
    )
    instance = client_path(request.scope)
    if isinstance(exc, RequestEntityTooLarge):
        # Litestar's detail is only the phrase; the fast path's names the limit, which is what
        # a client needs to act on: both say the latter (spec §5.1, `detail` is the message).
        limit = request.route_handler.resolve_request_max_body_size()
        exc = body_too_large(limit) if limit else exc
    status, headers, body = problem_of(exc, request.method, instance, about)
    # The gateway's paths answer as OpenAI does (a path-preserving call, I5, names its
    # function in a Function-ID header or its Host, routed under another path: its answers
    # stay problem+json)
    routed = str(request.scope.get("path", ""))
    if routed.startswith(OPENAI_PREFIX) and "function-id" not in request.headers:
        detail = msgspec.json.decode(body).get("detail", "")
        code = exc.openai_code if isinstance(exc, NvcfError) else None
        body = openai_error_body(status, detail, code)
        return Response(body, status_code=status, media_type=JSON, headers=dict(headers))
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers))


EXCEPTION_HANDLERS: Any = {Exception: _handler}
