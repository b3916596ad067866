"""Domain records and enums shared across layers (NVCF status strings exactly)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from enum import StrEnum

import msgspec


class FunctionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DEPLOYING = "DEPLOYING"
    ERROR = "ERROR"
    INACTIVE = "INACTIVE"
    DELETED = "DELETED"
    DEGRADED = "DEGRADED"
    DEGRADING = "DEGRADING"


SCOPES: tuple[str, ...] = (
    "register_function",
    "update_function",
    "delete_function",
    "deploy_function",
    "list_functions",
    "list_functions_details",
    "invoke_function",
    "queue_details",
    "authorize_clients",
    "update_secrets",
    "manage_telemetries",
    "manage_registry_credentials",
    "list_cluster_groups",
)

RESOURCE_TYPES: tuple[str, ...] = ("account-functions", "authorized-functions", "function")


class KeyResource(msgspec.Struct, frozen=True):
    type: str
    id: str


class ApiKey(msgspec.Struct, frozen=True):
    key_id: str
    key_prefix: str
    nca_id: str
    description: str
    scopes: tuple[str, ...]
    resources: tuple[KeyResource, ...]
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    teams: tuple[str, ...] = ()  # NGC teams the key belongs to; () = not limited to teams
    org_name: str = ""  # the org of its account (read with the key)


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the key's account (NCA id, org), teams, scopes and function resources."""

    key_id: str
    nca_id: str
    scopes: frozenset[str]
    resources: tuple[KeyResource, ...]
    org_name: str = ""
    teams: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        return f"apikey:{self.key_id}"


class Account(msgspec.Struct, frozen=True):
    """An NVIDIA Cloud Account (spec §6.4): its NCA id and the NGC org name that selects it."""

    nca_id: str
    org_name: str
    created_at: str


class AuthorizedParty(msgspec.Struct, frozen=True):
    """An account a function (version) is shared with (spec §2.7); nca_id '*' is everyone."""

    nca_id: str
    client_id: str | None = None


WILDCARD = "*"


def now_iso() -> str:
    """UTC now as NVCF prints Java Instants: 2024-05-01T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_ID_BATCH = 256
_ids: list[str] = []  # random (version 4) UUIDs made ahead, a batch per os.urandom call
os.register_at_fork(after_in_child=_ids.clear)  # a child never repeats its parent's ids


def new_id() -> str:
    """A random UUID (version 4), as str(uuid.uuid4()) makes one: every request takes one
    on the hot path, where uuid4's urandom call and UUID object per id cost ~2-4 µs."""
    if not _ids:
        _ids.extend(_random_uuids(_ID_BATCH))
    return _ids.pop()


def _random_uuids(n: int) -> list[str]:
    raw = os.urandom(16 * n).hex()
    out = []
    for i in range(0, 32 * n, 32):
        h = raw[i : i + 32]
        variant = "89ab"[int(h[16], 16) & 3]  # RFC 4122: the top two bits of clock_seq are 10
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return out


def parse_uuid(value: str) -> str | None:
    """The canonical form of a UUID string, or None when it is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


# --- Deployments and instances (spec §2.2, §3.2) -------------------------------------------


class GpuSpec(msgspec.Struct, kw_only=True):
    """One deployment specification (GpuSpecificationDto) as stored."""

    gpu_specification_id: str
    gpu: str
    instance_type: str
    min_instances: int
    max_instances: int
    max_request_concurrency: int = 1
    backend: str | None = None
    clusters: list[str] | None = None
    regions: list[str] | None = None
    attributes: list[str] | None = None
    availability_zones: list[str] | None = None
    autoscaling_configuration: dict[str, object] | None = None
    autoscaling_configuration_policy: str | None = None
    warm_pool_seconds: float | None = None  # nvcf-lite extension: keep idle instances paused


class HealthInfo(msgspec.Struct, kw_only=True):
    icms_request_id: str
    gpu: str
    backend: str
    instance_type: str
    error: str


class Deployment(msgspec.Struct, kw_only=True):
    deployment_id: str
    function_id: str
    version_id: str
    nca_id: str
    specs: list[GpuSpec]
    health_info: list[HealthInfo] = []
    draining: bool = False
    created_at: str
    updated_at: str


class InstanceState(StrEnum):
    """nvcf-lite's own instance states (the extension `instances` field shows them)."""

    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    PAUSED = "paused"  # warm pool: `docker pause`d, resumed on demand
    FAILED = "failed"


