"""Deployments D1-D7 (spec §2.2): thin handlers over domain.deployments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from nvcf_lite.api.functions import FunctionResponse, function_response
from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.auth import covers, require_function
from nvcf_lite.domain.deployment_rules import SpecInput
from nvcf_lite.domain.deployments import Deployments
from nvcf_lite.domain.functions import Functions
from nvcf_lite.errors import Invalid
from nvcf_lite.models import Deployment, GpuSpec, InstanceView, Principal, SpecState

DEPLOY = scopes("deploy_function")
Caller = NamedDependency[Principal]


class GpuSpecWire(Wire, kw_only=True):
    gpu: str | None = None
    instance_type: str | None = None
    min_instances: int | None = None
    max_instances: int | None = None
    max_request_concurrency: int | None = None
    gpu_specification_id: str | None = None
    backend: str | None = None
    clusters: list[str] | None = None
    regions: list[str] | None = None
    attributes: list[str] | None = None
    availability_zones: list[str] | None = None
    configuration: Any = None
    autoscaling_configuration: dict[str, Any] | None = None
    autoscaling_configuration_policy: str | None = None
    warm_pool_seconds: float | None = None  # nvcf-lite extension (README: warm pool)


class DeployRequest(Wire, kw_only=True):
    deployment_specifications: list[GpuSpecWire] | None = None


class PullProgressWire(Wire, kw_only=True):
    """nvcf-lite extension: an image pull under way (layers and bytes known so far)."""

    image: str
    layers_done: int
    layers_total: int
    bytes_done: int
    bytes_total: int
    status: str
    elapsed_s: float
    idle_s: float


class HealthInfoWire(Wire, kw_only=True):
    icms_request_id: str
    sis_request_id: str | None = None
    gpu: str
    backend: str
    instance_type: str
    error: str
    image_pull: PullProgressWire | None = None  # nvcf-lite extension: the pull it waits for


class ColdStartWire(Wire, kw_only=True):
    """nvcf-lite extension: an instance's start, phase by phase (seconds), once it was ready."""

    kind: str
    image_pull_s: float
    container_start_s: float
    first_healthy_s: float
    first_byte_s: float | None = None


class InstanceWire(Wire, kw_only=True):
    """nvcf-lite extension: each instance's state, GPUs and published port."""

    instance_id: str
    gpu_specification_id: str
    gpu: str
    instance_type: str
    state: str
    gpu_uuids: list[str]
    container_id: str | None = None
    host_port: int | None = None
    host_address: str = "127.0.0.1"
    node: str | None = None
    error: str | None = None
    created_at: str
    updated_at: str
    age_s: float
    in_flight: int
    max_request_concurrency: int
    image_pull: PullProgressWire | None = None
    cold_start: ColdStartWire | None = None


class SpecStateWire(Wire, kw_only=True):
    """nvcf-lite extension: each specification's autoscaling state."""

    gpu_specification_id: str
    target: int
    ready: int
    starting: int
    draining: int
    paused: int
    state: str
    detail: str | None = None
    image_pull: PullProgressWire | None = None


class DeploymentWire(Wire, kw_only=True):
    function_id: str
    function_version_id: str
    deployment_id: str
    function_name: str
    nca_id: str
    function_status: str
    deployment_specifications: list[GpuSpecWire]
    health_info: list[HealthInfoWire] | None = None
    instances: list[InstanceWire] | None = None
    scaling: list[SpecStateWire] | None = None
    created_at: str
    last_updated_at: str


class DeploymentResponse(Wire, kw_only=True):
    deployment: DeploymentWire


class DeploymentsResponse(Wire, kw_only=True):
    deployments: list[DeploymentWire]


class GpuSpecResponse(Wire, kw_only=True):
    gpu_specification: GpuSpecWire


def spec_wire(spec: GpuSpec) -> GpuSpecWire:
    return to_wire(spec, GpuSpecWire)


def deployment_wire(
    d: Deployment,
    name: str,
    status: str,
    instances: list[InstanceView],
    scaling: list[SpecState] | None = None,
) -> DeploymentWire:
    return DeploymentWire(
        function_id=d.function_id,
        function_version_id=d.version_id,
        deployment_id=d.deployment_id,
        function_name=name,
        nca_id=d.nca_id,
        function_status=status,
        deployment_specifications=[spec_wire(s) for s in d.specs],
        health_info=[to_wire(h, HealthInfoWire) for h in d.health_info]
        + _pull_health(d.specs, scaling or ())
        or None,
        instances=[to_wire(i, InstanceWire) for i in instances],
        scaling=[to_wire(x, SpecStateWire) for x in scaling or ()] or None,
        created_at=d.created_at,
        last_updated_at=d.updated_at,
    )


