"""A function's container output over HTTP: an nvcf-lite extension of the NVCF API.

`GET /v2/nvcf/functions/{functionId}/logs` (every version) and
`GET /v2/nvcf/functions/{functionId}/versions/{versionId}/logs` (one version), also under the
org and team path families, need the scope `list_functions_details` (the scope that shows a
function's instances) and a key that covers the function. They answer `text/plain`: the output
of the function's containers that still exist (running, paused, and the stopped containers of
failed instances), oldest first; each line is prefixed with `<instanceId> | ` when more than
one container is shown or may be. Query: `instanceId` (an id or a prefix of one; 404 when no
container matches), `tail` (the last N lines of each container; default all; 400 unless
N >= 0), `follow` (`true`: the response stays open, chunked, and new lines arrive as the
containers print them, until the client disconnects). `nvcf-lite logs` prints the same from
the Docker engine directly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Annotated, Any, Protocol
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream
from litestar.types import ControllerRouterHandler

from nvcf_lite import logs
from nvcf_lite.api.functions import Caller, FunctionsDep, functions_of
from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.errors import Invalid, NotFound, NvcfError

log = logging.getLogger("nvcf_lite.api")

LOGS_SCOPE = "list_functions_details"
TEXT = "text/plain; charset=utf-8"
InstanceParam = Annotated[
    str | None,
    QueryParameter(name="instanceId", description="only this instance (an id or its prefix)"),
]
TailParam = Annotated[
    int | None, QueryParameter(description="the last N lines of each container (default all)")
]
FollowParam = Annotated[
    bool, QueryParameter(description="keep the answer open and stream new lines as printed")
]


class LogSource(Protocol):
    """What the handlers need: runtime/container_logs.ContainerLogs (NvcfError on failure)."""

    async def targets(
        self,
        function_id: str,
        version_ids: Collection[str] | None = None,
        instance_id: str | None = None,
    ) -> Sequence[Any]: ...

    def lines(
        self,
        function_id: str,
        targets: Any,
        *,
        version_ids: Collection[str] | None = None,
        instance_id: str | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[bytes]: ...


class LogsController(Controller):
    path = "/"
    tags = ["functions"]
    dependencies = {**PRINCIPAL, "functions": Provide(functions_of, sync_to_thread=False)}

    @get(
        "/functions/{function_id:str}/logs",
        opt=scopes(LOGS_SCOPE),
        media_type=TEXT,
        summary="nvcf-lite extension: the container logs of every version of a function",
    )
    async def function_logs(
        self,
        request: Request[Any, Any, Any],
        function_id: FromPath[UUID],
        principal: Caller,
        functions: FunctionsDep,
        instance_id: InstanceParam = None,
        tail: TailParam = None,
        follow: FollowParam = False,
    ) -> Stream:
        fid = str(function_id)
        versions = [v.version_id for v in await functions.own_versions(principal, fid)]
        return await _answer(request, fid, versions, instance_id, tail, follow)

    @get(
        "/functions/{function_id:str}/versions/{version_id:str}/logs",
        opt=scopes(LOGS_SCOPE),
        media_type=TEXT,
        summary="nvcf-lite extension: the container logs of one function version",
    )
    async def version_logs(
        self,
        request: Request[Any, Any, Any],
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        principal: Caller,
        functions: FunctionsDep,
        instance_id: InstanceParam = None,
        tail: TailParam = None,
        follow: FollowParam = False,
    ) -> Stream:
        fid, vid = str(function_id), str(version_id)
        await functions.find(principal, fid, vid)
        return await _answer(request, fid, [vid], instance_id, tail, follow)


async def _answer(
    request: Request[Any, Any, Any],
    function_id: str,
    version_ids: list[str],
    instance_id: str | None,
    tail: int | None,
    follow: bool,
) -> Stream:
    if tail is not None and tail < 0:
        raise Invalid(f"Invalid request: 'tail' must be a number of lines >= 0, not {tail}")
    source: LogSource = services_of(request).container_logs
    targets = await source.targets(function_id, version_ids, instance_id)
    if instance_id and not targets:
        raise NotFound(
            f"Instance '{instance_id}' of function '{function_id}': no container of it exists"
        )
    lines = source.lines(
        function_id,
        targets,
        version_ids=version_ids,
        instance_id=instance_id,
        tail=tail,
        follow=follow,
    )
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return Stream(_ended(lines, function_id), media_type=TEXT, headers=headers)


async def _ended(lines: AsyncIterator[bytes], function_id: str) -> AsyncIterator[bytes]:
    """The lines; an engine failure after the answer started ends it with a last line."""
    yield b""  # the status and headers go out now, not with the first line (a quiet follow)
    try:
        async for line in lines:
            yield line
    except NvcfError as exc:
        log.warning("log stream ended: %s", exc.detail, extra=logs.ids(function_id=function_id))
        yield f"nvcf-lite: the log stream ended: {exc.detail}\n".encode()


LOGS_HANDLERS: list[ControllerRouterHandler] = [LogsController]