INSTANCE_STATUS = {  # nvcf-lite state -> NVCF InstanceStatusEnum (spec §3.2)
    InstanceState.STARTING: "STARTING",
    InstanceState.READY: "ACTIVE",
    InstanceState.UNHEALTHY: "RUNNING",
    InstanceState.DRAINING: "TERMINATED",
    InstanceState.PAUSED: "RUNNING",
    InstanceState.FAILED: "ERRORED",
}


class PullProgress(msgspec.Struct, frozen=True):
    """A snapshot of one image pull in progress (Docker reports layers as they become known)."""

    image: str
    layers_done: int  # layers pulled and extracted, or already present
    layers_total: int  # layers known so far
    bytes_done: int  # downloaded bytes of the layers whose size is known
    bytes_total: int  # the sizes known so far (a layer's size is known once it downloads)
    status: str  # the engine's last status text, e.g. "Downloading"
    elapsed_s: float
    idle_s: float  # seconds since the last progress

    def text(self) -> str:
        """`pulling image X: 2/3 layers, 12.1 of 30.5 MB (40%)`, for health info and logs."""
        mb = 1_000_000
        size = f"{self.bytes_done / mb:.1f} of {self.bytes_total / mb:.1f} MB"
        if self.bytes_total:
            size += f" ({100 * self.bytes_done // self.bytes_total}%)"
        return (
            f"pulling image {self.image}: {self.layers_done}/{self.layers_total} layers, {size}, "
            f"{self.elapsed_s:.0f} s so far"
        )


class SpecState(msgspec.Struct, kw_only=True):
    """A deployment specification's scaling state (the nvcf-lite `scaling` extension field).

    `state`: `ok` (target reached), `scaling` (instances starting or draining toward the
    target), `crash-looping` (3+ failed starts in a row, backing off), `unschedulable` (no free
    GPU units for the target: running what fits), `error` (gave up: the version is ERROR).
    """

    gpu_specification_id: str
    target: int
    ready: int
    starting: int
    draining: int
    paused: int
    state: str
    detail: str | None = None
    image_pull: PullProgress | None = None  # an instance of it is waiting for its image


class ColdStart(msgspec.Struct, kw_only=True):
    """How an instance's start went, phase by phase (seconds), once it was ready: `kind` is
    cold (a new container), paused (an unpause from the warm pool) or adopted (started by an
    earlier process: no phases timed); `first_byte_s` once it answered its first request."""

    kind: str
    image_pull_s: float
    container_start_s: float
    first_healthy_s: float
    first_byte_s: float | None = None


class InstanceView(msgspec.Struct, kw_only=True):
    """A snapshot of one instance for responses (activeInstances, deployment instances)."""

    instance_id: str
    function_id: str
    version_id: str
    deployment_id: str
    gpu_specification_id: str
    gpu: str
    instance_type: str
    state: InstanceState
    gpu_uuids: list[str]
    container_id: str | None = None
    host_port: int | None = None
    host_address: str = "127.0.0.1"  # where host_port is published (a Swarm node's address)
    node: str | None = None  # the Swarm node it runs on (None on this host)
    error: str | None = None
    created_at: str
    updated_at: str
    age_s: float = 0.0  # seconds since its launch (or adoption) by this server
    in_flight: int = 0  # requests it is answering now
    max_request_concurrency: int = 1  # its slots: maxRequestConcurrency of its spec
    image_pull: PullProgress | None = None  # while its image is being pulled
    cold_start: ColdStart | None = None  # once it was ready


# ---------------------------------------------------------------------------------------------
# Functions (spec §2.1): the records of a registered function version, snake_case.
# The wire twins live in api/functions.py; `FunctionVersion` carries every FunctionWire field.
# ---------------------------------------------------------------------------------------------


class FunctionType(StrEnum):
    DEFAULT = "DEFAULT"
    STREAMING = "STREAMING"  # WebRTC low-latency streaming, not SSE
    LLM = "LLM"


class ApiBodyFormat(StrEnum):
    CUSTOM = "CUSTOM"
    PREDICT_V2 = "PREDICT_V2"


class HealthProtocol(StrEnum):
    HTTP = "HTTP"
    GRPC = "gRPC"


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True):
    """How the platform probes an instance; `timeout` is an ISO-8601 duration (e.g. PT10S)."""

    protocol: str
    uri: str
    port: int
    timeout: str
    expected_status_code: int


