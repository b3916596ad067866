"""Function management endpoints F1-F9 (spec §2.1) and their wire bodies.

Registered under /v2/nvcf, /v2/orgs/{org}/nvcf and the team form by `path_families`.
Handlers only parse, call `Functions` and map the record to its camelCase twin.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler
from msgspec import UNSET, UnsetType

from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.function_rules import FunctionInput, FunctionUpdate
from nvcf_lite.domain.functions import Functions
from nvcf_lite.models import FunctionVersion, Principal

T = TypeVar("T")

# -- wire bodies (nested ones serve both requests and responses) ------------------------------


class HealthWire(Wire):
    protocol: str
    uri: str
    port: int
    timeout: str
    expected_status_code: int


class EnvVarWire(Wire):
    key: str
    value: str


class LlmConfigWire(Wire):
    uris: list[str] | None = None
    token_rate_limit: str | None = None
    input_token_rate_limit: str | None = None
    output_token_rate_limit: str | None = None
    tokenizer: str | None = None
    routing_method: str | None = None


class ModelWire(Wire):
    name: str
    version: str | None = None
    uri: str | None = None
    llm_config: LlmConfigWire | None = None


class ResourceWire(Wire):
    name: str
    version: str
    uri: str


class SecretWire(Wire):
    name: str
    value: str | dict[str, Any]


class RateLimitWire(Wire):
    rate_limit: str | None = None
    exempted_nca_ids: list[str] | None = None
    per_nca_id_rate: dict[str, str] | None = None
    sync_check: bool | None = None
    per_user_rate: str | None = None


class PriorityWire(Wire):
    default_priority: int | None = None
    per_account_priority: dict[str, int] | None = None


class LlmInvocationConfigWire(Wire):
    priority: PriorityWire | None = None


class TelemetriesWire(Wire):
    logs_telemetry_id: str | None = None
    metrics_telemetry_id: str | None = None
    traces_telemetry_id: str | None = None


class ActiveInstanceWire(Wire):
    instance_id: str
    function_id: str
    function_version_id: str
    nca_id: str
    instance_status: str
    instance_type: str | None = None
    gpu: str | None = None
    backend: str | None = None
    location: str | None = None
    icms_request_id: str | None = None
    instance_created_at: str | None = None
    instance_updated_at: str | None = None


class CreateFunctionRequest(Wire):
    """F1/F2 body. Unknown fields (e.g. the hidden utilsContainerImage) are ignored."""

    name: str | None = None
    inference_url: str | None = None
    inference_port: int | None = None
    health: HealthWire | None = None
    health_uri: str | None = None
    container_image: str | None = None
    container_args: str | None = None
    container_environment: list[EnvVarWire] | None = None
    models: list[ModelWire] | None = None
    resources: list[ResourceWire] | None = None
    helm_chart: str | None = None
    helm_chart_service_name: str | None = None
    api_body_format: str | None = None
    function_type: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    secrets: list[SecretWire] | None = None
    rate_limit: RateLimitWire | None = None
    llm_invocation_config: LlmInvocationConfigWire | None = None
    telemetries: TelemetriesWire | None = None


class LlmConfigUpdateWire(Wire):
    token_rate_limit: str | None = None
    routing_method: str | None = None
    input_token_rate_limit: str | None = None
    output_token_rate_limit: str | None = None


class ModelUpdateWire(Wire):
    model_name: str | None = None
    llm_config: LlmConfigUpdateWire | None = None


class UpdateFunctionRequest(Wire):
    """F8/F9 body. `"rateLimit": null` clears the limit: ngcsdk 4.37 sends exactly that to
    remove one (NVCF self-managed would answer 400 and point at the deprecated
    `DELETE .../ratelimit/...`, which nvcf-lite also serves: api/secrets.py).
    `description` is an nvcf-lite extension."""

    tags: list[str] | None = None
    rate_limit: RateLimitWire | UnsetType | None = UNSET
    model_updates: list[ModelUpdateWire] | None = None
    llm_invocation_config: LlmInvocationConfigWire | None = None
    description: str | None = None


class FunctionWire(Wire):
    function_id: str = msgspec.field(name="id")
    version_id: str
    nca_id: str
    name: str
    status: str
    inference_url: str
    health_uri: str
    health: HealthWire
    created_at: str
    function_type: str
    api_body_format: str
    description: str
    inference_port: int | None = None
    container_image: str | None = None
    container_args: str | None = None
    container_environment: list[EnvVarWire] | None = None
    models: list[ModelWire] | None = None
    resources: list[ResourceWire] | None = None
    helm_chart: str | None = None
    helm_chart_service_name: str | None = None
    tags: list[str] | None = None
    rate_limit: RateLimitWire | None = None
    llm_invocation_config: LlmInvocationConfigWire | None = None
    telemetries: TelemetriesWire | None = None
    secrets: list[str] | None = None  # names only, never values
    active_instances: list[ActiveInstanceWire] | None = None
    owned_by_different_account: bool | None = None


class FunctionResponse(Wire):
    function: FunctionWire


class ListFunctionsResponse(Wire):
    functions: list[FunctionWire]


class ListFunctionIdsResponse(Wire):
    function_ids: list[str]


def to_domain(body: msgspec.Struct, domain_type: type[T]) -> T:
    """Map a wire body onto its snake_case domain twin; fields left UNSET stay unset."""
    given = {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not UNSET}
    return msgspec.convert(given, domain_type, from_attributes=True)


def function_response(version: FunctionVersion) -> FunctionResponse:
    return FunctionResponse(function=to_wire(version, FunctionWire))


# -- handlers -------------------------------------------------------------------------------

REGISTER = scopes("register_function")
LIST = scopes("list_functions", "list_functions_details")
VisibilityParam = Annotated[list[str] | None, QueryParameter(name="visibility")]
Caller = NamedDependency[Principal]
FunctionsDep = NamedDependency[Functions]
VERSION_PATH = "/functions/{function_id:str}/versions/{version_id:str}"


def functions_of(request: Request[Any, Any, Any]) -> Functions:
    return services_of(request).functions


class FunctionsController(Controller):
    path = "/"
    tags = ["functions"]
    dependencies = {**PRINCIPAL, "functions": Provide(functions_of, sync_to_thread=False)}

    @post("/functions", status_code=200, opt=REGISTER, summary="F1 create a function")
    async def create_function(
        self,
        data: JSONBody[CreateFunctionRequest],
        principal: Caller,
        functions: FunctionsDep,
    ) -> FunctionResponse:
        return function_response(await functions.create(principal, to_domain(data, FunctionInput)))

    @post(
        "/functions/{function_id:str}/versions",
        status_code=200,
        opt=REGISTER,
        summary="F2 create a version",
    )
    async def create_version(
        self,
        function_id: FromPath[UUID],
        data: JSONBody[CreateFunctionRequest],
        principal: Caller,
        functions: FunctionsDep,
    ) -> FunctionResponse:
        request = to_domain(data, FunctionInput)
        return function_response(
            await functions.create_version(principal, str(function_id), request)
        )

    @get("/functions", opt=LIST, summary="F3 list versions of all visible functions")
    async def list_functions(
        self,
        principal: Caller,
        functions: FunctionsDep,
        visibility: VisibilityParam = None,
    ) -> ListFunctionsResponse:
        found = await functions.list_functions(principal, visibility)
        return ListFunctionsResponse(functions=[to_wire(v, FunctionWire) for v in found])

    @get("/functions/ids", opt=LIST, summary="F4 list function ids")
    async def list_function_ids(
        self,
        principal: Caller,
        functions: FunctionsDep,
        visibility: VisibilityParam = None,
    ) -> ListFunctionIdsResponse:
        return ListFunctionIdsResponse(function_ids=await functions.list_ids(principal, visibility))

    @get("/functions/{function_id:str}/versions", opt=LIST, summary="F5 list versions")
    async def list_versions(
        self,
        function_id: FromPath[UUID],
        principal: Caller,
        functions: FunctionsDep,
    ) -> ListFunctionsResponse:
        found = await functions.list_versions(principal, str(function_id))
        return ListFunctionsResponse(functions=[to_wire(v, FunctionWire) for v in found])

    @get(VERSION_PATH, opt=LIST, summary="F6 get one version")
    async def get_version(
        self,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        principal: Caller,
        functions: FunctionsDep,
        include_secrets: Annotated[bool, QueryParameter(name="includeSecrets")] = True,
    ) -> FunctionResponse:
        return function_response(
            await functions.get(
                principal, str(function_id), str(version_id), include_secrets=include_secrets
            )
        )

    @delete(VERSION_PATH, opt=scopes("delete_function"), summary="F7 delete a version")
    async def delete_version(
        self,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        principal: Caller,
        functions: FunctionsDep,
    ) -> None:
        await functions.delete(principal, str(function_id), str(version_id))

    @put(VERSION_PATH, opt=scopes("update_function"), summary="F8 update a version")
    async def update_version(
        self,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        data: JSONBody[UpdateFunctionRequest],
        principal: Caller,
        functions: FunctionsDep,
    ) -> FunctionResponse:
        update = to_domain(data, FunctionUpdate)
        return function_response(
            await functions.update(principal, str(function_id), str(version_id), update)
        )

    @put(
        "/metadata" + VERSION_PATH,
        opt=scopes("update_function"),
        summary="F9 update a version (deprecated alias of F8)",
        deprecated=True,
    )
    async def update_metadata(
        self,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        data: JSONBody[UpdateFunctionRequest],
        principal: Caller,
        functions: FunctionsDep,
    ) -> FunctionResponse:
        update = to_domain(data, FunctionUpdate)
        return function_response(
            await functions.update(principal, str(function_id), str(version_id), update)
        )


FUNCTION_HANDLERS: list[ControllerRouterHandler] = [FunctionsController]
