"""The served OpenAPI document states the constraints the server enforces (issue #14).

The wire structs keep their fields loose on purpose: the domain rules check them and answer
with NVCF's own words (`'name' cannot be empty/null in the create function payload`), which a
decoder's generic message would replace. So the constraints are stated here, next to the rules
they mirror, and added to the document when it is rendered:
- every `*_id` path parameter is a UUID (a malformed one is a 400: api/invocations.py);
- no string or object key in a JSON body may hold a NUL character (api/json_bodies.py);
- the fields the rules require or bound, per wire struct (`FIELDS`), and the query parameters
  that take a fixed set or a range (`QUERY`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from nvcf_lite.domain.asset_rules import _MEDIA_TYPE
from nvcf_lite.domain.function_fields import (
    MAX_RATE_IDS,
    MAX_SECRET_NAME,
    MAX_SECRET_VALUE,
    RATE_RE,
    ROUTING_METHODS,
    SECRET_NAME_RE,
    TOKEN_RATE_RE,
)
from nvcf_lite.domain.function_rules import MAX_TAG, MAX_TAGS, NAME_RE, TAG_RE
from nvcf_lite.domain.image_references import PATTERN as IMAGE_REFERENCE
from nvcf_lite.domain.telemetries import MAX_ENDPOINT
from nvcf_lite.models import (
    ARTIFACT_TYPES,
    SCOPES,
    ApiBodyFormat,
    FunctionType,
    HealthProtocol,
    TelemetryProtocol,
    TelemetryProvider,
    TelemetryType,
)

NO_NUL = "^[^\\u0000]*$"
JSON_VALUE = {"$ref": "#/components/schemas/JsonValue"}
PORT = {"minimum": 1, "maximum": 65535}
# an ISO-8601 duration with at least one non-zero figure (health.timeout must be positive)
DURATION = (
    "^(?=.*[1-9])[pP](?:[0-9]+[dD])?(?:[tT](?=[0-9])(?:[0-9]+[hH])?(?:[0-9]+[mM])?"
    "(?:[0-9]+(?:[.,][0-9]{1,9})?[sS])?)?$"
)
# Any JSON value without a NUL character in a string or key: what an unknown field may hold.
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": JSON_VALUE},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": JSON_VALUE,
        },
    ]
}
UUID_PATH = {"format": "uuid"}
UUID_RE = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# A boolean in a body as the decoder reads it (Litestar converts bodies leniently, as NVCF's
# Jackson coerces scalars): true/false, 0/1, and those spelled as strings in any case.
LENIENT_BOOLEAN: dict[str, Any] = {
    "anyOf": [
        {"type": "boolean"},
        {"enum": [0, 1]},
        {"type": "string", "pattern": "^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|0|1)$"},
    ]
}


def _spelled(words: Iterable[str], dash: str = "-") -> str:
    """The words in any case, as one alternation (`dash` for each '-')."""

    def letter(c: str) -> str:
        return dash if c == "-" else f"[{c.upper()}{c.lower()}]" if c.isalpha() else c

    return "|".join("".join(map(letter, word)) for word in words)


def any_case(kind: type[StrEnum]) -> dict[str, str]:
    """An enum the rules match case-insensitively (function_rules.parse_enum), as a pattern."""
    return {"pattern": f"^(?:{_spelled(kind)})$"}


NOT_BLANK = {"pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"}
# blank (no limit), or NVCF's token rate (function_fields._llm_config)
TOKEN_RATE = {"pattern": f"^(?:\\s*|{TOKEN_RATE_RE.pattern.removeprefix('^').removesuffix('$')})$"}
# blank, or a routing method as the router reads it: any case, '_' for '-', spaces around
ROUTING = {"pattern": f"^\\s*(?:{_spelled(ROUTING_METHODS, '[-_]')})?\\s*$"}
TAGS = {"maxItems": MAX_TAGS, "items": {"pattern": f"^{TAG_RE.pattern}$", "maxLength": MAX_TAG}}
# a secret's value: a string or an object of 1 to MAX_SECRET_VALUE characters (JSON text)
SECRET_VALUE = {"minLength": 1, "maxLength": MAX_SECRET_VALUE}
# wire struct -> (required fields, {field: constraints}); each mirrors a rule in the domain
FIELDS: dict[str, tuple[tuple[str, ...], dict[str, dict[str, Any]]]] = {
    "CreateFunctionRequest": (
        ("name", "inferenceUrl"),
        {
            "name": {"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 128},
            "inferenceUrl": {"pattern": "^\\S+$"},
            "containerImage": {"pattern": IMAGE_REFERENCE},
            "description": {"maxLength": 256},
            "functionType": {"enum": [t.value for t in FunctionType]},
            "inferencePort": PORT,
            "healthUri": {"pattern": "^\\S+$"},
            "tags": TAGS,
            "apiBodyFormat": {"enum": [f.value for f in ApiBodyFormat]},
        },
    ),
    "DeployRequest": (("deploymentSpecifications",), {"deploymentSpecifications": {"minItems": 1}}),
    "CreateAssetRequest": (
        ("contentType", "description"),
        {
            "contentType": {"pattern": _MEDIA_TYPE.pattern},
            "description": {"pattern": "^[^\\r\\n\\u0000]*[^\\s\\u0000][^\\r\\n\\u0000]*$"},
        },
    ),
    "AddRegistryCredentialRequest": (
        ("registryHostname", "secret"),
        {"registryHostname": {"pattern": "^\\S+$"}},
    ),
    "SecretWire": (
        ("name", "value"),
        {
            "name": {"pattern": SECRET_NAME_RE.pattern, "maxLength": MAX_SECRET_NAME},
            "value": SECRET_VALUE,
        },
    ),
    "UpdateFunctionRequest": ((), {"tags": TAGS}),
    "CreateKeyRequest": (
        ("scopes",),
        {
            # domain/auth.Keys.create: stripped, with or without an `apikey:`/`admin:` prefix
            "scopes": {
                "minItems": 1,
                "items": {"pattern": f"^\\s*(?:apikey:|admin:)?(?:{'|'.join(SCOPES)})\\s*$"},
            },
            "functions": {"items": {"pattern": f"^{UUID_RE}(?:/(?:\\*|{UUID_RE}))?$"}},
        },
    ),
    "PartyWire": ((), {"ncaId": NOT_BLANK}),
    "PartiesRequest": (("authorizedParties",), {"authorizedParties": {"minItems": 1}}),
    "HealthWire": (
        ("protocol", "uri", "port", "timeout", "expectedStatusCode"),
        {
            "protocol": any_case(HealthProtocol),
            "uri": {"pattern": "^[^\\s\\u0000]+$"},
            "port": PORT,
            "timeout": {"pattern": DURATION},
            "expectedStatusCode": {"minimum": 100, "maximum": 599},
        },
    ),
    "TelemetriesWire": (
        (),
        {f"{kind}TelemetryId": UUID_PATH for kind in ("logs", "metrics", "traces")},
    ),
    "ResourceWire": (
        ("name", "version", "uri"),
        {"name": NOT_BLANK, "version": NOT_BLANK, "uri": NOT_BLANK},
    ),
    "EnvVarWire": ((), {"key": NOT_BLANK}),
    "UpdateSecretsRequest": (("secrets",), {"secrets": {"minItems": 1}}),
    "RateLimitWire": (
        (),
        {
            "rateLimit": {"pattern": RATE_RE.pattern},
            "perUserRate": {"pattern": RATE_RE.pattern},
            "perNcaIdRate": {
                "maxProperties": MAX_RATE_IDS,
                "additionalProperties": {"type": "string", "pattern": RATE_RE.pattern},
            },
            "exemptedNcaIds": {"maxItems": MAX_RATE_IDS},
        },
    ),
    "ModelWire": ((), {"name": NOT_BLANK}),
    "LlmConfigWire": (
        (),
        {
            "tokenRateLimit": TOKEN_RATE,
            "inputTokenRateLimit": TOKEN_RATE,
            "outputTokenRateLimit": TOKEN_RATE,
            "routingMethod": ROUTING,
        },
    ),
    "TelemetryRequest": (
        ("endpoint", "protocol", "provider", "types", "secret"),
        {
            # stripped, then no space or control character (domain/telemetries._endpoint)
            "endpoint": {"pattern": f"^\\s*[^\\s\\u0000-\\u001f]{{1,{MAX_ENDPOINT}}}\\s*$"},
            "protocol": any_case(TelemetryProtocol),
            "provider": any_case(TelemetryProvider),
            "types": {"minItems": 1, "items": any_case(TelemetryType)},
        },
    ),
    "UpdateTelemetrySecretRequest": (("secret",), {}),
    "RegistrySecretWire": (
        ("name", "value"),
        {"name": {"pattern": "^\\S+$"}, "value": {"minLength": 1}},
    ),
}
LLM_MODEL = {
    "type": "object",
    "required": ["llmConfig"],
    "properties": {
        "llmConfig": {
            "type": "object",
            "required": ["uris"],
            "properties": {"uris": {"type": "array", "minItems": 1}},
        }
    },
}
PLAIN_MODEL = {
    "type": "object",
    "required": ["version", "uri"],
    "properties": {"version": {"type": "string"}, "uri": {"type": "string"}},
}
NOT_LLM = [t.value for t in FunctionType if t is not FunctionType.LLM]
# Rules over the whole body, added as they are: a function runs a container image or models;
# llmInvocationConfig comes only with functionType LLM (here, where generators look: several
# ignore `dependentSchemas`).
WHOLE: dict[str, dict[str, Any]] = {
    "UpdateFunctionRequest": {  # something to change (rateLimit null clears the limit)
        "anyOf": [
            {"required": [field], "properties": {field: {"type": kind, **more}}}
            for field, kind, more in (
                ("tags", "array", {}),
                ("modelUpdates", "array", {"minItems": 1}),
                ("llmInvocationConfig", "object", {}),
                ("description", "string", {}),
            )
        ]
        + [{"required": ["rateLimit"]}]
    },
    "RateLimitWire": {
        "allOf": [
            {  # a limit to apply
                "anyOf": [
                    {"required": [field], "properties": {field: {"type": kind}}}
                    for field, kind in (
                        ("rateLimit", "string"),
                        ("perNcaIdRate", "object"),
                        ("perUserRate", "string"),
                    )
                ]
            },
            {  # exempted from the account-wide limit only
                "anyOf": [
                    {"properties": {"exemptedNcaIds": {"type": "null"}}},  # or absent
                    {"properties": {"exemptedNcaIds": {"maxItems": 0}}},
                    {"required": ["rateLimit"], "properties": {"rateLimit": {"type": "string"}}},
                ]
            },
        ]
    },
    "PartiesRequest": {  # the wildcard ("*": public) stands alone, without a clientId
        "anyOf": [
            {
                "properties": {
                    "authorizedParties": {
                        "items": {"properties": {"ncaId": {"not": {"const": "*"}}}}
                    }
                }
            },
            {
                "properties": {
                    "authorizedParties": {
                        "maxItems": 1,
                        "items": {"properties": {"clientId": {"type": "null"}}},
                    }
                }
            },
        ]
    },
    # three disjoint cases, so that a generator picks one and merges it with the rest
    "CreateFunctionRequest": {
        "anyOf": [
            {  # a container image (and models, if any, with a version and a uri each)
                "required": ["containerImage"],
                "properties": {
                    "containerImage": {"type": "string"},
                    "functionType": {"enum": NOT_LLM},
                    "models": {"items": PLAIN_MODEL},
                    "llmInvocationConfig": {"type": "null"},
                },
            },
            {  # models alone, each with a version and a uri
                "required": ["models"],
                "properties": {
                    "functionType": {"enum": NOT_LLM},
                    "models": {"type": "array", "minItems": 1, "items": PLAIN_MODEL},
                    "llmInvocationConfig": {"type": "null"},
                },
            },
            {  # an LLM function: models with llmConfig.uris
                "required": ["functionType", "models"],
                "properties": {
                    "functionType": {"const": FunctionType.LLM.value},
                    "models": {"type": "array", "minItems": 1, "items": LLM_MODEL},
                },
            },
        ]
    },
}
QUERY: dict[str, dict[str, Any]] = {
    "tail": {"minimum": 0},
    # an empty value is no filter, as if the parameter were absent
    "visibility": {"items": {"enum": ["authorized", "private", "public", ""]}},
    "artifactType": {"items": {"enum": list(ARTIFACT_TYPES)}},
}


def _strings(schema: Any) -> None:
    """NUL-free strings and keys throughout a request schema (in place)."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and not {"pattern", "enum", "format"} & schema.keys():
            schema["pattern"] = NO_NUL
        for field, value in schema.get("properties", {}).items():
            if value == {}:  # `Any` on the wire: any JSON value, NUL-free as the rest
                schema["properties"][field] = JSON_VALUE
        if schema.get("type") == "object" or "properties" in schema:
            schema.setdefault("propertyNames", {"pattern": NO_NUL})  # unknown keys are read too
            extra = schema.get("additionalProperties")
            if extra is None or extra is True or extra == {}:
                schema["additionalProperties"] = JSON_VALUE
        for key, value in schema.items():
            if value == {} and key in ("items", "additionalProperties"):
                schema[key] = JSON_VALUE
            else:
                _strings(value)
    elif isinstance(schema, list):
        for item in schema:
            _strings(item)


