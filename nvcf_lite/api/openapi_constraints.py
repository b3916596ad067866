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

from typing import Any

from nvcf_lite.domain.asset_rules import _MEDIA_TYPE
from nvcf_lite.domain.function_rules import MAX_TAG, MAX_TAGS, NAME_RE, TAG_RE
from nvcf_lite.models import ARTIFACT_TYPES, ApiBodyFormat, FunctionType

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
# wire struct -> (required fields, {field: constraints}); each mirrors a rule in the domain
FIELDS: dict[str, tuple[tuple[str, ...], dict[str, dict[str, Any]]]] = {
    "CreateFunctionRequest": (
        ("name", "inferenceUrl"),
        {
            "name": {"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 128},
            "inferenceUrl": {"pattern": "^\\S+$"},
            "containerImage": {"pattern": "^[a-zA-Z0-9\\[\\]:._/@-]+$"},
            "description": {"maxLength": 256},
            "functionType": {"enum": [t.value for t in FunctionType]},
            "inferencePort": PORT,
            "healthUri": {"pattern": "^\\S+$"},
            "tags": {
                "maxItems": MAX_TAGS,
                "items": {"pattern": f"^{TAG_RE.pattern}$", "maxLength": MAX_TAG},
            },
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
    "RegistrySecretWire": (
        ("name", "value"),
        {"name": {"pattern": "^\\S+$"}, "value": {"minLength": 1}},
    ),
}
# Cross-field rules: a field given only with another's value.
DEPENDENT: dict[str, dict[str, Any]] = {
    "CreateFunctionRequest": {
        "llmInvocationConfig": {
            "required": ["functionType"],
            "properties": {"functionType": {"const": FunctionType.LLM.value}},
        }
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


def _fields(components: dict[str, Any]) -> None:
    for name, (required, bounds) in FIELDS.items():
        schema = components.get(name)
        if schema is None:
            continue
        schema["required"] = sorted({*schema.get("required", ()), *required})
        props = schema.setdefault("properties", {})
        for field in required:  # required means present and not null
            if field in props:
                props[field] = _string_branch(props[field])
        for field, extra in bounds.items():
            if field in props:
                _merge(_string_branch(props[field]), extra)
    for name, dependent in DEPENDENT.items():
        if name in components:
            components[name]["dependentSchemas"] = dependent
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
    return schema
