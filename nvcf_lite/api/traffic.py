"""The console's traffic figures (nvcf-lite extensions, scope `list_functions_details`):

X2 `GET /v2/nvcf-lite/traffic`: requests/s, p50 and p99 latency of each visible function over the
last minutes (one point per sample interval); X3 `GET /v2/nvcf-lite/functions/{fid}/requests`: the
function's last requests that ended (status, latency). Both read domain/traffic.py's window of
the request ends that /metrics counts.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.functions import DETAILS_SCOPE
from nvcf_lite.errors import Forbidden
from nvcf_lite.models import Principal

TRAFFIC_PATH = "/v2/nvcf-lite/traffic"
REQUESTS_PATH = "/v2/nvcf-lite/functions/{function_id:str}/requests"
Caller = NamedDependency[Principal]


class TrafficPointWire(Wire, kw_only=True):
    at: float
    requests: int
    requests_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None


class FunctionTrafficWire(Wire, kw_only=True):
    function_id: str
    points: list[TrafficPointWire]


class TrafficResponse(Wire, kw_only=True):
    interval_s: float
    functions: list[FunctionTrafficWire]


class EndedRequestWire(Wire, kw_only=True):
    request_id: str
    version_id: str
    status: int
    latency_ms: float
    ended_at: float


class RequestsResponse(Wire, kw_only=True):
    function_id: str
    requests: list[EndedRequestWire]


@get(
    TRAFFIC_PATH,
    opt=scopes(DETAILS_SCOPE),
    dependencies=PRINCIPAL,
    tags=["nvcf-lite"],
    summary="nvcf-lite extension: requests/s, p50 and p99 of each function, last minutes",
)
async def traffic(request: Request[Any, Any, Any], principal: Caller) -> TrafficResponse:
    svc = services_of(request)
    visible = {v.function_id for v in await svc.functions.list_functions(principal, ["private"])}
    return TrafficResponse(
        interval_s=svc.traffic.interval_s,
        functions=[to_wire(f, FunctionTrafficWire) for f in svc.traffic.series(visible)],
    )


@get(
    REQUESTS_PATH,
    opt=scopes(DETAILS_SCOPE),
    dependencies=PRINCIPAL,
    tags=["nvcf-lite"],
    summary="nvcf-lite extension: the function's last requests that ended (status, latency)",
)
async def last_requests(
    request: Request[Any, Any, Any], principal: Caller, function_id: FromPath[UUID]
) -> RequestsResponse:
    svc = services_of(request)
    fid = str(function_id)
    versions = await svc.functions.list_versions(principal, fid)  # 404 / 403 like F5
    if any(v.nca_id != principal.nca_id for v in versions):
        # shared with the caller: its requests are its owner's and other parties' business
        raise Forbidden(f"Function id '{fid}': only its owner reads its last requests")
    ended = svc.traffic.last_requests(fid)
    return RequestsResponse(function_id=fid, requests=[to_wire(r, EndedRequestWire) for r in ended])


TRAFFIC_HANDLERS = [traffic, last_requests]
