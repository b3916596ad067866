"""OTLP/HTTP with the JSON encoding (OTLP 1.x, `application/json`): the bodies nvcf-lite ships
to a telemetry endpoint, and how it authenticates, per provider.

No protobuf and no OpenTelemetry SDK: the JSON mapping of the OTLP protobufs is part of the
OTLP spec (lowerCamelCase field names; 64-bit integers as decimal strings; enums as numbers).
Only what nvcf-lite honestly has is encoded: container log lines as log records, and the
function's series of `/metrics` (domain/metrics.py) as OTLP sums, gauges and histograms.

Which providers nvcf-lite ships to is decided here (`auth_headers`), from how NVCF's own
collector exports (OSS `byoo-otel-collector/internal/otelconfig/render.go`): `OTEL_COLLECTOR` is
OTLP/HTTP to `<endpoint>/v1/<signal>` with `Authorization: Bearer <secret>`; `GRAFANA_CLOUD` is
OTLP/HTTP with basic auth `instanceId:apiKey`. The other providers take their vendors'
own exporters (Datadog API, Splunk HEC, Azure Monitor, Prometheus remote write with mTLS), which
nvcf-lite does not have: `Unsupported` says why. Like NVCF, the `protocol` field does not change
the exporter: both are sent OTLP/HTTP.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from nvcf_lite import __version__
from nvcf_lite.domain.metrics import Counter, Gauge, Histogram
from nvcf_lite.models import Telemetry, TelemetryProvider

LOGS, METRICS = "logs", "metrics"
SCOPE = {"name": "nvcf-lite", "version": __version__}
CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
# Labels of the /metrics series that name the version; the resource carries them instead.
_VERSION_LABELS = ("function_id", "version_id")

Attributes = list[dict[str, Any]]


class Unsupported(Exception):
    """nvcf-lite cannot ship to this telemetry; the message says why (never the secret)."""


class Resource(msgspec.Struct, frozen=True):
    """What one batch of telemetry is about: a version, and for logs one of its instances."""

    nca_id: str
    function_id: str
    version_id: str
    function_name: str
    instance_id: str | None = None


def attributes(resource: Resource) -> Attributes:
    """OpenTelemetry's service.name, nvcf-lite's `nvcf.*` names, and the names NVCF's collector
    adds to what it ships (function_id, function_version_id, instance_id, nca_id)."""
    pairs = {
        "service.name": resource.function_name,
        "nvcf.nca.id": resource.nca_id,
        "nvcf.function.id": resource.function_id,
        "nvcf.function.version.id": resource.version_id,
        "nca_id": resource.nca_id,
        "function_id": resource.function_id,
        "function_version_id": resource.version_id,
    }
    if resource.instance_id is not None:
        pairs["nvcf.instance.id"] = resource.instance_id
        pairs["instance_id"] = resource.instance_id
    return _attrs(pairs)


def _attrs(pairs: Mapping[str, str]) -> Attributes:
    return [{"key": k, "value": {"stringValue": v}} for k, v in pairs.items()]


def url(telemetry: Telemetry, signal: str) -> str:
    """`<endpoint>/v1/<signal>` (an endpoint without a scheme is https, as collectors assume)."""
    base = telemetry.endpoint.rstrip("/")
    if "://" not in base:
        base = "https://" + base
    return f"{base}/v1/{signal}"


def auth_headers(telemetry: Telemetry, secret: str | dict[str, Any] | None) -> dict[str, str]:
    """The request headers for a telemetry, or Unsupported."""
    headers = {"content-type": "application/json"}
    provider = telemetry.provider
    if provider is TelemetryProvider.OTEL_COLLECTOR:
        if not isinstance(secret, str):
            raise Unsupported("an OTEL_COLLECTOR telemetry's secret must be a string (its token)")
        return {**headers, "authorization": f"Bearer {secret}"}
    if provider is TelemetryProvider.GRAFANA_CLOUD:
        if not isinstance(secret, dict) or not {"instanceId", "apiKey"} <= set(secret):
            raise Unsupported(
                "a GRAFANA_CLOUD telemetry's secret must be {instanceId, apiKey} (as ngcsdk sends)"
            )
        pair = f"{secret['instanceId']}:{secret['apiKey']}".encode()
        return {**headers, "authorization": "Basic " + base64.b64encode(pair).decode()}
    raise Unsupported(
        f"nvcf-lite ships OTLP/HTTP to OTEL_COLLECTOR and GRAFANA_CLOUD telemetries only;"
        f" {provider.value} needs its vendor's exporter"
    )


# -- logs --------------------------------------------------------------------------------------


def log_record(text: str, time_ns: int) -> dict[str, Any]:
    """One container output line. The time is when nvcf-lite read it (Docker's stream does not
    carry one); the severity is unknown (stdout and stderr arrive merged)."""
    stamp = str(time_ns)
    return {"timeUnixNano": stamp, "observedTimeUnixNano": stamp, "body": {"stringValue": text}}


def logs_body(records: Iterable[tuple[Resource, dict[str, Any]]]) -> bytes:
    """ExportLogsServiceRequest: one resourceLogs per resource, records in order."""
    grouped: dict[Resource, list[dict[str, Any]]] = {}
    for resource, record in records:
        grouped.setdefault(resource, []).append(record)
    return msgspec.json.encode(
        {
            "resourceLogs": [
                {
                    "resource": {"attributes": attributes(resource)},
                    "scopeLogs": [{"scope": SCOPE, "logRecords": recs}],
                }
                for resource, recs in grouped.items()
            ]
        }
    )


# -- metrics -----------------------------------------------------------------------------------


def resource_metrics(
    resource: Resource, families: Iterable[object], start_ns: int, now_ns: int
) -> dict[str, Any] | None:
    """The series of `families` that belong to the resource's version, as one ResourceMetrics
    (None when there are none). Counters are cumulative sums since `start_ns`."""
    metrics = []
    for family in families:
        metric = _metric(family, resource.version_id, str(start_ns), str(now_ns))
        if metric is not None:
            metrics.append(metric)
    if not metrics:
        return None
    return {
        "resource": {"attributes": attributes(resource)},
        "scopeMetrics": [{"scope": SCOPE, "metrics": metrics}],
    }


def metrics_body(items: Iterable[dict[str, Any]]) -> bytes:
    """ExportMetricsServiceRequest from ResourceMetrics."""
    return msgspec.json.encode({"resourceMetrics": list(items)})


def _metric(family: object, version_id: str, start: str, now: str) -> dict[str, Any] | None:
    if not isinstance(family, Counter | Gauge | Histogram):
        return None
    names = family.label_names
    if "version_id" not in names:
        return None  # a host-wide series: not about one function
    at = names.index("version_id")
    head: dict[str, Any] = {"name": family.name, "description": family.help}
    if family.name.endswith("_seconds"):
        head["unit"] = "s"
    if isinstance(family, Histogram):
        points = [
            {
                "attributes": _point_attrs(names, labels),
                "startTimeUnixNano": start,
                "timeUnixNano": now,
                "count": str(sum(counts)),
                "sum": total[0],
                "bucketCounts": [str(c) for c in counts],
                "explicitBounds": list(family.bounds),
            }
            for labels, (counts, total) in sorted(family.series.items())
            if labels[at] == version_id
        ]
        if not points:
            return None
        return {**head, "histogram": {"aggregationTemporality": CUMULATIVE, "dataPoints": points}}
    values = [
        {"attributes": _point_attrs(names, labels), "timeUnixNano": now, "asDouble": value}
        for labels, value in sorted(family.values.items())
        if labels[at] == version_id
    ]
    if not values:
        return None
    if isinstance(family, Gauge):
        return {**head, "gauge": {"dataPoints": values}}
    for point in values:
        point["startTimeUnixNano"] = start
    sums = {"aggregationTemporality": CUMULATIVE, "isMonotonic": True, "dataPoints": values}
    return {**head, "sum": sums}


def _point_attrs(names: tuple[str, ...], labels: tuple[str, ...]) -> Attributes:
    return _attrs({n: v for n, v in zip(names, labels, strict=True) if n not in _VERSION_LABELS})
