"""Request rules of function create (F1/F2) and update (F8/F9), spec §2.1.1 and §2.1.5.

`build_version` turns a `FunctionInput` into a validated `FunctionVersion` with every default
resolved; `apply_update` applies a `FunctionUpdate`. Each rule raises `Invalid` (400) with a
message that names the field; where NVCF's own message is known it is used word for word.
Empty collections are stored as absent, so a response never carries `[]` for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from nvcf_lite.domain.function_fields import (
    SecretInput,
    check_image,
    check_uri,
    environment,
    health_timeout,
    llm_invocation_config,
    model_update,
    models,
    rate_limit,
    resources,
    secrets,
    telemetries,
)
from nvcf_lite.errors import Invalid
from nvcf_lite.models import (
    ApiBodyFormat,
    EnvVar,
    FunctionStatus,
    FunctionType,
    FunctionVersion,
    HealthCheck,
    HealthProtocol,
    LlmConfig,
    LlmInvocationConfig,
    ModelRef,
    RateLimit,
    ResourceRef,
    Telemetries,
)

NAME_RE = re.compile(r"^[a-z0-9A-Z][a-z0-9A-Z\-_]*$")
TAG_RE = re.compile(r"[a-zA-Z0-9\-_:=]+")
MAX_NAME, MAX_DESCRIPTION, MAX_TAGS, MAX_TAG = 128, 256, 64, 128
DEFAULT_HEALTH_URI = "/v2/health/ready"
DEFAULT_PORT = 8000
UPDATE_REQUIRED = (
    "Invalid request: at least one of 'tags', 'rateLimit', 'modelUpdates', or "
    "'llmInvocationConfig' must be specified"
)
# NVCF installs a helmChart function's chart into a Kubernetes cluster; nvcf-lite runs each
# function as Docker containers on this host and has no cluster to install a chart into. The
# well-formedness rules above come first, so a malformed body gets NVCF's own message.
HELM_REFUSED = (
    "Invalid request: 'helmChart' functions need Kubernetes (NVCF installs the Helm chart into"
    " a Kubernetes cluster), and nvcf-lite runs functions as Docker containers on one host,"
    " without Kubernetes: register a 'containerImage' or 'models' function instead"
)
E = TypeVar("E", bound=StrEnum)


class FunctionInput(msgspec.Struct, frozen=True, kw_only=True):
    """The body of F1/F2 (`CreateFunctionRequest`), shapes checked, rules not yet."""

    name: str | None = None
    inference_url: str | None = None
    inference_port: int | None = None
    health: HealthCheck | None = None
    health_uri: str | None = None
    container_image: str | None = None
    container_args: str | None = None
    container_environment: tuple[EnvVar, ...] | None = None
    models: tuple[ModelRef, ...] | None = None
    resources: tuple[ResourceRef, ...] | None = None
    helm_chart: str | None = None
    helm_chart_service_name: str | None = None
    api_body_format: str | None = None
    function_type: str | None = None
    description: str | None = None
    tags: tuple[str, ...] | None = None
    secrets: tuple[SecretInput, ...] | None = None
    rate_limit: RateLimit | None = None
    llm_invocation_config: LlmInvocationConfig | None = None
    telemetries: Telemetries | None = None


class LlmConfigUpdate(msgspec.Struct, frozen=True, kw_only=True):
    token_rate_limit: str | None = None
    routing_method: str | None = None
    input_token_rate_limit: str | None = None
    output_token_rate_limit: str | None = None


class ModelUpdate(msgspec.Struct, frozen=True, kw_only=True):
    model_name: str | None = None
    llm_config: LlmConfigUpdate | None = None


class FunctionUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """The body of F8/F9. `rate_limit=None` (sent as JSON null) clears the limit; UNSET keeps it.

    `description` is an nvcf-lite extension (NVCF cannot change it after creation).
    """

    tags: tuple[str, ...] | None = None
    rate_limit: RateLimit | UnsetType | None = UNSET
    model_updates: tuple[ModelUpdate, ...] | None = None
    llm_invocation_config: LlmInvocationConfig | None = None
    description: str | None = None


def build_version(
    req: FunctionInput, *, function_id: str, version_id: str, nca_id: str, created_at: str
) -> tuple[FunctionVersion, dict[str, Any]]:
    """A validated version (status INACTIVE) and its secret values, name -> value."""
    name = _name(req.name)
    if req.inference_url is None:
        raise Invalid(
            "Invalid request: 'inferenceUrl' cannot be empty/null in the create function payload"
        )
    inference_url = check_uri("inferenceUrl", req.inference_url)
    if not inference_url.startswith("/"):
        inference_url = "/" + inference_url
    port = None if req.inference_port is None else _port("inferencePort", req.inference_port)
    function_type = parse_enum(
        FunctionType, "functionType", req.function_type, FunctionType.DEFAULT
    )
    image, helm, service = _artifacts(req)
    health = _health(req, inference_url)
    secret_values = secrets(req.secrets or ())
    version = FunctionVersion(
        function_id=function_id,
        version_id=version_id,
        nca_id=nca_id,
        name=name,
        status=FunctionStatus.INACTIVE,
        inference_url=inference_url,
        inference_port=port,
        health_uri=health.uri,
        health=health,
        created_at=created_at,
        function_type=function_type,
        api_body_format=parse_enum(
            ApiBodyFormat, "apiBodyFormat", req.api_body_format, ApiBodyFormat.CUSTOM
        ),
        description=description(req.description, name),
        container_image=image,
        container_args=req.container_args or None,
        container_environment=environment(req.container_environment),
        models=models(req.models, function_type),
        resources=resources(req.resources),
        helm_chart=helm,
        helm_chart_service_name=service,
        tags=None if req.tags is None else tags(req.tags),
        rate_limit=None if req.rate_limit is None else rate_limit(req.rate_limit),
        llm_invocation_config=llm_invocation_config(req.llm_invocation_config, function_type),
        telemetries=telemetries(req.telemetries),
        secrets=tuple(secret_values) or None,
    )
    return version, secret_values


def apply_update(version: FunctionVersion, update: FunctionUpdate) -> FunctionVersion:
    if (
        update.tags is None
        and update.rate_limit is UNSET
        and not update.model_updates
        and update.llm_invocation_config is None
        and update.description is None
    ):
        raise Invalid(UPDATE_REQUIRED)
    changes: dict[str, Any] = {}
    if update.tags is not None:
        changes["tags"] = tags(update.tags)
    if not isinstance(update.rate_limit, UnsetType):
        changes["rate_limit"] = None if update.rate_limit is None else rate_limit(update.rate_limit)
    if update.model_updates:
        changes["models"] = _model_updates(version, update.model_updates)
    if update.llm_invocation_config is not None:
        changes["llm_invocation_config"] = llm_invocation_config(
            update.llm_invocation_config, version.function_type
        )
    if update.description is not None:
        changes["description"] = description(update.description, version.name)
    return msgspec.structs.replace(version, **changes)


def parse_enum(kind: type[E], field: str, value: str | None, default: E | None = None) -> E:
    """Enums match case-insensitively (NVCF's ACCEPT_CASE_INSENSITIVE_ENUMS)."""
    if value is None and default is not None:
        return default
    for member in kind:
        if value is not None and member.value.upper() == value.upper():
            return member
    allowed = ", ".join(m.value for m in kind)
    raise Invalid(f"Invalid request: '{field}' must be one of {allowed}, got '{value}'")


def description(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        return name
    if len(value) > MAX_DESCRIPTION:
        raise Invalid(
            f"Invalid request: 'description': Maximum description length of {MAX_DESCRIPTION}"
            " is exceeded."
        )
    return value


def tags(values: Sequence[str]) -> tuple[str, ...] | None:
    """A set of tags: duplicates dropped, first-seen order kept."""
    unique = tuple(dict.fromkeys(values))
    if len(unique) > MAX_TAGS:
        raise Invalid(f"Invalid request: 'tags': Maximum number of tags of {MAX_TAGS} is exceeded.")
    for tag in unique:
        if len(tag) > MAX_TAG:
            raise Invalid(f"Invalid request: 'tags': Maximum tag length of {MAX_TAG} is exceeded.")
        if not TAG_RE.fullmatch(tag):
            raise Invalid(
                f"Invalid request: tag '{tag}' in 'tags' must conform to regex {TAG_RE.pattern}"
            )
    return unique or None


def _name(value: str | None) -> str:
    if value is None or not value.strip():
        raise Invalid("Invalid request: 'name' cannot be empty/null in the create function payload")
    if len(value) > MAX_NAME:
        raise Invalid(f"Invalid function name: 'name' must be 1 - {MAX_NAME} characters long")
    if not NAME_RE.fullmatch(value):
        raise Invalid(f"Invalid function name: 'name' must conform to regex {NAME_RE.pattern}")
    return value


def _port(field: str, value: int) -> int:
    if not 1 <= value <= 65535:
        raise Invalid(f"Invalid request: '{field}' must be between 1 and 65535, got {value}")
    return value


def _artifacts(req: FunctionInput) -> tuple[str | None, str | None, str | None]:
    image = (
        None if req.container_image is None else check_image("containerImage", req.container_image)
    )
    helm = None if req.helm_chart is None else check_uri("helmChart", req.helm_chart)
    if image is None and not req.models and helm is None:
        raise Invalid(
            "Invalid request: One of the following properties 'containerImage', 'models', or "
            "'helmChart' must be specified in the payload"
        )
    if helm is not None:
        for field, given in (
            ("containerImage", image is not None),
            ("containerArgs", bool(req.container_args and req.container_args.strip())),
            ("containerEnvironment", req.container_environment is not None),
        ):
            if given:
                raise Invalid(
                    f"Invalid request: Cannot specify both '{field}' and 'helmChart' properties"
                    " in the payload"
                )
    service = req.helm_chart_service_name
    service = service if service and service.strip() else None
    if (helm is None) != (service is None):
        raise Invalid(
            "Invalid request: Either both or none of 'helmChart' and 'helmChartServiceName' "
            "properties must be specified"
        )
    if helm is not None:
        raise Invalid(HELM_REFUSED)
    return image, helm, service


def _health(req: FunctionInput, inference_url: str) -> HealthCheck:
    given = req.health
    if given is None:
        uri = (
            DEFAULT_HEALTH_URI if req.health_uri is None else check_uri("healthUri", req.health_uri)
        )
        grpc = inference_url == "/grpc"
        return HealthCheck(
            protocol=HealthProtocol.GRPC if grpc else HealthProtocol.HTTP,
            uri=uri,
            port=req.inference_port or DEFAULT_PORT,
            timeout="PT10S",
            expected_status_code=200,
        )
    if not given.uri.strip():
        raise Invalid(
            "Invalid request: Health URI 'health.uri' cannot be empty/null in the create"
            " function payload"
        )
    if not 100 <= given.expected_status_code <= 599:
        raise Invalid(
            "Invalid request: 'health.expectedStatusCode' must be between 100 and 599, got"
            f" {given.expected_status_code}"
        )
    return HealthCheck(
        protocol=parse_enum(HealthProtocol, "health.protocol", given.protocol),
        uri=check_uri("health.uri", given.uri),
        port=_port("health.port", given.port),
        timeout=health_timeout(given.timeout),
        expected_status_code=given.expected_status_code,
    )


def _model_updates(
    version: FunctionVersion, updates: Sequence[ModelUpdate]
) -> tuple[ModelRef, ...] | None:
    if version.function_type is not FunctionType.LLM:
        raise Invalid("Invalid request: 'modelUpdates' is only valid for LLM functions")
    names = [u.model_name for u in updates]
    if len(set(names)) != len(names):
        raise Invalid("Invalid request: duplicate model names are not allowed in 'modelUpdates'")
    by_name = {m.name: m for m in version.models or ()}
    for update in updates:
        if not update.model_name or update.model_name not in by_name:
            raise Invalid(
                f"Invalid request: 'modelUpdates' names model '{update.model_name}', which this"
                " function version does not have"
            )
        given = update.llm_config
        changes = None if given is None else LlmConfig(**msgspec.structs.asdict(given))
        by_name[update.model_name] = model_update(by_name[update.model_name], changes)
    return tuple(by_name.values())
