"""The invocation hot path served below the framework.

`POST /v2/nvcf/pexec/functions/{fid}[/versions/{vid}]` without SSE, and the status poll
`GET /v2/nvcf/pexec/status/{requestId}` (I3: every 202's client sends at least one), are
answered straight from the ASGI scope: the same domain calls and answers as the Litestar routes
in `api/invocations` (which stay registered for the OpenAPI document, the org path families
and streaming), but without the framework's per-request routing, signature, guard, dependency
and response machinery, which costs more than the platform's own work for a small request.

(granian's RSGI interface was measured as the cheaper server interface, ~30 against ~45-50 µs
of CPU per request for a trivial app, but its scope has only the percent-decoded path, which
the path-preserving I5 route must pass on as sent, and it drops header values that are not
ASCII: the server stays ASGI.)
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from nvcf_lite import logs
from nvcf_lite.api.invocations import Reply, pexec_reply, reply_parts
from nvcf_lite.api.problems import PROBLEM_JSON, body_too_large, problem_of
from nvcf_lite.api.services import Services
from nvcf_lite.domain.auth import require_scope
from nvcf_lite.domain.invocation_rules import poll_seconds, require_uuid
from nvcf_lite.errors import problem_body

# Plain ASGI shapes: the raw messages are built and read here without the framework's types.
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_UUID = "[0-9a-fA-F-]{36}"
PEXEC = re.compile(rf"^/v2/nvcf/pexec/functions/({_UUID})(?:/versions/({_UUID}))?$")
STATUS = re.compile(r"^/v2/nvcf/pexec/status/([^/]+)$")  # the id is checked as the route does


def claims(scope: Scope) -> re.Match[str] | None:
    """The path match when the fast path serves this request (POST pexec, not SSE; GET
    status)."""
    if scope["type"] != "http":
        return None
    method = scope["method"]
    if method == "GET":
        return STATUS.match(scope["path"])
    if method != "POST":
        return None
    match = PEXEC.match(scope["path"])
    if match is None:
        return None
    for name, value in scope["headers"]:
        if name == b"accept" and b"text/event-stream" in value:
            return None
    return match


async def serve(
    services: Services, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
) -> None:
    status_poll = match.re is STATUS
    try:
        if status_poll:
            reply = await _status_reply(services, scope, match)
        else:
            reply = await _reply(services, scope, receive, match)
    except Exception as exc:  # the same ladder as the Litestar route's exception handler
        if status_poll:
            about = logs.ids(request_id=match.group(1))
        else:
            about = logs.ids(function_id=match.group(1), version_id=match.group(2))
        status, headers, body = problem_of(exc, scope["method"], scope["path"], about)
        reply = (status, headers, body, PROBLEM_JSON)
    await _send(send, reply)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


async def _status_reply(services: Services, scope: Scope, match: re.Match[str]) -> Reply:
    """I3, in the order of the Litestar route: the key (401) and its scope (403) as its guard
    checks them, then the id (400) and the poll window (400)."""
    principal = await services.keys.authenticate(_authorization(scope))
    require_scope(principal, "invoke_function")
    request_id = require_uuid(match.group(1), "request id")
    inv = services.invocations
    lowered = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    poll = poll_seconds(lowered, inv.default_poll, inv.max_poll)
    return reply_parts(request_id, await inv.poll(principal, request_id, poll))


async def _reply(services: Services, scope: Scope, receive: Receive, match: re.Match[str]) -> Reply:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    authorization = next((v for k, v in headers if k.lower() == "authorization"), None)
    principal = await services.keys.authenticate(authorization)
    # after the key, as the Litestar route does: a malformed id is a 400 that names it
    fid = require_uuid(match.group(1), "function id")
    vid = match.group(2)
    version = require_uuid(vid, "function version id") if vid else None
    body = await _body(receive, services.max_body_bytes)
    inv = services.invocations
    return await pexec_reply(inv, principal, fid, version, scope, headers, body, receive)  # type: ignore[arg-type]


async def _body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def head_size(scope: Scope) -> int:
    """Bytes of the request's header names and values together."""
    return sum(len(name) + len(value) for name, value in scope["headers"])


async def refuse_head(scope: Scope, send: Send, limit: int) -> None:
    """431 problem+json for a request head over `server.max_header_bytes` (its body unread)."""
    detail = f"Request header fields exceed the limit of {limit} bytes"
    body = problem_body(431, detail, instance=scope["path"])
    await _send(send, (431, [("Connection", "close")], body, PROBLEM_JSON))


async def _send(send: Send, reply: Reply) -> None:
    status, headers, body, media = reply
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    # Litestar gives every answer with a body-allowing status a Content-Type (JSON when none is
    # named), so the I3 poll and the framework's pexec route send one on an empty 202 or 302;
    # the fast path does too, so a client sees the same headers whichever route answered.
    raw.append((b"content-type", (media or "application/json").encode("latin-1")))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
