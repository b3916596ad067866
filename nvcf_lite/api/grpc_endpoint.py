"""The gRPC invocation endpoint (spec §2.3.10; NVCF's `grpc.nvcf.nvidia.com:443`).

Any service and method, unary or streaming, is proxied to an instance of the function that the
`function-id` metadata names (`function-version-id` picks a version), with the key in
`authorization: Bearer <key>`, as raw bytes: nvcf-lite needs no protobuf definitions.

Each call is an invocation like any other: accepted durably and queued (mode `grpc`), so it
waits for a free instance slot (an instance starting, scale from zero), counts toward the
queue limit, rate limits and metrics, and holds its slot while it runs. Once the dispatcher
lends it a slot (`Lent`), the messages flow live both ways until the call ends; nothing of them
is stored. A call is never re-run: after a restart the client's call has ended with the
process, so its record is failed as streamed requests are. Platform errors are gRPC codes:
no or a bad key UNAUTHENTICATED, a key without `invoke_function` PERMISSION_DENIED, an unknown
function NOT_FOUND, a full queue RESOURCE_EXHAUSTED, no free slot before the call's deadline
(or the default poll window) DEADLINE_EXCEEDED / UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio

from nvcf_lite.api.grpc_status import Code, code_of, http_of, problem_detail
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.invocation_rules import WORKER_OWNED, require_uuid
from nvcf_lite.domain.invocations import Invocations, Lent, Ticket
from nvcf_lite.errors import Invalid, NvcfError
from nvcf_lite.models import Outcome

log = logging.getLogger("nvcf_lite.grpc")

Metadata = list[tuple[str, str | bytes]]
# Not passed on to the container: the routing and key, the transport's own, the platform's.
_ROUTING = frozenset({"authorization", "function-id", "function-version-id"})
_TRANSPORT = frozenset({"user-agent", "te", "content-type", "host"})
OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def _passed_on(metadata: Sequence[tuple[str, Any]], drop: frozenset[str]) -> Metadata:
    return [
        (key, value)
        for key, value in metadata
        if key not in drop and not key.startswith(("grpc-", ":"))
    ]


class GrpcEndpoint:
    """The grpc.aio server on `invocation.grpc_port`, proxying every call (see the module)."""

    def __init__(self, keys: Keys, invocations: Invocations) -> None:
        self.keys = keys
        self.inv = invocations
        self.server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int, tls: tuple[bytes, bytes] | None = None) -> int:
        """Listen on host:port (TLS with (certificate chain, private key) PEM); the port."""
        server = grpc.aio.server(handlers=[_Routes(self)], options=OPTIONS)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls is None:
                bound = server.add_insecure_port(address)
            else:
                creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
                bound = server.add_secure_port(address, creds)
        except RuntimeError as exc:
            raise RuntimeError(f"invocation.grpc_port: cannot listen on {address}: {exc}") from exc
        await server.start()
        self.server = server
        log.info("gRPC invocation endpoint listening on %s", address)
        return int(bound)

    async def stop(self, grace_s: float = 5.0) -> None:
        if self.server is not None:
            await self.server.stop(grace_s)

    async def call(
        self, method: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        """One proxied call, from its metadata to its status."""
        metadata = list(context.invocation_metadata() or ())
        try:
            ticket = await self._accept(method, metadata, context)
        except NvcfError as exc:
            await context.abort(code_of(exc.status), exc.detail)
            return
        try:
            lent = await self._slot(ticket, context)
            if lent is not None:
                await self._relay(ticket, lent, method, metadata, requests, context)
        finally:
            self.inv.delivered(ticket)

    async def _accept(
        self, method: str, metadata: Metadata, context: grpc.aio.ServicerContext
    ) -> Ticket:
        text = {k: v for k, v in metadata if isinstance(v, str)}
        principal = await self.keys.authenticate(text.get("authorization"))
        if not text.get("function-id"):
            raise Invalid("the call has no function-id metadata naming the function to invoke")
        fid = require_uuid(text["function-id"], "function-id metadata")
        vid_text = text.get("function-version-id")
        vid = require_uuid(vid_text, "function-version-id metadata") if vid_text else None
        remaining = context.time_remaining()
        poll = self.inv.default_poll if remaining is None else max(1, math.ceil(remaining))
        return await self.inv.submit(
            principal,
            fid,
            vid,
            method="POST",
            path=method,
            headers=[(k, v) for k, v in text.items() if k not in _ROUTING],
            body=b"",
            mode="grpc",
            poll=min(poll, self.inv.max_poll),
        )

    async def _slot(self, ticket: Ticket, context: grpc.aio.ServicerContext) -> Lent | None:
        """The instance slot the dispatcher lends the call; the call ended with a status
        (None) when the request ended first or no slot came before its deadline."""
        assert ticket.lent is not None
        lent, done = ticket.lent, ticket.done
        remaining = context.time_remaining()
        # a little before the client's deadline, so that it hears why (not only "deadline")
        wait_s = ticket.record.poll_seconds if remaining is None else max(0.0, remaining - 0.2)
        try:
            waits: set[asyncio.Future[Any]] = {lent, done}
            await asyncio.wait(waits, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.inv.cancel(ticket, "the client cancelled the gRPC call")
            raise
        if lent.done():
            return lent.result()
        if done.done():
            await self._end_with(context, done.result())
            return None
        self.inv.cancel(ticket, "no instance slot before the call's deadline")
        lent.cancel()
        code = Code.UNAVAILABLE if remaining is None else Code.DEADLINE_EXCEEDED
        detail = f"no instance of the function was free within {wait_s:.1f} s"
        await context.abort(code, detail + (" (the call's deadline)" if remaining else ""))
        return None

    @staticmethod
    async def _end_with(context: grpc.aio.ServicerContext, outcome: Outcome) -> None:
        detail = problem_detail(outcome.body) or f"the request ended with {outcome.status}"
        await context.abort(code_of(outcome.status), detail)

    async def _relay(
        self,
        ticket: Ticket,
        lent: Lent,
        method: str,
        metadata: Metadata,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Messages both ways until the call ends; then its status, and the slot back."""
        upstream = _passed_on(metadata, _ROUTING | _TRANSPORT | WORKER_OWNED) + list(lent.metadata)
        call = lent.channel.stream_stream(method)(
            metadata=upstream, timeout=context.time_remaining()
        )
        pump = asyncio.ensure_future(_send_all(requests, call))
        code, details, trailing = Code.CANCELLED, "", None  # unless it ends otherwise
        try:
            initial = _passed_on(await call.initial_metadata() or (), _TRANSPORT)
            await context.send_initial_metadata([*initial, ("nvcf-reqid", ticket.request_id)])
            while (message := await call.read()) is not grpc.aio.EOF:
                await context.write(message)
            code, details = await call.code(), await call.details()
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            code, details, trailing = exc.code(), exc.details() or "", exc.trailing_metadata()
        finally:
            pump.cancel()
            call.cancel()
            if not lent.ended.done():
                lent.ended.set_result(Outcome(status=http_of(code)))
        context.set_trailing_metadata(tuple(_passed_on(trailing or (), _TRANSPORT)))
        if code is not Code.OK:
            context.set_code(code)
            context.set_details(details)


async def _send_all(requests: AsyncIterator[bytes], call: Any) -> None:
    """The client's messages to the instance, then the end of them (a call the instance
    ended first stops taking them: its status says why)."""
    try:
        async for message in requests:
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        pass


class _Routes(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Every method of every service: the endpoint's proxy, with raw bytes both ways."""

    def __init__(self, endpoint: GrpcEndpoint) -> None:
        self.endpoint = endpoint

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        behaviour = functools.partial(self.endpoint.call, handler_call_details.method)
        return grpc.stream_stream_rpc_method_handler(behaviour)
