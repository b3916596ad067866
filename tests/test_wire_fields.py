"""Each wire struct and its domain twin (the input it decodes into, the record it is encoded
from) declare the same fields, and each role has one name suffix.

`to_domain` and `to_wire` (msgspec.convert from attributes) match fields by name and drop what
the other side lacks without a word, so a field added to one twin and forgotten on the other
would silently vanish from a request or a response. Here every such pair is listed with the
fields that legitimately differ, each with its reason; a new wire struct must be listed too.

Names: a whole HTTP body is `*Request` / `*Response`, every other wire struct `*Wire`; a domain
input decoded from the wire is `*Input` (or `*Update` for F8's partial changes); records are
nouns (nvcf_lite/models.py, domain/status.py); a store class over the `Database` is a `*Repo`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

import nvcf_lite.api
import nvcf_lite.store
from nvcf_lite.api.artifacts import ArtifactFileWire, ArtifactWire
from nvcf_lite.api.assets import (
    AssetWire,
    CreateAssetRequest,
    CreateAssetResponse,
)
from nvcf_lite.api.authorizations import PartiesWire, PartyWire
from nvcf_lite.api.deployments import (
    ColdStartWire,
    DeploymentWire,
    GpuSpecWire,
    HealthInfoWire,
    InstanceWire,
    PullProgressWire,
    SpecStateWire,
)
from nvcf_lite.api.functions import (
    ActiveInstanceWire,
    CreateFunctionRequest,
    EnvVarWire,
    FunctionWire,
    HealthWire,
    LlmConfigUpdateWire,
    LlmConfigWire,
    LlmInvocationConfigWire,
    ModelUpdateWire,
    ModelWire,
    PriorityWire,
    RateLimitWire,
    ResourceWire,
    SecretWire,
    TelemetriesWire,
    UpdateFunctionRequest,
)
from nvcf_lite.api.keys import ApiKeyWire, KeyResourceWire
from nvcf_lite.api.queues import QueueWire
from nvcf_lite.api.registry_credentials import (
    AddRegistryCredentialRequest,
    RegistryCredentialWire,
    RegistrySecretWire,
    UpdateRegistryCredentialRequest,
)
from nvcf_lite.api.status import (
    FunctionStatusWire,
    GpuUnitStatusWire,
    GpuUsageWire,
    ResourceUsageWire,
    StatusResponse,
    VersionStatusWire,
)
from nvcf_lite.api.telemetries import TelemetryRequest, TelemetryWire
from nvcf_lite.api.traffic import EndedRequestWire, FunctionTrafficWire, TrafficPointWire
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.assets import Assets
from nvcf_lite.domain.authorizations import PartiesOf
from nvcf_lite.domain.deployment_rules import SpecInput
from nvcf_lite.domain.function_fields import SecretInput
from nvcf_lite.domain.function_rules import (
    FunctionInput,
    FunctionUpdate,
    LlmConfigUpdate,
    ModelUpdate,
)
from nvcf_lite.domain.invocations import QueueEntry
from nvcf_lite.domain.registry_credentials import (
    RegistryCredentialInput,
    RegistryCredentialUpdate,
    RegistrySecretInput,
)
from nvcf_lite.domain.status import (
    FunctionStatusView,
    GpuUnitStatus,
    GpuUsage,
    ResourceUsage,
    StatusReport,
    VersionStatus,
)
from nvcf_lite.domain.telemetries import TelemetryInput
from nvcf_lite.domain.traffic import EndedRequest, FunctionTraffic, TrafficPoint
from nvcf_lite.models import (
    ActiveInstance,
    ApiKey,
    Artifact,
    ArtifactFile,
    Asset,
    AuthorizedParty,
    ColdStart,
    Deployment,
    EnvVar,
    FunctionVersion,
    GpuSpec,
    HealthCheck,
    HealthInfo,
    InstanceView,
    KeyResource,
    LlmConfig,
    LlmInvocationConfig,
    ModelRef,
    Priority,
    PullProgress,
    RateLimit,
    RegistryCredential,
    ResourceRef,
    SpecState,
    Telemetries,
    Telemetry,
)

DECODE = "decode"  # left -> right: a request body into its domain input (`to_domain`)
ENCODE = "encode"  # right -> left: a record into its response body (`to_wire`)
BUILD = "build"  # left -> right inside the domain: an input into its record


@dataclass(frozen=True)
class Twin:
    left: type
    right: type
    via: str
    left_only: Mapping[str, str] = field(default_factory=dict)  # field -> why only left has it
    right_only: Mapping[str, str] = field(default_factory=dict)  # field -> why only right has it
    renamed: Mapping[str, str] = field(default_factory=dict)  # left field -> right field

    @property
    def id(self) -> str:
        return f"{self.left.__name__}~{self.right.__name__}"


NOT_ON_F6 = "an instance's own fields, never part of the function version it is listed under"
ASSET_INTERNAL = "the sweeper's and the blob store's bookkeeping; NVCF's asset shows none of it"

TWINS: tuple[Twin, ...] = (
    # -- functions: F1/F2 body -> FunctionInput -> FunctionVersion -> F3/F5/F6 body --------------
    Twin(CreateFunctionRequest, FunctionInput, DECODE),
    Twin(
        FunctionInput,
        FunctionVersion,
        BUILD,
        right_only={
            "function_id": "server-assigned (F1 new, F2 from the path)",
            "version_id": "server-assigned",
            "nca_id": "the caller's account",
            "created_at": "server-assigned",
            "status": "the lifecycle (INACTIVE until deployed)",
            "active_instances": "filled in for a response from the live instances",
            "owned_by_different_account": "filled in for a response, per caller",
        },
    ),
    Twin(FunctionWire, FunctionVersion, ENCODE),
    Twin(HealthWire, HealthCheck, DECODE),
    Twin(EnvVarWire, EnvVar, DECODE),
    Twin(ModelWire, ModelRef, DECODE),
    Twin(LlmConfigWire, LlmConfig, DECODE),
    Twin(ResourceWire, ResourceRef, DECODE),
    Twin(SecretWire, SecretInput, DECODE),
    Twin(RateLimitWire, RateLimit, DECODE),
    Twin(PriorityWire, Priority, DECODE),
    Twin(LlmInvocationConfigWire, LlmInvocationConfig, DECODE),
    Twin(TelemetriesWire, Telemetries, DECODE),
    # -- Z1-Z10: authorized parties ---------------------------------------------------------
    Twin(PartyWire, AuthorizedParty, DECODE),
    Twin(
        PartiesWire,
        PartiesOf,
        ENCODE,
        renamed={"id": "function_id", "authorized_parties": "parties"},
    ),
    Twin(ActiveInstanceWire, ActiveInstance, ENCODE),
    # -- F8/F9 update -----------------------------------------------------------------------
    Twin(UpdateFunctionRequest, FunctionUpdate, DECODE),
    Twin(ModelUpdateWire, ModelUpdate, DECODE),
    Twin(LlmConfigUpdateWire, LlmConfigUpdate, DECODE),
    Twin(
        LlmConfigUpdate,
        LlmConfig,
        BUILD,  # `LlmConfig(**asdict(update))` in function_rules._model_updates
        right_only={
            "uris": "set at creation only; F8 modelUpdates cannot change it",
            "tokenizer": "set at creation only; F8 modelUpdates cannot change it",
        },
    ),
    # -- deployments: D1/D4 spec -> SpecInput -> GpuSpec -> D2/D3 spec --------------------------
    Twin(GpuSpecWire, SpecInput, DECODE),
    Twin(
        SpecInput,
        GpuSpec,
        BUILD,
        left_only={"configuration": "Helm only: rejected for containers (CONFIG_REJECTED)"},
    ),
    Twin(
        GpuSpecWire,
        GpuSpec,
        ENCODE,
        left_only={"configuration": "request only: never stored, so never in a response"},
    ),
    Twin(
        DeploymentWire,
        Deployment,
        ENCODE,  # by hand in api/deployments.deployment_wire
        renamed={
            "function_version_id": "version_id",
            "deployment_specifications": "specs",
            "last_updated_at": "updated_at",
        },
        left_only={
            "function_name": "from the function version",
            "function_status": "from the function version",
            "instances": "live, from the Scheduler",
            "scaling": "live, from the Scheduler",
        },
        right_only={"draining": "internal: a graceful undeploy in progress (not listed meanwhile)"},
    ),
    Twin(
        HealthInfoWire,
        HealthInfo,
        ENCODE,
        left_only={
            "sis_request_id": "NVCF's field; nvcf-lite has no SIS request, so it stays absent",
            "image_pull": "live: added by api/deployments._pull_health, never stored",
        },
    ),
    Twin(
        InstanceWire,
        InstanceView,
        ENCODE,
        right_only={
            "function_id": "the enclosing deployment / version carries it",
            "version_id": "the enclosing deployment / version carries it",
            "deployment_id": "the enclosing deployment / version carries it",
        },
    ),
    Twin(SpecStateWire, SpecState, ENCODE),
    Twin(PullProgressWire, PullProgress, ENCODE),
    # -- assets ----------------------------------------------------------------------------
    Twin(
        AssetWire,
        Asset,
        ENCODE,  # by hand in api/assets._wire
        right_only={
            "nca_id": "the owner; the caller's own account",
            "upload_expires_at": ASSET_INTERNAL,
            "expires_at": ASSET_INTERNAL,
            "uploaded_at": ASSET_INTERNAL,
            "size_bytes": ASSET_INTERNAL,
            "sha256": ASSET_INTERNAL,
        },
    ),
    Twin(
        CreateAssetResponse,
        Asset,
        ENCODE,  # by hand in api/assets.create_asset
        left_only={"upload_url": "signed per request (domain/signing.py), not part of the asset"},
        right_only={
            "nca_id": "the owner; the caller's own account",
            "created_at": "A1 answers the id and upload URL; A2/A3 show the rest",
            "upload_expires_at": ASSET_INTERNAL,
            "expires_at": ASSET_INTERNAL,
            "uploaded_at": ASSET_INTERNAL,
            "size_bytes": ASSET_INTERNAL,
            "sha256": ASSET_INTERNAL,
        },
    ),
    # -- the model store (M1-M4) -----------------------------------------------------------
    Twin(
        ArtifactWire,
        Artifact,
        ENCODE,  # by hand in api/artifacts.artifact_wire
        left_only={"uri": "derived: nvcf-lite://{kind}s/{name}/{version}, what a function names"},
    ),
    Twin(ArtifactFileWire, ArtifactFile, ENCODE),
    # -- queues (Q1/Q2) --------------------------------------------------------------------
    Twin(
        QueueWire,
        QueueEntry,
        ENCODE,  # by hand in api/queues._depths
        renamed={
            "function_version_id": "version_id",
            "function_name": "name",
            "function_status": "status",
            "queue_depth": "depth",
        },
    ),
    # -- registry credentials (spec §2.8) ---------------------------------------------------
    Twin(AddRegistryCredentialRequest, RegistryCredentialInput, DECODE),
    Twin(UpdateRegistryCredentialRequest, RegistryCredentialUpdate, DECODE),
    Twin(RegistrySecretWire, RegistrySecretInput, DECODE),
    Twin(RegistryCredentialWire, RegistryCredential, ENCODE),
    # -- GET /v2/nvcf-lite/status ----------------------------------------------------------
    Twin(StatusResponse, StatusReport, ENCODE),
    Twin(FunctionStatusWire, FunctionStatusView, ENCODE),
    Twin(VersionStatusWire, VersionStatus, ENCODE),
    Twin(GpuUsageWire, GpuUsage, ENCODE),
    Twin(GpuUnitStatusWire, GpuUnitStatus, ENCODE),
    # -- the console's traffic and keys ------------------------------------------------------
    Twin(TrafficPointWire, TrafficPoint, ENCODE),
    Twin(FunctionTrafficWire, FunctionTraffic, ENCODE),
    Twin(EndedRequestWire, EndedRequest, ENCODE),
    Twin(ApiKeyWire, ApiKey, ENCODE),
    Twin(KeyResourceWire, KeyResource, ENCODE),
    Twin(ColdStartWire, ColdStart, ENCODE),
    # -- telemetries (E1-E5) ---------------------------------------------------------------
    Twin(TelemetryRequest, TelemetryInput, DECODE),
    Twin(TelemetryWire, Telemetry, ENCODE),
    Twin(ResourceUsageWire, ResourceUsage, ENCODE),
)

# Wire structs with no domain twin, and why.
WIRE_ONLY: Mapping[str, str] = {
    # envelopes: one field around a twin listed above (or a list of them)
    "FunctionResponse": "envelope of FunctionWire",
    "ListFunctionsResponse": "envelope of FunctionWire",
    "ListFunctionIdsResponse": "a list of ids",
    "UpdateSecretsRequest": "envelope of SecretWire",
    "RateLimitRequest": "envelope of RateLimitWire",
    "KeysResponse": "envelope of ApiKeyWire",
    "CreateKeyRequest": "Keys.create's arguments (scopes, functions, description)",
    "CreateKeyResponse": "the plaintext key once, and ApiKeyWire",
    "RevokeKeyResponse": "the revoked key's id",
    "TrafficResponse": "Traffic.interval_s and a list of FunctionTrafficWire",
    "RequestsResponse": "a function id and a list of EndedRequestWire",
    "DeployRequest": "envelope of GpuSpecWire",
    "DeploymentResponse": "envelope of DeploymentWire",
    "DeploymentsResponse": "envelope of DeploymentWire",
    "GpuSpecResponse": "envelope of GpuSpecWire",
    "ListAssetsResponse": "envelope of AssetWire",
    "AssetResponse": "envelope of AssetWire",
    "ContentRedirectResponse": "a signed URL, made per request",
    "QueuesResponse": "function id around QueueWire",
    "PositionResponse": "ids and a number from Queues.position",
    "ClusterGroupsResponse": "envelope of ClusterGroupWire",
    "TelemetryResponse": "envelope of TelemetryWire",
    "ListTelemetryResponse": "envelope of TelemetryWire",
    "UpdateTelemetrySecretRequest": "envelope of SecretWire",
    "ArtifactResponse": "envelope of ArtifactWire",
    "ListArtifactsResponse": "envelope of ArtifactWire",
    "RegistryCredentialResponse": "envelope of RegistryCredentialWire",
    "ListRegistryCredentialsResponse": "envelope of RegistryCredentialWire",
    "RecognizedRegistriesResponse": "artifact type -> RecognizedRegistryWire",
    "RecognizedRegistryWire": "from the well-known registries, the mirrors and the credentials",
    # decoded and used directly: its fields are the handler's arguments
    "CreateAssetRequest": "its fields are Assets.create's arguments (test below)",
    "CallerInfoRequest": "one form field, the key to verify",
    # Z1-Z10: envelopes of PartyWire / PartiesWire (twins above)
    "PartiesRequest": "envelope of PartyWire",
    "PartyRequest": "envelope of PartyWire",
    "PartiesResponse": "envelope of PartiesWire",
    "FunctionPartiesResponse": "envelope of PartiesWire",
    # built by the handler from the host inventory or the platform, no record behind them
    "ClusterGroupWire": "G1, from the host inventory",
    "ClusterWire": "G1, from the host inventory",
    "GpuWire": "G1, from the host inventory",
    "InstanceTypeWire": "G1, from the host inventory",
    "HealthResponse": "GET /health, from the platform's probes",
    "ComponentWire": "GET /health, from the platform's probes",
}


def fields_of(cls: type) -> set[str]:
    if issubclass(cls, msgspec.Struct):
        return set(cls.__struct_fields__)
    return {f.name for f in dataclasses.fields(cls)}


def field_types(cls: type) -> dict[str, Any]:
    if issubclass(cls, msgspec.Struct):
        return {f.name: f.type for f in msgspec.structs.fields(cls)}
    return typing.get_type_hints(cls)


def structs_in(tp: Any) -> set[type]:
    """The Structs a field's type holds: itself, or inside list[...], tuple[...], X | None."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return {tp}
    return {s for arg in typing.get_args(tp) for s in structs_in(arg)}


