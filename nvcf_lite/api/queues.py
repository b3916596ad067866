"""Queue details Q1-Q3 (spec §2.4), scope `queue_details`: depth per version, a request's
position. Registered with the invocation routes (INVOCATION_HANDLERS) in every path family."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.invocation_rules import require_uuid
from nvcf_lite.domain.invocations import Queues
from nvcf_lite.models import Principal

Caller = NamedDependency[Principal]


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
    queues: Queues = services_of(request).queues
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


# Ids are checked after the key: a malformed one is a 400 problem (as on the pexec routes).
@get("/queues/functions/{function_id:str}", opt=QUEUE, dependencies=PRINCIPAL, tags=["queues"])
async def function_queues(
    request: Request[Any, Any, Any], principal: Caller, function_id: FromPath[str]
) -> QueuesResponse:
    return await _depths(request, principal, require_uuid(function_id, "function id"), None)


@get(
    "/queues/functions/{function_id:str}/versions/{version_id:str}",
    opt=QUEUE,
    dependencies=PRINCIPAL,
    tags=["queues"],
)
async def version_queue(
    request: Request[Any, Any, Any],
    principal: Caller,
    function_id: FromPath[str],
    version_id: FromPath[str],
) -> QueuesResponse:
    fid = require_uuid(function_id, "function id")
    return await _depths(request, principal, fid, require_uuid(version_id, "function version id"))


@get("/queues/{request_id:str}/position", opt=QUEUE, dependencies=PRINCIPAL, tags=["queues"])
async def queue_position(
    request: Request[Any, Any, Any], principal: Caller, request_id: FromPath[str]
) -> PositionResponse:
    queues: Queues = services_of(request).queues
    record, position = queues.position(principal, require_uuid(request_id, "request id"))
    return PositionResponse(
        function_id=record.function_id,
        function_version_id=record.version_id,
        position_in_queue=position,
    )


QUEUE_HANDLERS = [function_queues, version_queue, queue_position]
