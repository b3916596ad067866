"""The one place errors become RFC 9457 problem+json (spec §5)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from nvcf_lite import logs
from nvcf_lite.errors import TYPE_PREFIX, NvcfError

log = logging.getLogger("nvcf_lite.api")

PROBLEM_JSON = "application/problem+json"

_KIND_BY_STATUS = {
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
    500: "internal-server-error",
    503: "service-unavailable",
}


def problem_body(
    status: int,
    detail: str,
    *,
    instance: str,
    type_: str | None = None,
    request_id: str | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "type": type_ or TYPE_PREFIX + _KIND_BY_STATUS.get(status, "error"),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or HTTPStatus(status).phrase,
        "instance": instance,
    }
    if request_id:
        body["requestId"] = request_id
    return msgspec.json.encode(body)


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str,
    type_: str | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> Response[bytes]:
    body = problem_body(status, detail, instance=instance, type_=type_, request_id=request_id)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _instance(request: Request[Any, Any, Any]) -> str:
    return request.scope.get("path", "")


def nvcf_error_handler(request: Request[Any, Any, Any], exc: NvcfError) -> Response[bytes]:
    return problem_response(
        exc.status, exc.detail, instance=_instance(request), type_=exc.type, headers=exc.headers
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    detail = exc.detail
    if isinstance(exc, ValidationException) and exc.extra:
        detail = f"{detail}: {_validation_text(exc.extra)}"
    headers = dict(exc.headers or {})
    return problem_response(exc.status_code, detail, instance=_instance(request), headers=headers)


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


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    params = request.path_params
    about = logs.ids(
        function_id=str(params.get("function_id") or ""),
        version_id=str(params.get("version_id") or ""),
    )
    log.exception(
        "unhandled error on %s %s", request.method, _instance(request), exc_info=exc, extra=about
    )
    return problem_response(500, f"Internal error: {exc}", instance=_instance(request))


EXCEPTION_HANDLERS: Any = {
    NvcfError: nvcf_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
