"""Rules of the structured fields of a function: URIs, health timeouts (ISO-8601 durations),
rate limits, models and their LLM configuration, LLM priorities, telemetries, container
environment, resources and secrets (spec §2.1.1).

Each raises `Invalid` with a message naming the field; `function_rules` composes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec

from nvcf_lite.domain.image_references import is_reference
from nvcf_lite.errors import Invalid
from nvcf_lite.models import (
    EnvVar,
    FunctionType,
    LlmConfig,
    LlmInvocationConfig,
    ModelRef,
    Priority,
    RateLimit,
    ResourceRef,
    Telemetries,
    parse_uuid,
)

RATE_RE = re.compile(r"^(?!.*-([SMHD]).*-\1)[1-9]\d*-[SMHD](,\s*[1-9]\d*-[SMHD])*$")
TOKEN_RATE_RE = re.compile(r"^(?!.*-([SMHDW]).*-\1)[1-9]\d*-[SMHDW](,\s*[1-9]\d*-[SMHDW])*$")
ROUTING_METHODS = ("power-of-two", "round-robin", "random", "groq-multiregion", "pulsar")
MAX_RATE_IDS = 32
MAX_PRIORITY = 4_294_967_295
MAX_PER_ACCOUNT_PRIORITY = 64
# Java's Duration.parse grammar without signs: PnDTnHnMn.nS, letters in either case.
_DURATION_RE = re.compile(
    r"P(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:[.,](\d{1,9}))?S)?)?", re.IGNORECASE
)
_WHITESPACE = re.compile(r"\s")
SECRET_NAME_RE = re.compile(r"^[a-z0-9A-Z][a-z0-9A-Z_.\-]*$")
MAX_SECRET_NAME, MAX_SECRET_VALUE = 48, 32768


class SecretInput(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: str | dict[str, Any]


def check_uri(field: str, value: str) -> str:
    """A URI-typed field: not blank and without whitespace (Java's URI would reject it)."""
    if not value.strip():
        raise Invalid(f"Invalid request: '{field}' must not be blank")
    if _WHITESPACE.search(value):
        raise Invalid(f"Invalid request: '{field}' must be a URI without whitespace, got '{value}'")
    return value


def check_image(field: str, value: str) -> str:
    """An image reference the Docker engine can pull: refused here, with why, rather than as
    a failed deployment later (a `..`, an upper-case repository, a bad tag)."""
    check_uri(field, value)
    if not is_reference(value):
        raise Invalid(
            f"Invalid request: '{field}' '{value}' is not a container image reference"
            " ([registry[:port]/]repository[:tag][@digest], repository in lower case)"
        )
    return value


def parse_duration(text: str) -> Decimal | None:
    """Seconds of an ISO-8601 duration (PT10S, PT0.5S, PT1M, P1DT2H), None if not one."""
    match = _DURATION_RE.fullmatch(text)
    if match is None or text.upper() == "P":
        return None
    days, hours, minutes, secs, frac = match.groups()
    total = Decimal(int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60)
    total += Decimal(f"{secs or 0}.{frac or 0}")
    return total


def format_duration(seconds: Decimal) -> str:
    """As Java prints a Duration: PT10S, PT0.5S, PT1M, PT24H (never days)."""
    whole = int(seconds)
    frac = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if secs or frac or text == "PT":
        text += str(secs) + (f"{frac:f}".rstrip("0")[1:] if frac else "") + "S"
    return text


def health_timeout(text: str) -> str:
    seconds = parse_duration(text)
    if seconds is None:
        raise Invalid(
            f"Invalid request: 'health.timeout' must be an ISO-8601 duration such as PT10S,"
            f" got '{text}'"
        )
    if seconds <= 0:
        raise Invalid(f"Invalid request: 'health.timeout' must be positive, got '{text}'")
    return format_duration(seconds)


def duration_seconds(text: str) -> float:
    """Seconds of a stored (already validated) duration such as `health.timeout`."""
    seconds = parse_duration(text)
    if seconds is None:
        raise Invalid(f"'{text}' is not an ISO-8601 duration")
    return float(seconds)


def _rate(field: str, value: str, pattern: re.Pattern[str] = RATE_RE) -> None:
    if not pattern.fullmatch(value):
        raise Invalid(
            f"Invalid request: '{field}' '{value}' must conform to regex {pattern.pattern}"
        )


def rate_limit(value: RateLimit) -> RateLimit:
    if value.rate_limit is None and value.per_nca_id_rate is None and value.per_user_rate is None:
        raise Invalid(
            "Invalid request: 'rateLimit' needs at least one of 'rateLimit', 'perNcaIdRate' or"
            " 'perUserRate'"
        )
    if value.rate_limit is not None:
        _rate("rateLimit.rateLimit", value.rate_limit)
    if value.per_user_rate is not None:
        _rate("rateLimit.perUserRate", value.per_user_rate)
    per_id = value.per_nca_id_rate or {}
    exempted = tuple(dict.fromkeys(value.exempted_nca_ids or ()))
    if len(exempted) > MAX_RATE_IDS:
        raise Invalid(
            "Invalid request: 'rateLimit.exemptedNcaIds': Maximum number of exempted nca id of"
            f" {MAX_RATE_IDS} is exceeded"
        )
    if len(per_id) > MAX_RATE_IDS:
        raise Invalid(
            "Invalid request: 'rateLimit.perNcaIdRate': Maximum number of per nca id config of"
            f" {MAX_RATE_IDS} is exceeded"
        )
    for nca_id, rate in per_id.items():
        _rate(f"rateLimit.perNcaIdRate.{nca_id}", rate)
        if nca_id in exempted:
            raise Invalid(
                f"Invalid request: NCA ID '{nca_id}' cannot be in both 'rateLimit.perNcaIdRate'"
                " and 'rateLimit.exemptedNcaIds'"
            )
    if exempted and value.rate_limit is None:
        raise Invalid(
            "Invalid request: 'rateLimit.exemptedNcaIds' can only be given with"
            " 'rateLimit.rateLimit'"
        )
    return msgspec.structs.replace(value, exempted_nca_ids=exempted or None)


def models(
    items: Sequence[ModelRef] | None, function_type: FunctionType
) -> tuple[ModelRef, ...] | None:
    llm = function_type is FunctionType.LLM
    if llm and not items:
        raise Invalid("Invalid request: 'models' must be specified when functionType is LLM")
    seen: set[str] = set()
    out = []
    for i, model in enumerate(items or ()):
        if not model.name.strip():
            raise Invalid(f"Invalid request: 'models[{i}].name' must not be blank")
        if model.name in seen:
            raise Invalid("Invalid request: duplicate model names are not allowed in 'models'")
        seen.add(model.name)
        if llm:
            out.append(_llm_model(model))
            continue
        if model.version is None or model.uri is None:
            raise Invalid(
                "Invalid request: non-LLM function models must specify both 'version' and 'uri'"
            )
        if model.llm_config is not None:  # kept, and answered back: held to the same rules
            model = msgspec.structs.replace(
                model, llm_config=_llm_config(model.name, model.llm_config)
            )
        out.append(model)
    return tuple(out) or None


def _llm_model(model: ModelRef) -> ModelRef:
    config = model.llm_config
    if config is None:
        raise Invalid("Invalid request: LLM function models must specify 'llmConfig'")
    if not config.uris:
        raise Invalid(
            "Invalid request: LLM function models must specify non-empty 'llmConfig.uris'"
        )
    return msgspec.structs.replace(model, llm_config=_llm_config(model.name, config))


def _llm_config(model: str, config: LlmConfig) -> LlmConfig:
    for field, value in (
        ("tokenRateLimit", config.token_rate_limit),
        ("inputTokenRateLimit", config.input_token_rate_limit),
        ("outputTokenRateLimit", config.output_token_rate_limit),
    ):
        if value is not None and value.strip():
            _rate(f"models[{model}].llmConfig.{field}", value, TOKEN_RATE_RE)
    routing = config.routing_method
    if routing is not None and routing.strip():
        # as the router reads it: lowercase, '_' -> '-'
        routing = routing.strip().lower().replace("_", "-")
        if routing not in ROUTING_METHODS:
            raise Invalid(
                f"Invalid request: 'llmConfig.routingMethod' for model '{model}' is invalid;"
                f" supported values are [{', '.join(ROUTING_METHODS)}]"
            )
    return msgspec.structs.replace(config, routing_method=routing)


def model_update(model: ModelRef, changes: LlmConfig | None) -> ModelRef:
    """Merge an F8 `modelUpdates[]` entry into a model's llmConfig."""
    given = {
        k: v
        for k, v in msgspec.structs.asdict(changes or LlmConfig()).items()
        if v is not None and k not in ("uris", "tokenizer")
    }
    if not given:
        raise Invalid(
            "Invalid request: at least one of 'tokenRateLimit', 'routingMethod', "
            "'inputTokenRateLimit', or 'outputTokenRateLimit' must be specified"
        )
    merged = msgspec.structs.replace(model.llm_config or LlmConfig(), **given)
    return msgspec.structs.replace(model, llm_config=_llm_config(model.name, merged))


def llm_invocation_config(
    value: LlmInvocationConfig | None, function_type: FunctionType
) -> LlmInvocationConfig | None:
    if value is None:
        return None
    if function_type is not FunctionType.LLM:
        raise Invalid("Invalid request: 'llmInvocationConfig' is only valid for LLM functions")
    if value.priority is not None:
        _priority(value.priority)
    return value


def _priority(priority: Priority) -> None:
    where = "llmInvocationConfig.priority"
    if priority.default_priority is not None:
        _priority_value(f"{where}.defaultPriority", priority.default_priority)
    per_account = priority.per_account_priority or {}
    if len(per_account) > MAX_PER_ACCOUNT_PRIORITY:
        raise Invalid(
            f"Invalid request: '{where}.perAccountPriority': Maximum number of perAccountPriority"
            f" entries of {MAX_PER_ACCOUNT_PRIORITY} is exceeded."
        )
    for nca_id, value in per_account.items():
        _priority_value(f"{where}.perAccountPriority.{nca_id}", value)
    if per_account and priority.default_priority is None:
        raise Invalid(
            "Invalid priority: 'defaultPriority' is required when 'perAccountPriority' has entries"
        )


def _priority_value(field: str, value: int) -> None:
    if not 0 <= value <= MAX_PRIORITY:
        raise Invalid(f"Invalid request: '{field}' must be between 0 and {MAX_PRIORITY}")


def telemetries(value: Telemetries | None) -> Telemetries | None:
    if value is None:
        return None
    ids = msgspec.structs.asdict(value)
    if all(v is None for v in ids.values()):
        raise Invalid("Invalid request: Telemetry object must have at least one UUID specified.")
    out: dict[str, str | None] = {}
    for field, given in ids.items():
        canonical = None if given is None else parse_uuid(given)
        if given is not None and canonical is None:
            camel = "telemetries." + re.sub(r"_(\w)", lambda m: m.group(1).upper(), field)
            raise Invalid(f"Invalid request: '{camel}' must be a UUID, got '{given}'")
        out[field] = canonical
    return Telemetries(**out)


def environment(entries: Sequence[EnvVar] | None) -> tuple[EnvVar, ...] | None:
    for i, entry in enumerate(entries or ()):
        if not entry.key.strip():
            raise Invalid(f"Invalid request: 'containerEnvironment[{i}].key' must not be blank")
    return tuple(entries) if entries else None


def resources(items: Sequence[ResourceRef] | None) -> tuple[ResourceRef, ...] | None:
    for i, item in enumerate(items or ()):
        for field in ("name", "version", "uri"):
            if not getattr(item, field).strip():
                raise Invalid(f"Invalid request: 'resources[{i}].{field}' must not be blank")
    return tuple(dict.fromkeys(items)) if items else None


def secrets(items: Sequence[SecretInput]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, secret in enumerate(items):
        name = secret.name
        if not 1 <= len(name) <= MAX_SECRET_NAME:
            raise Invalid(
                f"Invalid request: 'secrets[{i}].name' must be 1 - {MAX_SECRET_NAME} characters"
                " long"
            )
        if not SECRET_NAME_RE.fullmatch(name):
            raise Invalid(
                f"Invalid request: secret name '{name}' in 'secrets' must conform to regex"
                f" {SECRET_NAME_RE.pattern}"
            )
        if name in out:
            raise Invalid(f"Invalid request: duplicate secret name '{name}' in 'secrets'")
        value = secret.value
        size = len(value) if isinstance(value, str) else len(msgspec.json.encode(value).decode())
        if not 1 <= size <= MAX_SECRET_VALUE:
            raise Invalid(
                f"Invalid request: value of secret '{name}' in 'secrets' must be 1 -"
                f" {MAX_SECRET_VALUE} characters long (objects count as JSON text)"
            )
        out[name] = value
    return out