def _booleans(schema: Any) -> None:
    """Every boolean field of a request schema as the decoder reads it (in place)."""
    if isinstance(schema, dict):
        for field, value in schema.get("properties", {}).items():
            if value == {"type": "boolean"}:
                schema["properties"][field] = LENIENT_BOOLEAN
            elif isinstance(value, dict) and {"type": "boolean"} in value.get("oneOf", ()):
                value["oneOf"] = [b for b in value["oneOf"] if b != {"type": "boolean"}]
                value["oneOf"].append(LENIENT_BOOLEAN)
        for value in schema.values():
            _booleans(value)
    elif isinstance(schema, list):
        for item in schema:
            _booleans(item)


def _refs(schema: Any, components: dict[str, Any], seen: set[str]) -> set[str]:
    """The component schemas `schema` refers to, directly or through others."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen and name in components:
                seen.add(name)
                _refs(components[name], components, seen)
        for value in schema.values():
            _refs(value, components, seen)
    elif isinstance(schema, list):
        for item in schema:
            _refs(item, components, seen)
    return seen


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional field's schema (`oneOf: [T, null]`), or itself."""
    for branch in schema.get("oneOf", ()):
        if isinstance(branch, dict) and branch.get("type") != "null":
            found: dict[str, Any] = branch
            return found
    return schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without its null branch (`oneOf: [T, U, null]`)."""
    branches = [b for b in schema.get("oneOf", ()) if b.get("type") != "null"]
    if "oneOf" not in schema or len(branches) == len(schema["oneOf"]):
        return schema
    if len(branches) == 1:
        only: dict[str, Any] = branches[0]
        return only
    return {**schema, "oneOf": branches}


def _fields(components: dict[str, Any]) -> None:
    for name, (required, bounds) in FIELDS.items():
        schema = components.get(name)
        if schema is None:
            continue
        schema["required"] = sorted({*schema.get("required", ()), *required})
        props = schema.setdefault("properties", {})
        for field in required:  # required means present and not null
            if field in props:
                props[field] = _not_null(props[field])
        for field, extra in bounds.items():
            if field in props:
                _merge(_string_branch(props[field]), extra)
    create = components.get("CreateFunctionRequest", {}).get("properties", {})
    for field in ("helmChart", "helmChartServiceName"):  # Helm needs Kubernetes: always a 400
        if field in create:
            create[field] = {"not": {}, "description": "not accepted: Helm charts need Kubernetes"}


def _parameters(paths: dict[str, Any]) -> None:
    for item in paths.values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", ()):
                schema = param.get("schema", {})
                if param["in"] == "path" and param["name"].endswith("_id"):
                    param["schema"] = {"type": "string", **UUID_PATH}
                elif param["in"] == "query" and param["name"] in QUERY:
                    _merge(_string_branch(schema), QUERY[param["name"]])
                    if param["name"] == "visibility":
                        param["allowEmptyValue"] = True  # `?visibility=` is no filter


def state_constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the server's constraints stated (idempotent)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["JsonValue"] = JSON_VALUE_SCHEMA
    _fields(components)
    _parameters(schema.get("paths", {}))
    requests: set[str] = set()
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                _strings(operation.get("parameters", []))
                _strings(operation.get("requestBody", {}))
                _refs(operation.get("requestBody", {}), components, requests)
    for name in requests:  # what clients send; answers may echo what they sent, NULs included
        _strings(components[name])
        _booleans(components[name])
    for name, whole in WHOLE.items():  # after _strings: a branch constrains, it does not close
        if name in components:
            components[name].update(whole)
    return schema
