"""GET /v2/nvcf-lite/status (an nvcf-lite extension, scope `list_functions_details`): every
visible function version with its status and why, its instances (state, GPU units, age,
in-flight requests, image pull progress), queue depth and scaling state, the host's GPU
units used and free, and the CPU and memory its instances hold. `nvcf-lite status` prints
it; domain/status.py says where each figure comes from."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.di import NamedDependency

from nvcf_lite.api.deployments import InstanceWire, SpecStateWire
from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.functions import DETAILS_SCOPE
from nvcf_lite.domain.status import STATUS_PATH, Overview
from nvcf_lite.models import Principal

Caller = NamedDependency[Principal]


class VersionStatusWire(Wire, kw_only=True):
    version_id: str
    status: str
    reason: str | None = None
    queue_depth: int
    deployment_id: str | None = None
    scaling: list[SpecStateWire]
    instances: list[InstanceWire]


class FunctionStatusWire(Wire, kw_only=True):
    function_id: str
    name: str
    versions: list[VersionStatusWire]


class GpuUsageWire(Wire, kw_only=True):
    gpu: str
    total: int
    used: int
    free: int


class GpuUnitStatusWire(Wire, kw_only=True):
    unit_id: str
    gpu: str
    index: int
    memory_mb: int
    simulated: bool
    held: bool
    instance_id: str | None = None
    function_id: str | None = None


class ResourceUsageWire(Wire, kw_only=True):
    cpu_cores: float
    cpu_cores_held: float
    memory_mb: int
    memory_mb_held: int


class StatusResponse(Wire, kw_only=True):
    generated_at: str
    functions: list[FunctionStatusWire]
    gpus: list[GpuUsageWire]
    units: list[GpuUnitStatusWire] = []
    resources: ResourceUsageWire | None = None


@get(
    STATUS_PATH,
    opt=scopes(DETAILS_SCOPE),
    dependencies=PRINCIPAL,
    summary="nvcf-lite extension: functions, instances, queues and GPU units at a glance",
    tags=["nvcf-lite"],
)
async def status(request: Request[Any, Any, Any], principal: Caller) -> StatusResponse:
    overview: Overview = services_of(request).overview
    return to_wire(await overview.report(principal), StatusResponse)


STATUS_HANDLERS = [status]