def wire_structs() -> Iterator[type[Wire]]:
    for info in pkgutil.iter_modules(nvcf_lite.api.__path__, "nvcf_lite.api."):
        importlib.import_module(info.name)
    pending: list[type[Wire]] = list(Wire.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("nvcf_lite.api."):
            yield cls


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t.id)
def test_twins_declare_the_same_fields(twin: Twin) -> None:
    left = {twin.renamed.get(f, f) for f in fields_of(twin.left) - set(twin.left_only)}
    right = fields_of(twin.right) - set(twin.right_only)
    assert left - right == set(), f"only {twin.left.__name__} has them: add to {twin.right}"
    assert right - left == set(), f"only {twin.right.__name__} has them: add to {twin.left}"


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t.id)
def test_allow_lists_name_fields_that_differ(twin: Twin) -> None:
    """An allow-listed field exists on its side only, so no entry outlives its reason."""
    left, right = fields_of(twin.left), fields_of(twin.right)
    assert set(twin.left_only) <= left - right
    assert set(twin.right_only) <= right - left
    assert set(twin.renamed) <= left
    assert set(twin.renamed.values()) <= right - left


WIRE_TWINS = [t for t in TWINS if issubclass(t.left, Wire)]


@pytest.mark.parametrize("twin", WIRE_TWINS, ids=lambda t: t.id)
def test_nested_structs_are_twins_too(twin: Twin) -> None:
    """`health: HealthWire` on the wire is `health: HealthCheck` on its twin, and so on down."""
    twins_of: dict[type, set[type]] = {}
    for t in WIRE_TWINS:
        twins_of.setdefault(t.left, set()).add(t.right)
    left_types, right_types = field_types(twin.left), field_types(twin.right)
    for name, tp in left_types.items():
        if name in twin.left_only:
            continue
        wire = structs_in(tp)
        domain = structs_in(right_types[twin.renamed.get(name, name)])
        mapped = {d for w in wire for d in twins_of.get(w, set())}
        assert domain <= mapped and all(twins_of.get(w, set()) & domain for w in wire), (
            f"{twin.left.__name__}.{name} holds {wire}, {twin.right.__name__}'s holds {domain}"
        )


