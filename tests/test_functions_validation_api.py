"""Every request rule of F1/F2 and F8/F9 (spec §2.1.1, §2.1.5), valid and invalid, table-driven.

Each invalid case must be a 400 problem+json whose detail names the field; nothing is a 500.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from conftest import bearer
from function_support import BODY, PLAIN, add_version, body, create, problem, version_path
from litestar.testing import TestClient

from nvcf_lite.domain.function_fields import duration_seconds, format_duration, parse_duration

HEALTH = {
    "protocol": "HTTP",
    "uri": "/ready",
    "port": 8000,
    "timeout": "PT10S",
    "expectedStatusCode": 200,
}
LLM_MODEL = {"name": "llama", "llmConfig": {"uris": ["/v1/chat/completions"]}}
LLM = {"functionType": "LLM", "models": [LLM_MODEL]}


def health(**changes: Any) -> dict[str, Any]:
    out = {**HEALTH, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def ids(n: int, prefix: str = "nca") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


INVALID: list[tuple[str, dict[str, Any], str]] = [
    # name
    ("name missing", body(name=...), "'name'"),
    ("name null", body(name=None), "'name'"),
    ("name empty", body(name=""), "'name'"),
    ("name blank", body(name="   "), "'name'"),
    ("name leading dash", body(name="-echo"), "'name'"),
    ("name with space", body(name="my echo"), "'name'"),
    ("name with dot", body(name="echo.v1"), "'name'"),
    ("name too long", body(name="a" * 129), "'name' must be 1 - 128"),
    ("name not a string", body(name=5), "name"),
    # inferenceUrl / inferencePort
    ("inferenceUrl missing", body(inferenceUrl=...), "'inferenceUrl'"),
    ("inferenceUrl empty", body(inferenceUrl=""), "'inferenceUrl'"),
    ("inferenceUrl with space", body(inferenceUrl="/a b"), "'inferenceUrl'"),
    ("inferencePort zero", body(inferencePort=0), "'inferencePort'"),
    ("inferencePort negative", body(inferencePort=-1), "'inferencePort'"),
    ("inferencePort too big", body(inferencePort=65536), "'inferencePort'"),
    ("inferencePort float", body(inferencePort=8000.5), "inferencePort"),
    # health
    *[
        (f"health without {f}", body(health=health(**{f: ...})), f)
        for f in ("protocol", "uri", "port", "timeout", "expectedStatusCode")
    ],
    ("health protocol TCP", body(health=health(protocol="TCP")), "'health.protocol'"),
    ("health uri empty", body(health=health(uri="")), "'health.uri'"),
    ("health uri blank", body(health=health(uri="  ")), "'health.uri'"),
    ("health port zero", body(health=health(port=0)), "'health.port'"),
    ("health port negative", body(health=health(port=-5)), "'health.port'"),
    *[
        (f"health timeout {t!r}", body(health=health(timeout=t)), "'health.timeout'")
        for t in ("10s", "10", "PT", "P", "PT10", "P1DT", "PT-1S", "PT0S", "PT.5S", "1 minute")
    ],
    ("health status 99", body(health=health(expectedStatusCode=99)), "expectedStatusCode"),
    ("health status 600", body(health=health(expectedStatusCode=600)), "expectedStatusCode"),
    ("health not an object", body(health="PT10S"), "health"),
    ("healthUri empty", body(healthUri=""), "'healthUri'"),
    # containerImage / models / helmChart
    ("no artifact", body(containerImage=...), "'containerImage', 'models', or 'helmChart'"),
    ("empty models only", body(containerImage=..., models=[]), "'models', or 'helmChart'"),
    ("image blank", body(containerImage=" "), "'containerImage'"),
    (
        "image and helm",
        body(helmChart="ngc://chart", helmChartServiceName="svc"),
        "'containerImage' and 'helmChart'",
    ),
    (
        "helm and args",
        body(containerImage=..., helmChart="c", helmChartServiceName="s", containerArgs="-v"),
        "'containerArgs' and 'helmChart'",
    ),
    (
        "helm and env",
        body(
            containerImage=...,
            helmChart="c",
            helmChartServiceName="s",
            containerEnvironment=[{"key": "A", "value": "1"}],
        ),
        "'containerEnvironment' and 'helmChart'",
    ),
    ("helm without service", body(containerImage=..., helmChart="c"), "'helmChartServiceName'"),
    ("service without helm", body(helmChartServiceName="svc"), "'helmChartServiceName'"),
    (
        "helm chart: nvcf-lite has no Kubernetes",
        body(containerImage=..., helmChart="ngc://c", helmChartServiceName="svc"),
        "'helmChart' functions need Kubernetes",
    ),
    # containerEnvironment
    ("env missing value", body(containerEnvironment=[{"key": "A"}]), "value"),
    ("env missing key", body(containerEnvironment=[{"value": "1"}]), "key"),
    ("env value int", body(containerEnvironment=[{"key": "A", "value": 1}]), "value"),
    ("env key blank", body(containerEnvironment=[{"key": "", "value": "1"}]), "key"),
    ("env not a list", body(containerEnvironment={"A": "1"}), "containerEnvironment"),
    # models and resources
    (
        "model names repeat",
        body(models=[{"name": "m", "version": "1", "uri": "u"}] * 2),
        "duplicate model names",
    ),
    ("model without version", body(models=[{"name": "m", "uri": "u"}]), "'version' and 'uri'"),
    ("model without uri", body(models=[{"name": "m", "version": "1"}]), "'version' and 'uri'"),
    ("model without name", body(models=[{"version": "1", "uri": "u"}]), "name"),
    ("model name blank", body(models=[{"name": " ", "version": "1", "uri": "u"}]), "name"),
    ("resource without uri", body(resources=[{"name": "r", "version": "1"}]), "uri"),
    ("resource without version", body(resources=[{"name": "r", "uri": "u"}]), "version"),
    ("resource name blank", body(resources=[{"name": "", "version": "1", "uri": "u"}]), "name"),
    # enums
    ("apiBodyFormat unknown", body(apiBodyFormat="JSON"), "'apiBodyFormat'"),
    ("functionType unknown", body(functionType="SSE"), "'functionType'"),
    ("functionType not a string", body(functionType=1), "functionType"),
    # LLM
    ("LLM without models", body(functionType="LLM"), "'models'"),
    (
        "LLM model without llmConfig",
        body(functionType="LLM", models=[{"name": "m"}]),
        "'llmConfig'",
    ),
    (
        "LLM model without uris",
        body(functionType="LLM", models=[{"name": "m", "llmConfig": {"uris": []}}]),
        "'llmConfig.uris'",
    ),
    (
        "LLM routing method unknown",
        body(
            functionType="LLM",
            models=[{**LLM_MODEL, "llmConfig": {"uris": ["/v1"], "routingMethod": "x"}}],
        ),
        "routingMethod",
    ),
    (
        "LLM token rate limit malformed",
        body(
            functionType="LLM",
            models=[{**LLM_MODEL, "llmConfig": {"uris": ["/v1"], "tokenRateLimit": "1"}}],
        ),
        "tokenRateLimit",
    ),
    # description and tags
    ("description too long", body(description="d" * 257), "description"),
    ("too many tags", body(tags=ids(65, "t")), "'tags'"),
    ("tag too long", body(tags=["t" * 129]), "'tags'"),
    ("tag with space", body(tags=["a b"]), "'tags'"),
    ("tag empty", body(tags=[""]), "'tags'"),
    ("tag with slash", body(tags=["a/b"]), "'tags'"),
    ("tags not a list", body(tags="a,b"), "tags"),
    ("tag not a string", body(tags=[1]), "tags"),
    # secrets
    ("secret name empty", body(secrets=[{"name": "", "value": "v"}]), "'secrets[0].name'"),
    ("secret name too long", body(secrets=[{"name": "s" * 49, "value": "v"}]), "secrets[0].name"),
    ("secret name leading dot", body(secrets=[{"name": ".s", "value": "v"}]), "'secrets'"),
    ("secret name with space", body(secrets=[{"name": "a b", "value": "v"}]), "'secrets'"),
    ("secret value empty", body(secrets=[{"name": "s", "value": ""}]), "'secrets'"),
    ("secret value too long", body(secrets=[{"name": "s", "value": "v" * 32769}]), "'secrets'"),
    (
        "secret object too long",
        body(secrets=[{"name": "s", "value": {"k": "v" * 32763}}]),
        "'secrets'",
    ),
    ("secret value number", body(secrets=[{"name": "s", "value": 5}]), "value"),
    ("secret without value", body(secrets=[{"name": "s"}]), "value"),
    (
        "secret names repeat",
        body(secrets=[{"name": "s", "value": "a"}, {"name": "s", "value": "b"}]),
        "duplicate secret name 's'",
    ),
    # rateLimit
    ("rate limit empty", body(rateLimit={}), "'rateLimit'"),
    ("rate only sync", body(rateLimit={"syncCheck": True}), "'rateLimit'"),
    *[
        (f"rate {r!r}", body(rateLimit={"rateLimit": r}), "'rateLimit.rateLimit'")
        for r in ("100", "100-X", "0-S", "01-S", "1-S,2-S", "100-s", "-1-S", "1-S,", "1-S 2-M")
    ],
    ("per-user rate bad", body(rateLimit={"perUserRate": "x"}), "'rateLimit.perUserRate'"),
    (
        "per-nca rate bad",
        body(rateLimit={"perNcaIdRate": {"a": "5"}}),
        "'rateLimit.perNcaIdRate.a'",
    ),
    (
        "exempted without rateLimit",
        body(rateLimit={"perUserRate": "5-S", "exemptedNcaIds": ["a"]}),
        "'rateLimit.exemptedNcaIds'",
    ),
    (
        "exempted and per-nca",
        body(rateLimit={"rateLimit": "5-S", "exemptedNcaIds": ["a"], "perNcaIdRate": {"a": "1-S"}}),
        "NCA ID 'a' cannot be in both",
    ),
    (
        "33 exempted",
        body(rateLimit={"rateLimit": "5-S", "exemptedNcaIds": ids(33)}),
        "exemptedNcaIds",
    ),
    (
        "33 per-nca",
        body(rateLimit={"perNcaIdRate": dict.fromkeys(ids(33), "1-S")}),
        "perNcaIdRate",
    ),
    ("rate not a string", body(rateLimit={"rateLimit": 5}), "rateLimit"),
    # telemetries
    ("telemetries empty", body(telemetries={}), "Telemetry object must have at least one UUID"),
    ("telemetry not a uuid", body(telemetries={"logsTelemetryId": "x"}), "logsTelemetryId"),
    ("telemetry not a uuid 2", body(telemetries={"tracesTelemetryId": "1"}), "tracesTelemetryId"),
    # llmInvocationConfig
    (
        "llm config on DEFAULT",
        body(llmInvocationConfig={"priority": {"defaultPriority": 1}}),
        "'llmInvocationConfig'",
    ),
    (
        "priority negative",
        body(**LLM, llmInvocationConfig={"priority": {"defaultPriority": -1}}),
        "defaultPriority",
    ),
    (
        "priority too big",
        body(**LLM, llmInvocationConfig={"priority": {"defaultPriority": 4294967296}}),
        "defaultPriority",
    ),
    (
        "priority float",
        body(**LLM, llmInvocationConfig={"priority": {"defaultPriority": 1.5}}),
        "defaultPriority",
    ),
    (
        "per-account without default",
        body(**LLM, llmInvocationConfig={"priority": {"perAccountPriority": {"a": 1}}}),
        "'defaultPriority' is required",
    ),
    (
        "per-account out of range",
        body(
            **LLM,
            llmInvocationConfig={
                "priority": {"defaultPriority": 1, "perAccountPriority": {"a": -1}}
            },
        ),
        "perAccountPriority.a",
    ),
    (
        "65 per-account",
        body(
            **LLM,
            llmInvocationConfig={
                "priority": {"defaultPriority": 1, "perAccountPriority": dict.fromkeys(ids(65), 1)}
            },
        ),
        "perAccountPriority",
    ),
]


@pytest.mark.parametrize(("case", "payload", "names"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_create_is_400_naming_the_field(
    client: TestClient[Any], case: str, payload: dict[str, Any], names: str
) -> None:
    r = client.post(f"{PLAIN}/functions", json=payload, headers=bearer())
    doc = problem(r, 400)
    assert names in doc["detail"], doc["detail"]
    assert "s3cr3t" not in r.text
    listed = client.get(f"{PLAIN}/functions", headers=bearer()).json()["functions"]
    assert listed == []  # nothing half-created


VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("one-letter name", body(name="A"), {"name": "A"}),
    ("128-char name", body(name="a" * 128), {"name": "a" * 128}),
    ("name with - and _", body(name="9a-b_C"), {"name": "9a-b_C"}),
    ("inferenceUrl gets a slash", body(inferenceUrl="echo"), {"inferenceUrl": "/echo"}),
    (
        "port 1",
        body(inferencePort=1),
        {"inferencePort": 1, "health": health(uri="/v2/health/ready", port=1)},
    ),
    ("port 65535", body(inferencePort=65535), {"inferencePort": 65535}),
    # numbers in strings are read as numbers, as NVCF's Jackson does (scalar coercion)
    ("port as a string", body(inferencePort="8001"), {"inferencePort": 8001}),
    ("protocol lower case", body(health=health(protocol="http")), {"health": HEALTH}),
    ("protocol grpc", body(health=health(protocol="GRPC")), {"health": health(protocol="gRPC")}),
    ("timeout PT0.5S", body(health=health(timeout="PT0.5S")), {"health": health(timeout="PT0.5S")}),
    ("timeout PT1M", body(health=health(timeout="PT1M")), {"health": health(timeout="PT1M")}),
    ("timeout lower case", body(health=health(timeout="pt5s")), {"health": health(timeout="PT5S")}),
    ("timeout in days", body(health=health(timeout="P1D")), {"health": health(timeout="PT24H")}),
    ("timeout 90s", body(health=health(timeout="PT90S")), {"health": health(timeout="PT1M30S")}),
    ("status 100", body(health=health(expectedStatusCode=100)), {}),
    ("status 599", body(health=health(expectedStatusCode=599)), {}),
    ("health wins over healthUri", body(health=HEALTH, healthUri="/x"), {"healthUri": "/ready"}),
    ("healthUri alone", body(healthUri="/hz"), {"healthUri": "/hz"}),
    (
        "models with an image",
        body(models=[{"name": "m", "version": "1", "uri": "u"}]),
        {"containerImage": BODY["containerImage"]},
    ),
    (
        "models alone",
        body(containerImage=..., models=[{"name": "m", "version": "1", "uri": "u"}]),
        {"models": [{"name": "m", "version": "1", "uri": "u"}]},
    ),
    (
        "resources dedupe",
        body(resources=[{"name": "r", "version": "1", "uri": "u"}] * 2),
        {"resources": [{"name": "r", "version": "1", "uri": "u"}]},
    ),
    (
        "enum cases",
        body(apiBodyFormat="Predict_V2", functionType="Default"),
        {"apiBodyFormat": "PREDICT_V2", "functionType": "DEFAULT"},
    ),
    (
        "LLM function",
        body(
            functionType="LLM",
            models=[
                {
                    "name": "m",
                    "llmConfig": {
                        "uris": ["/v1"],
                        "routingMethod": "ROUND_ROBIN",
                        "tokenRateLimit": "10-W, 5-S",
                    },
                }
            ],
        ),
        {
            "models": [
                {
                    "name": "m",
                    "llmConfig": {
                        "uris": ["/v1"],
                        "routingMethod": "round-robin",
                        "tokenRateLimit": "10-W, 5-S",
                    },
                }
            ]
        },
    ),
    (
        "LLM priorities",
        body(
            **LLM,
            llmInvocationConfig={
                "priority": {"defaultPriority": 4294967295, "perAccountPriority": {"a": 0}}
            },
        ),
        {
            "llmInvocationConfig": {
                "priority": {"defaultPriority": 4294967295, "perAccountPriority": {"a": 0}}
            }
        },
    ),
    ("256-char description", body(description="d" * 256), {"description": "d" * 256}),
    ("blank description", body(description=" "), {"description": "echo"}),
    ("64 tags with repeats", body(tags=[*ids(64, "t"), "t-0"]), {"tags": ids(64, "t")}),
    ("tag alphabet", body(tags=["a-Z_0:9=x", "t" * 128]), {"tags": ["a-Z_0:9=x", "t" * 128]}),
    ("no tags", body(tags=[]), {}),
    (
        "secret limits",
        body(secrets=[{"name": "s" * 48, "value": "v" * 32768}, {"name": "a.b-c_D", "value": {}}]),
        {"secrets": ["s" * 48, "a.b-c_D"]},
    ),
    (
        "rate and exempt",
        body(rateLimit={"rateLimit": "100-S, 1000-D", "exemptedNcaIds": ids(32)}),
        {"rateLimit": {"rateLimit": "100-S, 1000-D", "exemptedNcaIds": ids(32)}},
    ),
    (
        "per-nca only",
        body(rateLimit={"perNcaIdRate": {"a": "1-M,2-H"}}),
        {"rateLimit": {"perNcaIdRate": {"a": "1-M,2-H"}}},
    ),
    (
        "per-user only",
        body(rateLimit={"perUserRate": "3-D", "syncCheck": False}),
        {"rateLimit": {"perUserRate": "3-D", "syncCheck": False}},
    ),
    ("unknown fields ignored", body(utilsContainerImage="GO", preferredOrder=[1], x=None), {}),
]


@pytest.mark.parametrize(("case", "payload", "expected"), VALID, ids=[c[0] for c in VALID])
def test_valid_create(
    client: TestClient[Any], case: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    fn = create(client, payload)
    for key, value in expected.items():
        assert fn[key] == value, key
    if "tags" not in expected:
        assert "tags" not in fn


WRONG_TYPES: dict[str, list[Any]] = {
    "name": [1, 1.5, True, [], {}],
    "inferenceUrl": [1, True, [], {}, None],
    "inferencePort": ["port", 1.5, True, [], {}],
    "health": ["x", 1, [], True],
    "healthUri": [1, [], {}],
    "containerImage": [1, [], {}, False],
    "containerArgs": [1, [], {}],
    "containerEnvironment": ["A=1", 1, {}, [1], [[]]],
    "models": ["m", 1, {}, ["m"]],
    "resources": ["r", 1, {}, [1]],
    "helmChart": [1, [], {}],
    "helmChartServiceName": [1, []],
    "apiBodyFormat": [1, [], {}],
    "functionType": [1, [], {}],
    "description": [1, [], {}],
    "tags": ["a", 1, {}, [None], [[]]],
    "secrets": ["s", 1, {}, ["s"], [{"name": 1, "value": "v"}]],
    "rateLimit": ["5-S", 1, [], {"exemptedNcaIds": "a", "rateLimit": "1-S"}],
    "llmInvocationConfig": ["x", 1, [], {"priority": 1}],
    "telemetries": ["x", 1, [], {"logsTelemetryId": 1}],
}


@pytest.mark.parametrize("field", list(WRONG_TYPES))
def test_wrong_json_types_are_400_never_500(client: TestClient[Any], field: str) -> None:
    for value in WRONG_TYPES[field]:
        r = client.post(f"{PLAIN}/functions", json=body(**{field: value}), headers=bearer())
        problem(r, 400)


@pytest.mark.parametrize("payload", [[], "x", 1, None, True, [BODY]])
def test_a_body_that_is_not_an_object_is_400(client: TestClient[Any], payload: Any) -> None:
    problem(client.post(f"{PLAIN}/functions", json=payload, headers=bearer()), 400)


# -- F2 rules -----------------------------------------------------------------------------------


def test_new_versions_are_validated_too(client: TestClient[Any]) -> None:
    fn = create(client)
    r = client.post(
        f"{PLAIN}/functions/{fn['id']}/versions", json=body(name="-x"), headers=bearer()
    )
    assert "'name'" in problem(r, 400)["detail"]


def test_versions_of_an_llm_function_stay_llm(client: TestClient[Any]) -> None:
    llm = create(client, body(**LLM))
    r = client.post(f"{PLAIN}/functions/{llm['id']}/versions", json=BODY, headers=bearer())
    assert "'functionType' LLM" in problem(r, 400)["detail"]
    assert add_version(client, llm["id"], body(**LLM))["functionType"] == "LLM"
    plain = create(client)
    r = client.post(f"{PLAIN}/functions/{plain['id']}/versions", json=body(**LLM), headers=bearer())
    assert "non-LLM" in problem(r, 400)["detail"]


# -- F8/F9 rules --------------------------------------------------------------------------------

UPDATE_INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("tags invalid", {"tags": ["a b"]}, "'tags'"),
    ("too many tags", {"tags": ids(65)}, "'tags'"),
    ("tags wrong type", {"tags": "a"}, "tags"),
    ("rate invalid", {"rateLimit": {"rateLimit": "5"}}, "'rateLimit.rateLimit'"),
    ("rate empty", {"rateLimit": {}}, "'rateLimit'"),
    ("description too long", {"description": "d" * 257}, "description"),
    (
        "model updates on DEFAULT",
        {"modelUpdates": [{"modelName": "m", "llmConfig": {"routingMethod": "random"}}]},
        "'modelUpdates'",
    ),
    (
        "llm config on DEFAULT",
        {"llmInvocationConfig": {"priority": {"defaultPriority": 1}}},
        "'llmInvocationConfig'",
    ),
]


@pytest.mark.parametrize(
    ("case", "payload", "names"), UPDATE_INVALID, ids=[c[0] for c in UPDATE_INVALID]
)
@pytest.mark.parametrize("alias", ["", "/metadata"])
def test_invalid_update_is_400(
    client: TestClient[Any], case: str, payload: dict[str, Any], names: str, alias: str
) -> None:
    fn = create(client, body(tags=["keep"]))
    path = f"{PLAIN}{alias}/functions/{fn['id']}/versions/{fn['versionId']}"
    doc = problem(client.put(path, json=payload, headers=bearer()), 400)
    assert names in doc["detail"], doc["detail"]
    assert client.get(version_path(fn), headers=bearer()).json()["function"] == fn


LLM_UPDATE_INVALID: list[tuple[dict[str, Any], str]] = [
    ({"modelUpdates": [{"modelName": "llama"}]}, "at least one of 'tokenRateLimit'"),
    ({"modelUpdates": [{"modelName": "llama", "llmConfig": {}}]}, "at least one of"),
    (
        {"modelUpdates": [{"modelName": "other", "llmConfig": {"routingMethod": "random"}}]},
        "'other'",
    ),
    (
        {"modelUpdates": [{"modelName": "llama", "llmConfig": {"routingMethod": "random"}}] * 2},
        "duplicate model names are not allowed in 'modelUpdates'",
    ),
    (
        {"modelUpdates": [{"modelName": "llama", "llmConfig": {"routingMethod": "fastest"}}]},
        "routingMethod",
    ),
    (
        {"modelUpdates": [{"modelName": "llama", "llmConfig": {"tokenRateLimit": "1-X"}}]},
        "tokenRateLimit",
    ),
]


@pytest.mark.parametrize(("payload", "names"), LLM_UPDATE_INVALID)
def test_invalid_llm_update_is_400(
    client: TestClient[Any], payload: dict[str, Any], names: str
) -> None:
    fn = create(client, body(**LLM))
    doc = problem(client.put(version_path(fn), json=payload, headers=bearer()), 400)
    assert names in doc["detail"], doc["detail"]


def test_llm_model_updates_and_priorities(client: TestClient[Any]) -> None:
    fn = create(client, body(**LLM))
    update = {
        "modelUpdates": [
            {
                "modelName": "llama",
                "llmConfig": {"routingMethod": "Power_Of_Two", "outputTokenRateLimit": "9-M"},
            }
        ],
        "llmInvocationConfig": {"priority": {"defaultPriority": 3}},
    }
    got = client.put(version_path(fn), json=update, headers=bearer()).json()["function"]
    assert got["models"] == [
        {
            "name": "llama",
            "llmConfig": {
                "uris": ["/v1/chat/completions"],
                "routingMethod": "power-of-two",
                "outputTokenRateLimit": "9-M",
            },
        }
    ]
    assert got["llmInvocationConfig"] == {"priority": {"defaultPriority": 3}}


# -- durations (health.timeout) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("PT10S", "10", "PT10S"),
        ("PT0.5S", "0.5", "PT0.5S"),
        ("PT1M", "60", "PT1M"),
        ("PT1H30M", "5400", "PT1H30M"),
        ("P1DT0.25S", "86400.25", "PT24H0.25S"),
        ("PT1,5S", "1.5", "PT1.5S"),
        ("pt0.000000001s", "0.000000001", "PT0.000000001S"),
    ],
)
def test_iso_durations(text: str, seconds: str, canonical: str) -> None:
    parsed = parse_duration(text)
    assert parsed == Decimal(seconds)
    assert format_duration(parsed) == canonical
    assert duration_seconds(canonical) == float(seconds)


def test_not_durations() -> None:
    for text in ("", "P", "PT", "PT1", "1S", "PT1.S", "PT-1S", "P1W", "PT1S1M", "PT1H "):
        assert parse_duration(text) is None, text