def _pull_health(specs: list[GpuSpec], scaling: Sequence[SpecState]) -> list[HealthInfoWire]:
    """A live healthInfo entry per specification whose instance waits for its image pull."""
    by_id = {s.gpu_specification_id: s for s in specs}
    out = []
    for state in scaling:
        spec = by_id.get(state.gpu_specification_id)
        if spec is None or state.image_pull is None:
            continue
        out.append(
            HealthInfoWire(
                icms_request_id=spec.gpu_specification_id,
                gpu=spec.gpu,
                backend=spec.backend or "local",
                instance_type=spec.instance_type,
                error=state.image_pull.text(),
                image_pull=to_wire(state.image_pull, PullProgressWire),
            )
        )
    return out


def _specs(body: DeployRequest) -> list[SpecInput]:
    if not body.deployment_specifications:
        raise Invalid("deploymentSpecifications must be a non-empty list")
    return [
        msgspec.convert(s, SpecInput, from_attributes=True) for s in body.deployment_specifications
    ]


async def _render(deployments: Deployments, d: Deployment) -> DeploymentWire:
    ref, d = await deployments.with_status(d)
    vid = d.version_id
    return deployment_wire(
        d, ref.name, ref.status.value, deployments.instances(vid), deployments.spec_states(vid)
    )


def _deployments(request: Request[Any, Any, Any]) -> Deployments:
    return services_of(request).deployments


async def _covered(
    request: Request[Any, Any, Any], principal: Principal, function_id: UUID, version_id: UUID
) -> tuple[str, str]:
    """The path's ids as text, once the version is the caller's account's own and the key's
    resources cover it (404 for another account's, 403 for one only shared with it)."""
    fid, vid = str(function_id), str(version_id)
    functions: Functions = services_of(request).functions
    await functions.find(principal, fid, vid)
    return fid, vid


class DeploymentsController(Controller):
    path = "/deployments"
    dependencies = PRINCIPAL
    tags = ["deployments"]

    @post("/functions/{function_id:str}/versions/{version_id:str}", opt=DEPLOY, status_code=200)
    async def deploy(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        data: JSONBody[DeployRequest],
    ) -> DeploymentResponse:
        fid, vid = await _covered(request, principal, function_id, version_id)
        deployments = _deployments(request)
        d = await deployments.create(fid, vid, _specs(data))
        return DeploymentResponse(deployment=await _render(deployments, d))

    @get("/functions/{function_id:str}/versions/{version_id:str}", opt=DEPLOY)
    async def get_deployment(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
    ) -> DeploymentResponse:
        fid, vid = await _covered(request, principal, function_id, version_id)
        deployments = _deployments(request)
        d = await deployments.get(fid, vid)
        return DeploymentResponse(deployment=await _render(deployments, d))

    @put("/functions/{function_id:str}/versions/{version_id:str}", opt=DEPLOY)
    async def update_deployment(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        data: JSONBody[DeployRequest],
    ) -> DeploymentResponse:
        fid, vid = await _covered(request, principal, function_id, version_id)
        deployments = _deployments(request)
        d = await deployments.update(fid, vid, _specs(data))
        return DeploymentResponse(deployment=await _render(deployments, d))

    @delete("/functions/{function_id:str}/versions/{version_id:str}", opt=DEPLOY, status_code=200)
    async def undeploy(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        graceful: FromQuery[bool] = False,
    ) -> FunctionResponse:
        fid, vid = await _covered(request, principal, function_id, version_id)
        await _deployments(request).undeploy(fid, vid, graceful)
        functions: Functions = services_of(request).functions
        return function_response(await functions.version(fid, vid))

    @get("/{deployment_id:str}", opt=DEPLOY)
    async def by_id(
        self, request: Request[Any, Any, Any], principal: Caller, deployment_id: FromPath[UUID]
    ) -> DeploymentResponse:
        deployments = _deployments(request)
        d = await deployments.by_id(str(deployment_id), principal.nca_id)
        require_function(principal, d.function_id, d.version_id)
        return DeploymentResponse(deployment=await _render(deployments, d))

    @patch("/{deployment_id:str}/gpu-specifications/{spec_id:str}", opt=DEPLOY)
    async def patch_spec(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        deployment_id: FromPath[UUID],
        spec_id: FromPath[UUID],
        data: JSONBody[GpuSpecWire],
    ) -> GpuSpecResponse:
        deployments = _deployments(request)
        d = await deployments.by_id(str(deployment_id), principal.nca_id)
        require_function(principal, d.function_id, d.version_id)
        patch_in = msgspec.convert(data, SpecInput, from_attributes=True)
        spec = await deployments.patch_spec(str(deployment_id), str(spec_id), patch_in)
        return GpuSpecResponse(gpu_specification=spec_wire(spec))

    @get("/", opt=DEPLOY)
    async def list_deployments(
        self, request: Request[Any, Any, Any], principal: Caller
    ) -> DeploymentsResponse:
        deployments = _deployments(request)
        out = []
        for d in await deployments.all(principal.nca_id):
            if require_ok(principal, d):
                out.append(await _render(deployments, d))
        return DeploymentsResponse(deployments=out)


def require_ok(principal: Principal, d: Deployment) -> bool:
    return covers(principal.resources, d.function_id, d.version_id)


DEPLOYMENT_HANDLERS = [DeploymentsController]
