"""Every operation of the served OpenAPI document names its problem+json answers (spec §5).

Litestar documents only what a handler returns when it succeeds, so a client (or a fuzzer)
reading /openapi/openapi.json would meet a 400, 401 or 429 that the document never named. The
errors are the same everywhere (one renderer, `errors.problem_body`), so they are added here,
once, when the document is rendered: every operation gains the problem statuses a caller can
meet on it, and `default` (any other status, a container's own error passed through
included) is a problem too. An error status already there (Litestar documents a 400 for
routes with parameters, as plain JSON) is documented as the problem it is.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

from nvcf_lite.api.openapi_constraints import state_constraints
from nvcf_lite.errors import PROBLEM_JSON, title

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details (spec §5.1)",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "requestId": {"type": "string"},
    },
}
REF = {"$ref": "#/components/schemas/Problem"}
# What any caller can meet on any operation: a malformed request or id, a key that is
# missing or lacks the scope, something absent, a body or a head over its limit, too many
# requests.
EVERYWHERE = (400, 401, 403, 404, 413, 429, 431)
CHANGES = (409, 415)  # a state that refuses the change; a body that is not JSON
INVOCATION = (502, 503, 504)  # the worker's outcomes on pexec and I5 (spec §5.2)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _problem(status: int | str) -> dict[str, Any]:
    phrase = title(status) if isinstance(status, int) else "Any other error"
    return {"description": phrase, "content": {PROBLEM_JSON: {"schema": REF}}}


def _statuses(path: str, method: str) -> tuple[int, ...]:
    statuses: tuple[int, ...] = EVERYWHERE
    if method in ("put", "post", "patch", "delete"):
        statuses += CHANGES
    if "/pexec/" in path or path.startswith("/{"):
        statuses += INVOCATION
    return statuses


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the problem answers added to every operation (idempotent)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for code in [c for c in responses if c.isdigit() and int(c) >= 400]:
                responses[code] = _problem(int(code))  # Litestar's own 400 says plain JSON
            for status in _statuses(path, method):
                responses.setdefault(str(status), _problem(status))
            responses.setdefault("default", _problem("default"))
    return schema


class ProblemsJsonPlugin(JsonRenderPlugin):
    """/openapi/openapi.json: Litestar's document with the problem answers of every operation."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, state_constraints(document_problems(openapi_schema)))
