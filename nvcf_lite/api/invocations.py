"""Invocation (I1-I3, I5), spec §2.3: thin handlers (queue details Q1-Q3: api/queues.py).

The handler records the request durably (through the domain), waits on its future up to the
poll window and answers 200 / 302 / problem+json, or 202 with NVCF-REQID to poll.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from litestar import Request, Response, get, post, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.params import FromPath
from litestar.response import Stream
from litestar.types import Receive, Scope

from nvcf_lite.api.gateway_models import ONE_MODEL, retrieve_model
from nvcf_lite.api.host_routes import HOST_ROUTE, SCOPE_KEY
from nvcf_lite.api.queues import QUEUE_HANDLERS
from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.invocation_rules import (
    client_path,
    poll_seconds,
    problem,
    require_uuid,
    status_header,
)
from nvcf_lite.domain.invocations import Invocations, Pending, StreamReply, Ticket
from nvcf_lite.errors import GATEWAY_TIMEOUT, NotFound
from nvcf_lite.models import Outcome, Principal

INVOKE = scopes("invoke_function")
IN_HANDLER: dict[str, Any] = {"auth": "in the handler (invoke_function)"}
QUICK_S = 0.05
EXPOSE = {"Access-Control-Expose-Headers": "nvcf-reqid"}
_SKIP = {"content-type", "content-length", "transfer-encoding", "connection"}
Caller = NamedDependency[Principal]
R = TypeVar("R")


def _headers(request: Request[Any, Any, Any]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]


def _invocations(request: Request[Any, Any, Any]) -> Invocations:
    return services_of(request).invocations


def reply_parts(request_id: str, result: Outcome | Pending) -> Reply:
    """Status, headers, body and media type of an answer (NVCF-REQID/-STATUS on all)."""
    if isinstance(result, Pending):
        return _pending(result)
    headers = [(n, v) for n, v in result.headers if n.lower() not in _SKIP]
    headers += [
        ("NVCF-REQID", request_id),
        ("NVCF-STATUS", status_header(result.status)),
        *EXPOSE.items(),
    ]
    if result.location is not None:
        return 302, [*headers, ("Location", result.location)], b"", None
    media = next((v for n, v in result.headers if n.lower() == "content-type"), None)
    return result.status, headers, result.body, media


def answer(request_id: str, result: Outcome | Pending) -> Response[bytes]:
    status, headers, body, media = reply_parts(request_id, result)
    return Response(body, status_code=status, headers=dict(headers), media_type=media)


def _pending(pending: Pending) -> Reply:
    ticket, progress = pending.ticket, pending.progress
    headers = [
        ("NVCF-REQID", ticket.request_id),
        ("NVCF-STATUS", ticket.nvcf_status),
        *EXPOSE.items(),
    ]
    if ticket.note:
        headers.append(("NVCF-LITE-DETAIL", ticket.note))
    if progress is None:
        return 202, headers, b"", None
    headers.append(("NVCF-PERCENT-COMPLETE", str(progress.percent)))
    return 202, headers, progress.body, "application/json"


async def _client_gone(receive: Receive) -> None:
    """Returns once the client has disconnected (its body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_gone(
    receive: Receive, inv: Invocations, ticket: Ticket, work: Awaitable[R]
) -> R | None:
    """`work`'s result; None when the client disconnected first, which cancels the request
    (spec §2.3.4: a client that leaves before its answer cancels it).

    `work` runs in this task; one watcher task waits for the disconnect and cancels this task
    if it comes first. (A task for `work` too and asyncio.wait over both cost ~5% of the CPU
    of each request held for its poll window, the async-accept benchmark's whole load.)
    """
    handler = asyncio.current_task()
    assert handler is not None
    armed = True

    def on_gone(watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled():
            watcher.exception()  # a broken receive counts as gone; retrieved, not logged
            if armed:
                handler.cancel()

    gone = asyncio.ensure_future(_client_gone(receive))
    gone.add_done_callback(on_gone)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone.done() or gone.cancelled():
            raise  # cancelled from outside (shutdown), not by the watcher
        if handler.uncancel() > 0:
            raise  # and from outside too
        inv.cancel(ticket, "the client disconnected before its answer")
        return None
    finally:
        armed = False  # synchronously after `work`: a disconnect seen later cancels nothing
        gone.cancel()


async def _invoke(
    request: Request[Any, Any, Any], principal: Principal, fid: str, vid: str | None, mode: str
) -> Response[Any]:
    inv = _invocations(request)
    headers = _headers(request)
    lowered = {n.lower(): v for n, v in headers}
    streaming = mode == "path" or "text/event-stream" in lowered.get("accept", "")
    if not streaming:
        body = await request.body()
        status, out, data, media = await pexec_reply(
            inv, principal, fid, vid, request.scope, headers, body, request.receive
        )
        return Response(data, status_code=status, headers=dict(out), media_type=media)
    poll = poll_seconds(lowered, max(inv.default_poll, 1200), inv.max_poll)
    path = _target(request) if mode == "path" else request.scope["path"]
    ticket = await inv.submit(
        principal,
        fid,
        vid,
        method=request.method,
        path=path,
        headers=headers,
        body=await request.body(),
        mode="stream" if mode == "pexec" else mode,
        poll=poll,
    )
    return await _streamed(request, inv, ticket, poll)


Reply = tuple[int, list[tuple[str, str]], bytes, str | None]  # status, headers, body, media


async def pexec_reply(
    inv: Invocations,
    principal: Principal,
    fid: str,
    vid: str | None,
    scope: Scope,
    headers: list[tuple[str, str]],
    body: bytes,
    receive: Receive,
) -> Reply:
    """I1/I2 without streaming: accept, wait up to the poll window, the answer as plain parts
    (the Litestar route and the raw fast path in `api/fastpath.py` both send it)."""
    lowered = {n.lower(): v for n, v in headers}
    poll = poll_seconds(lowered, inv.default_poll, inv.max_poll)
    ticket = await inv.submit(
        principal,
        fid,
        vid,
        method="POST",
        path=scope["path"],
        headers=headers,
        body=body,
        mode="pexec",
        poll=poll,
    )
    # Most answers come within milliseconds: wait for those cheaply, and only then pay for
    # watching the client connection (to cancel the request if the client leaves).
    result: Outcome | Pending | None = await inv.settle(ticket, min(poll, QUICK_S))
    if result is None:
        rest = inv.wait(ticket, max(0.0, poll - QUICK_S))
        result = await unless_gone(receive, inv, ticket, rest)
    if result is None:
        inv.delivered(ticket)
        return 499, [], b"", None  # nobody reads it
    if not isinstance(result, Pending):
        inv.delivered(ticket)
    return reply_parts(ticket.request_id, result)


def _target(request: Request[Any, Any, Any]) -> str:
    """Path and query as the client sent them, still percent-encoded (I5 passes them on)."""
    raw: bytes | None = request.scope.get("raw_path")
    path = raw.split(b"?", 1)[0].decode("latin-1") if raw else request.scope["path"]
    query: bytes = request.scope.get("query_string") or b""
    return path + ("?" + query.decode("latin-1") if query else "")


async def first_bytes(inv: Invocations, ticket: Ticket, poll: int) -> StreamReply | Outcome:
    """The container's answer head (or a final outcome) within the poll window, else 504."""
    assert ticket.stream is not None
    try:
        return await asyncio.wait_for(asyncio.shield(ticket.stream), poll)
    except TimeoutError:
        inv.cancel(ticket, f"no instance answered within the poll window ({poll} s)")
        rec = ticket.record
        detail = (
            f"No instance answered this streamed request within {poll} s "
            f"(NVCF-POLL-SECONDS); it was cancelled"
        )
        return problem(504, GATEWAY_TIMEOUT, detail, client_path(rec), rec.request_id)


async def _streamed(
    request: Request[Any, Any, Any], inv: Invocations, ticket: Ticket, poll: int
) -> Response[Any]:
    """Pass the container's answer through as it arrives (SSE §2.3.6, path-preserving §2.3.9)."""
    reply = await unless_gone(request.receive, inv, ticket, first_bytes(inv, ticket, poll))
    if reply is None:
        inv.delivered(ticket)
        return Response(b"", status_code=499)  # nobody reads it
    if isinstance(reply, Outcome):
        inv.delivered(ticket)
        return answer(ticket.request_id, reply)
    return pass_through(inv, ticket, reply)


Chunks = AsyncIterator[bytes]


def pass_through(
    inv: Invocations,
    ticket: Ticket,
    reply: StreamReply,
    observe: Callable[[Chunks], Chunks] | None = None,
) -> Stream:
    """The container's streamed answer as the client's response, chunk by chunk (`observe`
    may look at the chunks on their way: the gateway counts tokens there)."""
    headers = passed_headers(ticket, reply)
    media = next((v for n, v in reply.headers if n.lower() == "content-type"), None)
    started = False

    async def body(r: StreamReply = reply) -> AsyncIterator[bytes]:
        nonlocal started
        started = True
        try:
            async for chunk in observe(r.chunks) if observe else r.chunks:
                yield chunk
        finally:
            await r.close()  # client gone or stream over: release the upstream request
            inv.delivered(ticket)

    chunks = body()
    loop = asyncio.get_running_loop()

    def never_read() -> None:
        # A client gone before the first chunk: the generator never ran, so its finally
        # cannot release the container's connection and the instance slot; do it here.
        if not started and not loop.is_closed():
            loop.call_soon_threadsafe(_release, inv, ticket, reply)

    weakref.finalize(chunks, never_read)
    return Stream(chunks, status_code=reply.status, headers=headers, media_type=media)


def passed_headers(ticket: Ticket, reply: StreamReply | Outcome) -> dict[str, str]:
    """The container's answer headers as the client gets them, with NVCF-REQID/-STATUS (of a
    reply passing through, or of one kept and answered again)."""
    headers = {n: v for n, v in reply.headers if n.lower() not in _SKIP}
    headers.update(
        {
            "NVCF-REQID": ticket.request_id,
            "NVCF-STATUS": status_header(reply.status),
            **EXPOSE,
        }
    )
    return headers


def _release(inv: Invocations, ticket: Ticket, reply: StreamReply) -> None:
    task = asyncio.ensure_future(reply.close())
    task.add_done_callback(lambda _: inv.delivered(ticket))


async def _caller(request: Request[Any, Any, Any]) -> Principal:
    """The invocation routes authenticate in the handler, not through the app-wide guard and
    dependency injection: on the hot path that machinery costs more than the check itself.
    (401 without a valid key; the invoke_function scope is checked by the domain.)"""
    keys: Keys = services_of(request).keys
    authorization = next(
        (v.decode("latin-1") for k, v in request.scope["headers"] if k == b"authorization"), None
    )
    return await keys.authenticate(authorization)


# Ids are taken as text and checked after the key: a malformed one is a 400 problem that
# names it, not the catch-all route's 404 (api/fastpath.py answers the same).
@post(
    "/pexec/functions/{function_id:str}",
    opt=IN_HANDLER,
    status_code=200,
    tags=["invocation"],
)
async def invoke_function(
    request: Request[Any, Any, Any], function_id: FromPath[str]
) -> Response[Any]:
    principal = await _caller(request)
    fid = require_uuid(function_id, "function id")
    return await _invoke(request, principal, fid, None, "pexec")


@post(
    "/pexec/functions/{function_id:str}/versions/{version_id:str}",
    opt=IN_HANDLER,
    status_code=200,
    tags=["invocation"],
)
async def invoke_version(
    request: Request[Any, Any, Any],
    function_id: FromPath[str],
    version_id: FromPath[str],
) -> Response[Any]:
    principal = await _caller(request)
    fid = require_uuid(function_id, "function id")
    vid = require_uuid(version_id, "function version id")
    return await _invoke(request, principal, fid, vid, "pexec")


@get("/pexec/status/{request_id:str}", opt=INVOKE, dependencies=PRINCIPAL, tags=["invocation"])
async def request_status(
    request: Request[Any, Any, Any], principal: Caller, request_id: FromPath[str]
) -> Response[bytes]:
    inv = _invocations(request)
    request_id = require_uuid(request_id, "request id")
    lowered = {n.lower(): v for n, v in _headers(request)}
    poll = poll_seconds(lowered, inv.default_poll, inv.max_poll)
    result = await inv.poll(principal, request_id, poll)
    return answer(request_id, result)


ALL_METHODS = [m for m in HttpMethod if m not in (HttpMethod.HEAD,)]


@route("/{any_path:path}", http_method=ALL_METHODS, include_in_schema=False, status_code=200)
async def path_invocation(
    request: Request[Any, Any, Any], any_path: FromPath[str]
) -> Response[Any]:
    """I5 (§2.3.9): any method and path with a Function-ID header reaches the container as is."""
    fid = request.headers.get("function-id")
    if not fid:
        if request.method == "GET" and any_path.startswith(ONE_MODEL):  # the gateway's
            return await retrieve_model(request, any_path[len(ONE_MODEL) :])
        raise NotFound("Not Found")
    principal = await services_of(request).keys.authenticate(request.headers.get("authorization"))
    function_id = require_uuid(fid, "Function-ID header")
    vid_header = request.headers.get("function-version-id")
    version_id = require_uuid(vid_header, "Function-Version-ID header") if vid_header else None
    return await _invoke(request, principal, function_id, version_id, "path")


async def _by_host(request: Request[Any, Any, Any]) -> Response[Any]:
    """I5 by host (§2.3.9, api/host_routes): the ids come from the Host header."""
    ids = cast("tuple[str, str | None] | None", request.scope.get(SCOPE_KEY))
    if ids is None:  # the prefix asked for directly, not through a function's host
        raise NotFound("Not Found")
    principal = await services_of(request).keys.authenticate(request.headers.get("authorization"))
    function_id = require_uuid(ids[0], "function id in the Host header")
    version_id = require_uuid(ids[1], "function version id in the Host header") if ids[1] else None
    return await _invoke(request, principal, function_id, version_id, "path")


HOST_PATH = [HOST_ROUTE, HOST_ROUTE + "/{any_path:path}"]
host_invocation = route(
    HOST_PATH, http_method=ALL_METHODS, include_in_schema=False, status_code=200
)(_by_host)
host_invocation_head = route(
    HOST_PATH, http_method=[HttpMethod.HEAD], include_in_schema=False, status_code=200
)(_by_host)


# Litestar refuses HEAD in a route with other methods (a HEAD answer has no body), so HEAD has
# a route of its own; the container's HEAD answer (status and headers) comes back as it is.
path_invocation_head = route(
    "/{any_path:path}", http_method=[HttpMethod.HEAD], include_in_schema=False, status_code=200
)(path_invocation.fn)


INVOCATION_HANDLERS = [invoke_function, invoke_version, request_status, *QUEUE_HANDLERS]