class EnvVar(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    value: str


class LlmConfig(msgspec.Struct, frozen=True, kw_only=True):
    uris: tuple[str, ...] | None = None
    token_rate_limit: str | None = None
    input_token_rate_limit: str | None = None
    output_token_rate_limit: str | None = None
    tokenizer: str | None = None
    routing_method: str | None = None


class ModelRef(msgspec.Struct, frozen=True, kw_only=True):
    """An NGC model mounted into the container; version and uri are optional only for LLM."""

    name: str
    version: str | None = None
    uri: str | None = None
    llm_config: LlmConfig | None = None


class ResourceRef(msgspec.Struct, frozen=True, kw_only=True):
    """An NGC resource mounted under /config/resources/{name}."""

    name: str
    version: str
    uri: str


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """Per-function invocation limits; rates are `N-S|M|H|D`, comma-joined."""

    rate_limit: str | None = None
    exempted_nca_ids: tuple[str, ...] | None = None
    per_nca_id_rate: dict[str, str] | None = None
    sync_check: bool | None = None
    per_user_rate: str | None = None


class Priority(msgspec.Struct, frozen=True, kw_only=True):
    default_priority: int | None = None
    per_account_priority: dict[str, int] | None = None


class LlmInvocationConfig(msgspec.Struct, frozen=True, kw_only=True):
    priority: Priority | None = None


class Telemetries(msgspec.Struct, frozen=True, kw_only=True):
    logs_telemetry_id: str | None = None
    metrics_telemetry_id: str | None = None
    traces_telemetry_id: str | None = None


class TelemetryProtocol(StrEnum):
    HTTP = "HTTP"
    GRPC = "GRPC"


class TelemetryProvider(StrEnum):
    PROMETHEUS = "PROMETHEUS"
    GRAFANA_CLOUD = "GRAFANA_CLOUD"
    SPLUNK = "SPLUNK"
    DATADOG = "DATADOG"
    SERVICENOW = "SERVICENOW"
    KRATOS = "KRATOS"
    KRATOS_THANOS = "KRATOS_THANOS"
    TIMESTREAM = "TIMESTREAM"
    VICTORIAMETRICS = "VICTORIAMETRICS"
    AZURE_MONITOR = "AZURE_MONITOR"
    OTEL_COLLECTOR = "OTEL_COLLECTOR"


class TelemetryType(StrEnum):
    LOGS = "LOGS"
    METRICS = "METRICS"
    TRACES = "TRACES"


class Telemetry(msgspec.Struct, frozen=True, kw_only=True):
    """A telemetry endpoint of an account (spec §2.8, `TelemetryDto`). Its secret (the value of
    `secret`, named like the telemetry) is stored sealed apart and never part of this record."""

    telemetry_id: str
    name: str
    endpoint: str
    protocol: TelemetryProtocol
    provider: TelemetryProvider
    types: tuple[TelemetryType, ...]
    created_at: str


class ActiveInstance(msgspec.Struct, frozen=True, kw_only=True):
    """One running (or failed) instance of a version, as F6 reports it (`InstanceDto`)."""

    instance_id: str
    function_id: str
    function_version_id: str
    nca_id: str
    instance_status: str  # ACTIVE|STARTING|RUNNING|ERRORED|PREEMPTED|DELETED|TERMINATED
    instance_type: str | None = None
    gpu: str | None = None
    backend: str | None = None
    location: str | None = None
    icms_request_id: str | None = None
    instance_created_at: str | None = None
    instance_updated_at: str | None = None


class FunctionVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One registered function version, validated and with defaults resolved.

    `secrets` holds secret NAMES only (values live in their own table); `active_instances`
    is never stored, only filled in for a response that may show it.
    """

    function_id: str
    version_id: str
    nca_id: str
    name: str
    status: FunctionStatus
    inference_url: str
    health_uri: str
    health: HealthCheck
    created_at: str
    function_type: FunctionType = FunctionType.DEFAULT
    api_body_format: ApiBodyFormat = ApiBodyFormat.CUSTOM
    description: str = ""
    inference_port: int | None = None
    container_image: str | None = None
    container_args: str | None = None
    container_environment: tuple[EnvVar, ...] | None = None
    models: tuple[ModelRef, ...] | None = None
    resources: tuple[ResourceRef, ...] | None = None
    helm_chart: str | None = None
    helm_chart_service_name: str | None = None
    tags: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None
    llm_invocation_config: LlmInvocationConfig | None = None
    telemetries: Telemetries | None = None
    secrets: tuple[str, ...] | None = None
    active_instances: tuple[ActiveInstance, ...] | None = None
    owned_by_different_account: bool | None = None

    @property
    def effective_port(self) -> int:
        """The port the inference server listens on: inferencePort, else 8000 (spec §2.1.1)."""
        return self.inference_port if self.inference_port is not None else 8000


# --- Invocation requests (spec §2.3, §3.3) --------------------------------------------------


class RequestState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"


class Outcome(msgspec.Struct, kw_only=True):
    """How a request ended, as the client will see it (status, headers, body or a zip URL)."""

    status: int
    headers: list[tuple[str, str]] = []
    body: bytes = b""
    location: str | None = None  # 302 to a large-result zip
    error: bool = False  # a platform/container error rendered as problem+json


class RequestRecord(msgspec.Struct, kw_only=True):
    """An accepted invocation as stored in the durable queue."""

    request_id: str
    function_id: str
    version_id: str
    nca_id: str
    key_id: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    poll_seconds: int
    mode: str  # pexec | stream | path | grpc (the path is the RPC, /package.Service/Method)
    assets: list[str] = []
    accepted_at: float
    state: RequestState = RequestState.QUEUED
    attempts: int = 0
    webhook_url: str | None = None  # NVCF-WEBHOOK-URL: the final result is POSTed there
    idempotency_key: str | None = None  # Idempotency-Key (its row: store/idempotency.py)
    fingerprint: str = ""  # what a retry with the same key must match (with a key only)


# --- Assets (spec §2.5) ----------------------------------------------------------------------


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    """An asset from its reservation on; `uploaded_at` is set once its bytes are stored.

    `upload_expires_at` and `expires_at` are epoch seconds (the upload URL's expiry, and when
    the sweeper deletes the asset); `created_at` is the ISO-8601 instant NVCF shows.
    """

    asset_id: str
    nca_id: str
    content_type: str
    description: str
    created_at: str
    upload_expires_at: float
    expires_at: float
    uploaded_at: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None


# --- Registry credentials (spec §2.8) --------------------------------------------------------

ARTIFACT_TYPES: tuple[str, ...] = ("CONTAINER", "HELM", "MODEL", "RESOURCE")


class RegistryCredential(msgspec.Struct, frozen=True, kw_only=True):
    """A registry credential as NVCF shows it (RegistryCredentialDetailsDto): never its secret.

    `registry_credential_name` is the name given with the secret; the secret value (base64 of
    `username:password`) is kept sealed by the store and opened only for a pull.
    """

    registry_credential_id: str
    nca_id: str
    registry_credential_name: str
    registry_name: str  # the recognized registry's name (NGC, DockerHub, ...) or the host
    registry_hostname: str
    artifact_types: tuple[str, ...]
    tags: tuple[str, ...] | None = None
    description: str | None = None
    provisioned_by: str = "USER"
    created_at: str
    last_updated_at: str


class RegistryAuth(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine needs to pull from one registry: its host and a username and password.

    `repr` leaves the password out, so a log line or a traceback that shows one reveals nothing.
    """

    registry: str  # host[:port], as image references name it
    username: str
    password: str
    credential_id: str = ""  # the registry credential it came from, for a reason to show

    def __repr__(self) -> str:
        return f"RegistryAuth(registry={self.registry!r}, username={self.username!r}, password=***)"


# --- The model store (models and resources mounted under /config, spec §4.1) ------------------


class ArtifactKind(StrEnum):
    """What a stored tree is mounted as: /config/models/{name} or /config/resources/{name}."""

    MODEL = "model"
    RESOURCE = "resource"

    @property
    def plural(self) -> str:
        return f"{self.value}s"


class ArtifactFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file of a stored tree: its relative path and its content's sha256 (its blob)."""

    path: str
    size_bytes: int
    sha256: str
    executable: bool = False


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    """A model or a resource in the local store: an immutable tree of files, by name and
    version. `sha256` digests its file list (paths, modes and contents), so two artifacts with
    the same digest hold the same tree. `files` is filled in when one artifact is read."""

    artifact_id: str
    kind: ArtifactKind
    name: str
    version: str
    size_bytes: int
    file_count: int
    sha256: str
    created_at: str
    files: tuple[ArtifactFile, ...] | None = None
