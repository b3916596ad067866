"""The status overview (`GET /v2/nvcf-lite/status`, `nvcf-lite status`): one read of what runs.

Every figure comes from where the platform already keeps it: versions and their status from
the functions store, desired state and health info from the deployments table, instances and
scaling state from the Scheduler's live records (through `Deployments`), queue depths from
the dispatcher, GPU units from the host inventory and the units instances hold, CPU and
memory from the host's sizing and what instances hold. Nothing here keeps state of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from nvcf_lite.domain.auth import require_scope
from nvcf_lite.domain.deployments import Deployments
from nvcf_lite.domain.functions import DETAILS_SCOPE, Functions
from nvcf_lite.domain.instance_types import MILLI, Resources
from nvcf_lite.domain.placement import Host
from nvcf_lite.models import (
    Deployment,
    FunctionVersion,
    InstanceView,
    Principal,
    SpecState,
    now_iso,
)

# Where the API serves the overview (an nvcf-lite extension); `nvcf-lite status` reads it. Here,
# not in api/status.py, so the CLI does not import the web framework to learn a path.
STATUS_PATH = "/v2/nvcf-lite/status"


class VersionStatus(msgspec.Struct, kw_only=True):
    version_id: str
    status: str  # NVCF's FunctionStatus
    reason: str | None = None  # why it is not plainly ACTIVE/INACTIVE, when something says so
    queue_depth: int = 0
    deployment_id: str | None = None
    scaling: list[SpecState] = []
    instances: list[InstanceView] = []


class FunctionStatusView(msgspec.Struct, kw_only=True):
    function_id: str
    name: str
    versions: list[VersionStatus]


class GpuUsage(msgspec.Struct, kw_only=True):
    gpu: str
    total: int
    used: int
    free: int


class GpuUnitStatus(msgspec.Struct, kw_only=True):
    """One GPU or MIG unit of the host, and the instance holding it (the console's GPU map)."""

    unit_id: str
    gpu: str
    index: int
    memory_mb: int
    simulated: bool
    held: bool
    instance_id: str | None = None  # None while free, or held by an instance the key cannot see
    function_id: str | None = None


class ResourceUsage(msgspec.Struct, kw_only=True):
    """The CPU cores and memory all instances may use together, and what they hold now."""

    cpu_cores: float
    cpu_cores_held: float
    memory_mb: int
    memory_mb_held: int


class StatusReport(msgspec.Struct, kw_only=True):
    generated_at: str
    functions: list[FunctionStatusView]
    gpus: list[GpuUsage]
    units: list[GpuUnitStatus] = []
    resources: ResourceUsage | None = None  # None: a host without sizing


class Overview:
    def __init__(
        self,
        functions: Functions,
        deployments: Deployments,
        host: Host,
        queue_depth: Callable[[str], int],
        held_units: Callable[[], set[str]],
        held_resources: Callable[[], Resources] = Resources,
    ) -> None:
        self._functions = functions
        self._deployments = deployments
        self._host = host
        self._queue_depth = queue_depth
        self._held_units = held_units
        self._held_resources = held_resources

    async def report(self, principal: Principal) -> StatusReport:
        """The versions the key may see, with their live state; GPU units of the whole host."""
        require_scope(principal, DETAILS_SCOPE)
        versions = await self._functions.list_functions(principal, ["private"])
        deployed = {d.version_id: d for d in await self._deployments.all(principal.nca_id)}
        by_function: dict[str, FunctionStatusView] = {}
        for v in versions:
            entry = by_function.setdefault(
                v.function_id,
                FunctionStatusView(function_id=v.function_id, name=v.name, versions=[]),
            )
            entry.versions.append(self._version(v, deployed.get(v.version_id)))
        functions = list(by_function.values())
        return StatusReport(
            generated_at=now_iso(),
            functions=functions,
            gpus=self._gpus(),
            units=self._units(functions),
            resources=self._resources(),
        )

    def _units(self, functions: list[FunctionStatusView]) -> list[GpuUnitStatus]:
        holders = {
            unit: (inst.instance_id, f.function_id)
            for f in functions
            for v in f.versions
            for inst in v.instances
            for unit in inst.gpu_uuids
        }
        held = self._held_units()
        return [
            GpuUnitStatus(
                unit_id=u.unit_id,
                gpu=u.gpu,
                index=u.index,
                memory_mb=u.memory_mb,
                simulated=not u.physical,
                held=u.unit_id in held,
                instance_id=holders.get(u.unit_id, (None, None))[0],
                function_id=holders.get(u.unit_id, (None, None))[1],
            )
            for u in self._host.units
        ]

    def _version(self, v: FunctionVersion, d: Deployment | None) -> VersionStatus:
        if d is None:
            return VersionStatus(
                version_id=v.version_id,
                status=v.status.value,
                queue_depth=self._queue_depth(v.version_id),
            )
        scaling = self._deployments.spec_states(v.version_id)
        return VersionStatus(
            version_id=v.version_id,
            status=v.status.value,
            reason=_reason(d, scaling),
            queue_depth=self._queue_depth(v.version_id),
            deployment_id=d.deployment_id,
            scaling=scaling,
            instances=self._deployments.instances(v.version_id),
        )

    def _gpus(self) -> list[GpuUsage]:
        held = self._held_units()
        out: dict[str, GpuUsage] = {}
        for unit in self._host.units:
            usage = out.setdefault(unit.gpu, GpuUsage(gpu=unit.gpu, total=0, used=0, free=0))
            usage.total += 1
            if unit.unit_id in held:
                usage.used += 1
            else:
                usage.free += 1
        return list(out.values())

    def _resources(self) -> ResourceUsage | None:
        sizing = self._host.sizing
        if sizing is None:
            return None
        held = self._held_resources()
        return ResourceUsage(
            cpu_cores=sizing.totals.cpu_millis / MILLI,
            cpu_cores_held=held.cpu_millis / MILLI,
            memory_mb=sizing.totals.memory_mb,
            memory_mb_held=held.memory_mb,
        )


def _reason(d: Deployment, scaling: list[SpecState]) -> str | None:
    """What the health info and the scaling state say, each distinct text once."""
    texts = [h.error for h in d.health_info]
    texts += [s.detail for s in scaling if s.detail and s.state != "ok"]
    texts += [s.image_pull.text() for s in scaling if s.image_pull is not None]
    return "; ".join(dict.fromkeys(texts)) or None