def test_every_wire_struct_has_a_twin_or_a_reason() -> None:
    paired = {t.left.__name__ for t in TWINS}
    found = {cls.__name__ for cls in wire_structs()}
    assert found - paired - set(WIRE_ONLY) == set(), "list it in TWINS or WIRE_ONLY"
    assert set(WIRE_ONLY) - found == set(), "WIRE_ONLY names a struct that is gone"
    assert paired & set(WIRE_ONLY) == set()


def test_asset_create_body_is_the_domain_call() -> None:
    params = set(inspect.signature(Assets.create).parameters) - {"self", "principal"}
    assert fields_of(CreateAssetRequest) == params


def test_f8_changes_only_fields_of_the_record() -> None:
    """apply_update replaces record fields by name; modelUpdates is merged into `models`."""
    assert fields_of(FunctionUpdate) - {"model_updates"} <= fields_of(FunctionVersion)


def test_wire_structs_are_wire_request_or_response() -> None:
    suffixes = ("Wire", "Request", "Response")
    assert [c.__name__ for c in wire_structs() if not c.__name__.endswith(suffixes)] == []


def test_decoded_domain_inputs_are_input_or_update() -> None:
    records = "nvcf_lite.models"
    inputs = {t.right for t in TWINS if t.via == DECODE and t.right.__module__ != records}
    assert inputs, "the table lost its inputs"
    assert [c.__name__ for c in inputs if not c.__name__.endswith(("Input", "Update"))] == []


def test_store_classes_over_the_database_are_repos() -> None:
    repos = []
    for info in pkgutil.iter_modules(nvcf_lite.store.__path__, "nvcf_lite.store."):
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            params = inspect.signature(cls.__init__).parameters.values()
            if any(str(p.annotation) == "Database" for p in params):
                repos.append(cls.__name__)
    assert repos, "no store class takes the Database"
    assert [name for name in repos if not name.endswith("Repo")] == []
