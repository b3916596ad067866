"""The OpenAI-compatible gateway (issue 15): `GET /v1/models`, `POST /v1/chat/completions`,
`/v1/completions` and `/v1/embeddings`, answered from the same process for the `openai` SDK,
langchain's `ChatNVIDIA(base_url=...)` and curl alike.

A call is routed by its body's `model` (domain/gateway) and then is a path-preserving
invocation like I5: `Invocations.submit` records and queues it durably, the dispatcher places
it (scaling from zero), forwards it and counts it, and its answer comes back as the container
sends it, SSE chunk by chunk. Only the edges differ: the tokens the answer reports are counted
on the way (token limits, /metrics) and errors take OpenAI's shape (api/problems). A call that
carries a `Function-ID` header is an I5 path-preserving invocation of that function, as before.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from litestar import Request, Response, get, post, route
from litestar.enums import HttpMethod

from nvcf_lite.api.gateway_models import JSON, model_entry
from nvcf_lite.api.invocations import (
    IN_HANDLER,
    Chunks,
    first_bytes,
    pass_through,
    passed_headers,
    path_invocation,
    unless_gone,
)
from nvcf_lite.api.services import services_of
from nvcf_lite.domain.auth import require_scope
from nvcf_lite.domain.gateway import Gateway, Target
from nvcf_lite.domain.invocation_rules import poll_seconds
from nvcf_lite.domain.invocations import Invocations, StreamReply, Ticket
from nvcf_lite.domain.token_limits import BodyUsage, UsageScanner, prompt_estimate
from nvcf_lite.errors import Conflict, Invalid, openai_error_body
from nvcf_lite.models import Outcome, Principal

STREAM_POLL_S = 1200  # the default wait for a first byte (a cold start included)
# Not in the served OpenAPI document (its errors are problem+json, these are OpenAI's; OpenAI
# documents its API): README "Serving LLMs" does.
DOC: dict[str, Any] = {"include_in_schema": False}


async def _principal(request: Request[Any, Any, Any]) -> Principal:
    return await services_of(request).keys.authenticate(request.headers.get("authorization"))


def _model_of(raw: bytes) -> str:
    """The body's `model`; 400 when it has none."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise Invalid(f"The request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # msgspec's depth limit: a client's doing, not a bug
        raise Invalid("The request body's JSON is nested too deeply") from exc
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Invalid("'model' is required: the name of a model (GET /v1/models lists them)")
    return model


async def _path_invocation(request: Request[Any, Any, Any]) -> Response[Any]:
    """I5 (§2.3.9) on a gateway path: a Function-ID header names the function."""
    answered: Response[Any] = await path_invocation.fn(request, any_path=request.scope["path"])
    return answered


@get("/v1/models", opt=IN_HANDLER, **DOC)
async def list_models(request: Request[Any, Any, Any]) -> Response[Any]:
    """The models of the caller's ACTIVE LLM functions (OpenAI's model list)."""
    if request.headers.get("function-id"):
        return await _path_invocation(request)
    principal = await _principal(request)
    models = await services_of(request).gateway.models(principal)
    data = [model_entry(m) for m in models]
    return Response(msgspec.json.encode({"object": "list", "data": data}), media_type=JSON)


async def _call(request: Request[Any, Any, Any], endpoint: str) -> Response[Any]:
    if request.headers.get("function-id"):  # I5 names the function itself
        return await _path_invocation(request)
    principal = await _principal(request)
    require_scope(principal, "invoke_function")
    raw = await request.body()
    model = _model_of(raw)
    services = services_of(request)
    gateway, inv = services.gateway, services.invocations
    target = await gateway.target(principal, model, endpoint)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    lowered = {n.lower(): v for n, v in headers}
    poll = poll_seconds(lowered, max(inv.default_poll, STREAM_POLL_S), inv.max_poll)
    ticket = await inv.submit(
        principal,
        target.model.function_id,
        target.model.version_id,
        method="POST",
        path=target.path,
        headers=headers,
        body=raw,
        mode="path",
        poll=poll,
        replayable=True,
    )
    if ticket.stream is None or ticket.stream_claimed:  # a retry of an Idempotency-Key
        return await _replayed(request, inv, ticket, poll)
    ticket.stream_claimed = True
    reply = await unless_gone(request.receive, inv, ticket, first_bytes(inv, ticket, poll))
    if reply is None:
        inv.delivered(ticket)
        return Response(b"", status_code=499)  # nobody reads it
    if isinstance(reply, Outcome):
        inv.delivered(ticket)
        gateway.answered(principal, target, endpoint, reply.status)
        return _failed(ticket, reply)
    media = next((v for n, v in reply.headers if n.lower() == "content-type"), "")
    sse = media.lower().startswith("text/event-stream")  # what came, whatever was asked for
    observe = _counted(gateway, principal, target, (endpoint, reply.status), ticket, sse)
    if sse:
        return pass_through(inv, ticket, reply, observe)
    return await _plain(inv, ticket, reply, observe(reply.chunks))


