"""Invocation (I1-I3, I5) and queue details (Q1-Q3), spec §2.3-2.4: thin handlers.

The handler records the request durably (through the domain), waits on its future up to the
poll window and answers 200 / 302 / problem+json, or 202 with NVCF-REQID to poll.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from litestar import Request, Response, get, post, route
from litestar.enums import HttpMethod
from litestar.params import FromPath
from litestar.response import Stream

from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.invocations import (
    Invocations,
    Pending,
    Queues,
    StreamReply,
    Ticket,
    poll_seconds,
    status_header,
)
from nvcf_lite.errors import NotFound
from nvcf_lite.models import Outcome, Principal, parse_uuid

INVOKE = scopes("invoke_function")
EXPOSE = {"Access-Control-Expose-Headers": "nvcf-reqid"}
_SKIP = {"content-type", "content-length", "transfer-encoding", "connection"}


def _headers(request: Request[Any, Any, Any]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]


def _invocations(request: Request[Any, Any, Any]) -> Invocations:
    inv: Invocations = request.app.state.invocations
    return inv


def answer(request_id: str, result: Outcome | Pending) -> Response[bytes]:
    if isinstance(result, Pending):
        return _pending(result.ticket)
    headers = {n: v for n, v in result.headers if n.lower() not in _SKIP}
    headers.update(
        {"NVCF-REQID": request_id, "NVCF-STATUS": status_header(result.status), **EXPOSE}
    )
    if result.location is not None:
        headers["Location"] = result.location
        return Response(b"", status_code=302, headers=headers)
    media = next((v for n, v in result.headers if n.lower() == "content-type"), None)
    return Response(result.body, status_code=result.status, headers=headers, media_type=media)


def _pending(ticket: Ticket) -> Response[bytes]:
    headers = {"NVCF-REQID": ticket.request_id, "NVCF-STATUS": ticket.nvcf_status, **EXPOSE}
    if ticket.note:
        headers["NVCF-LITE-DETAIL"] = ticket.note
    body = b""
    media = None
    if ticket.progress is not None:
        headers["NVCF-PERCENT-COMPLETE"] = str(ticket.progress.percent)
        body, media = ticket.progress.body, "application/json"
    return Response(body, status_code=202, headers=headers, media_type=media)


async def _invoke(
    request: Request[Any, Any, Any], principal: Principal, fid: str, vid: str | None, mode: str
) -> Response[Any]:
    inv = _invocations(request)
    headers = _headers(request)
    lowered = {n.lower(): v for n, v in headers}
    streaming = mode == "path" or "text/event-stream" in lowered.get("accept", "")
    default = inv.default_poll if not streaming else max(inv.default_poll, 1200)
    poll = poll_seconds(lowered, default, inv.max_poll)
    path = request.scope["path"]
    if mode == "path" and request.scope.get("query_string"):
        path += "?" + request.scope["query_string"].decode("latin-1")
    ticket = await inv.submit(
        principal,
        fid,
        vid,
        method=request.method,
        path=path,
        headers=headers,
        body=await request.body(),
        mode="stream" if streaming and mode == "pexec" else mode,
        poll=poll,
    )
    if ticket.stream is not None:
        return await _streamed(inv, ticket)
    result = await inv.wait(ticket, poll)
    if not isinstance(result, Pending):
        inv.delivered(ticket)
    return answer(ticket.request_id, result)


async def _streamed(inv: Invocations, ticket: Ticket) -> Response[Any]:
    assert ticket.stream is not None
    reply = await ticket.stream
    if isinstance(reply, Outcome):
        inv.delivered(ticket)
        return answer(ticket.request_id, reply)
    headers = {n: v for n, v in reply.headers if n.lower() not in _SKIP}
    headers.update({"NVCF-REQID": ticket.request_id, "NVCF-STATUS": status_header(reply.status)})
    media = next((v for n, v in reply.headers if n.lower() == "content-type"), None)

    async def body(r: StreamReply = reply) -> AsyncIterator[bytes]:
        try:
            async for chunk in r.chunks:
                yield chunk
        finally:
            await r.close()  # client gone or stream over: release the upstream request
            inv.delivered(ticket)

    return Stream(body(), status_code=reply.status, headers=headers, media_type=media)


@post(
    "/pexec/functions/{function_id:uuid}",
    opt=INVOKE,
    dependencies=PRINCIPAL,
    status_code=200,
    tags=["invocation"],
)
async def invoke_function(
    request: Request[Any, Any, Any], principal: Principal, function_id: FromPath[UUID]
) -> Response[Any]:
    return await _invoke(request, principal, str(function_id), None, "pexec")


@post(
    "/pexec/functions/{function_id:uuid}/versions/{version_id:uuid}",
    opt=INVOKE,
    dependencies=PRINCIPAL,
    status_code=200,
    tags=["invocation"],
)
async def invoke_version(
    request: Request[Any, Any, Any],
    principal: Principal,
    function_id: FromPath[UUID],
    version_id: FromPath[UUID],
) -> Response[Any]:
    return await _invoke(request, principal, str(function_id), str(version_id), "pexec")


@get("/pexec/status/{request_id:str}", opt=INVOKE, dependencies=PRINCIPAL, tags=["invocation"])
async def request_status(
    request: Request[Any, Any, Any], principal: Principal, request_id: FromPath[str]
) -> Response[bytes]:
    inv = _invocations(request)
    lowered = {n.lower(): v for n, v in _headers(request)}
    poll = poll_seconds(lowered, inv.default_poll, inv.max_poll)
    result = await inv.poll(principal, request_id, poll)
    return answer(request_id, result)


class QueueWire(Wire, kw_only=True):
    function_version_id: str
    function_name: str
    function_status: str
    queue_depth: int


class QueuesResponse(Wire, kw_only=True):
    function_id: str
    queues: list[QueueWire]


class PositionResponse(Wire, kw_only=True):
    function_id: str
    function_version_id: str
    position_in_queue: int


QUEUE = scopes("queue_details")


async def _depths(
    request: Request[Any, Any, Any], principal: Principal, fid: str, vid: str | None
) -> QueuesResponse:
    queues: Queues = request.app.state.queues
    entries = await queues.depths(principal, fid, vid)
    return QueuesResponse(
        function_id=fid,
        queues=[
            QueueWire(
                function_version_id=e.version_id,
                function_name=e.name,
                function_status=e.status,
                queue_depth=e.depth,
            )
            for e in entries
        ],
    )


@get("/queues/functions/{function_id:uuid}", opt=QUEUE, dependencies=PRINCIPAL, tags=["queues"])
async def function_queues(
    request: Request[Any, Any, Any], principal: Principal, function_id: FromPath[UUID]
) -> QueuesResponse:
    return await _depths(request, principal, str(function_id), None)


@get(
    "/queues/functions/{function_id:uuid}/versions/{version_id:uuid}",
    opt=QUEUE,
    dependencies=PRINCIPAL,
    tags=["queues"],
)
async def version_queue(
    request: Request[Any, Any, Any],
    principal: Principal,
    function_id: FromPath[UUID],
    version_id: FromPath[UUID],
) -> QueuesResponse:
    return await _depths(request, principal, str(function_id), str(version_id))


@get("/queues/{request_id:str}/position", opt=QUEUE, dependencies=PRINCIPAL, tags=["queues"])
async def queue_position(
    request: Request[Any, Any, Any], principal: Principal, request_id: FromPath[str]
) -> PositionResponse:
    queues: Queues = request.app.state.queues
    record, position = queues.position(principal, request_id)
    return PositionResponse(
        function_id=record.function_id,
        function_version_id=record.version_id,
        position_in_queue=position,
    )


ALL_METHODS = [m for m in HttpMethod if m not in (HttpMethod.HEAD,)]


@route("/{any_path:path}", http_method=ALL_METHODS, include_in_schema=False, status_code=200)
async def path_invocation(
    request: Request[Any, Any, Any], any_path: FromPath[str]
) -> Response[Any]:
    """I5 (§2.3.9): any method and path with a Function-ID header reaches the container as is."""
    fid = request.headers.get("function-id")
    if not fid:
        raise NotFound("Not Found")
    principal = await request.app.state.api_keys.authenticate(request.headers.get("authorization"))
    function_id = parse_uuid(fid)
    if function_id is None:
        raise NotFound(f"Function id '{fid}' is not a function id")
    vid_header = request.headers.get("function-version-id")
    version_id = parse_uuid(vid_header) if vid_header else None
    if vid_header and version_id is None:
        raise NotFound(f"Function version id '{vid_header}' is not a version id")
    return await _invoke(request, principal, function_id, version_id, "path")


INVOCATION_HANDLERS = [
    invoke_function,
    invoke_version,
    request_status,
    function_queues,
    version_queue,
    queue_position,
]