async def _replayed(
    request: Request[Any, Any, Any], inv: Invocations, ticket: Ticket, poll: int
) -> Response[Any]:
    """A retry of an Idempotency-Key: the answer of the call the key stands for, once it has
    ended (a streamed one as its whole event stream); the function does not run again."""

    async def ended() -> tuple[Outcome | None]:
        return (await inv.settle(ticket, poll),)

    got = await unless_gone(request.receive, inv, ticket, ended())
    if got is None:
        return Response(b"", status_code=499)  # the client left (the request runs on)
    outcome = got[0]
    if outcome is None:
        raise Conflict(
            f"Idempotency-Key '{ticket.record.idempotency_key}': its request "
            f"'{ticket.request_id}' is still running; retry later",
            headers={"Retry-After": "1"},
        )
    inv.delivered(ticket)
    if outcome.error:  # nvcf-lite's own problem (no instance, a restart): OpenAI's shape
        return _failed(ticket, outcome)
    media = next((v for n, v in outcome.headers if n.lower() == "content-type"), None)
    headers = passed_headers(ticket, outcome)
    return Response(outcome.body, status_code=outcome.status, headers=headers, media_type=media)


async def _plain(
    inv: Invocations, ticket: Ticket, reply: StreamReply, chunks: Chunks
) -> Response[Any]:
    """A plain (JSON) answer as one write when it is complete within BodyUsage.MAX_BODY bytes
    (cheaper than a stream, and such a body is whole at the container before it leaves
    anyway); a larger one streams on from what was read."""
    parts: list[bytes] = []
    size = 0
    ended = False
    try:
        while size <= BodyUsage.MAX_BODY:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                ended = True
                break
            parts.append(chunk)
            size += len(chunk)
    except BaseException:
        await _release(inv, ticket, reply)
        raise
    if ended:
        await _release(inv, ticket, reply)
        media = next((v for n, v in reply.headers if n.lower() == "content-type"), None)
        out = passed_headers(ticket, reply)
        return Response(b"".join(parts), status_code=reply.status, headers=out, media_type=media)

    async def rest() -> Chunks:
        for part in parts:
            yield part
        async for chunk in chunks:
            yield chunk

    return pass_through(inv, ticket, StreamReply(reply.status, reply.headers, rest(), reply.close))


async def _release(inv: Invocations, ticket: Ticket, reply: StreamReply) -> None:
    await reply.close()  # the container's answer is read (or abandoned): free its slot
    inv.delivered(ticket)


def _failed(ticket: Ticket, outcome: Outcome) -> Response[bytes]:
    """An outcome nvcf-lite made (no instance, a timeout, a connection error), in OpenAI's
    shape; its NVCF-REQID and any Retry-After kept."""
    try:
        detail = str(msgspec.json.decode(outcome.body).get("detail") or "")
    except (msgspec.DecodeError, AttributeError):
        detail = outcome.body.decode("utf-8", "replace")
    headers = {n: v for n, v in outcome.headers if n.lower() == "retry-after"}
    headers["NVCF-REQID"] = ticket.request_id
    body = openai_error_body(outcome.status, detail)
    return Response(body, status_code=outcome.status, headers=headers, media_type=JSON)


def _counted(
    gateway: Gateway,
    principal: Principal,
    target: Target,
    call: tuple[str, int],
    ticket: Ticket,
    stream: bool,
) -> Callable[[Chunks], Chunks]:
    """A chunk observer for the answer on its way: time to first token at a stream's (an SSE
    answer's) first chunk; at the end the usage it reported (a 2xx answer's) and the call in
    /metrics."""
    ok = call[1] < 300

    async def observe(chunks: Chunks) -> AsyncIterator[bytes]:
        reader = UsageScanner(prompt_estimate(ticket.record.body)) if stream else BodyUsage()
        first = stream and ok
        try:
            async for chunk in chunks:
                if first:
                    first = False
                    gateway.first_token(target, time.monotonic() - ticket.queued_at)
                if ok:
                    reader.feed(chunk)
                yield chunk
        finally:
            if ok:
                gateway.used(principal, target, reader.usage)
            gateway.answered(principal, target, *call)

    return observe


@post("/v1/chat/completions", opt=IN_HANDLER, status_code=200, **DOC)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _call(request, "chat/completions")


@post("/v1/completions", opt=IN_HANDLER, status_code=200, **DOC)
async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _call(request, "completions")


@post("/v1/embeddings", opt=IN_HANDLER, status_code=200, **DOC)
async def embeddings(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _call(request, "embeddings")


def _other_methods(path: str, served: HttpMethod) -> list[Any]:
    """The methods the gateway does not serve on `path` stay path-preserving invocations
    (I5), as on any path: without this, the router would answer them 405 (a static path
    wins over the catch-all). HEAD has a route of its own (see api/invocations)."""
    others = [m for m in HttpMethod if m not in (HttpMethod.HEAD, served)]
    common: dict[str, Any] = {"include_in_schema": False, "status_code": 200}
    return [
        route(path, http_method=others, **common)(_path_invocation),
        route(path, http_method=[HttpMethod.HEAD], **common)(_path_invocation),
    ]


# The other methods' routes first: they take OPTIONS, which Litestar would otherwise claim for
# its automatic answer when the first handler of a path registers.
GATEWAY_HANDLERS = [
    *_other_methods("/v1/models", HttpMethod.GET),
    *(
        handler
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
        for handler in _other_methods(path, HttpMethod.POST)
    ),
    list_models,
    chat_completions,
    completions,
    embeddings,
]
