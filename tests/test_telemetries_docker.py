"""End to end on Docker (spec §2.8, §2.1.1 `telemetries`): a version registered with a logs and
a metrics telemetry pointing at a local OTLP/HTTP receiver is deployed and invoked through the
public API; the function's own output lines arrive as OTLP log records with the function's
resource attributes, and its invocation count as an OTLP sum, each with the bearer token."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, wait_for
from invocation_support import deploy, docker_config, function_body, wait_active
from litestar.testing import TestClient
from telemetry_support import SECRET, OtlpReceiver, attributes, create_telemetry, serve_receiver

from nvcf_lite.app import docker_runtime

pytestmark = pytest.mark.docker

SHIP_FAST = {
    "NVCF_LITE_TELEMETRY__SCAN_INTERVAL_S": "0.2",
    "NVCF_LITE_TELEMETRY__METRICS_INTERVAL_S": "0.5",
    "NVCF_LITE_TELEMETRY__FLUSH_INTERVAL_S": "0.1",
}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    yield from serve_receiver(OtlpReceiver())


@pytest.fixture
def api(app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str) -> TestClient[Any]:
    return app_factory(docker_config(tmp_path, ns, **SHIP_FAST), runtime_factory=docker_runtime)


def invocation_points(receiver: OtlpReceiver, version_id: str) -> list[dict[str, Any]]:
    return [
        point
        for attrs, metric in receiver.metrics()
        if metric["name"] == "nvcf_lite_invocations_total"
        and attrs["nvcf.function.version.id"] == version_id
        for point in metric["sum"]["dataPoints"]
    ]


def test_logs_and_metrics_reach_the_otlp_receiver(
    api: TestClient[Any], receiver: OtlpReceiver
) -> None:
    logs = create_telemetry(api, endpoint=receiver.url, types=["LOGS"])
    metrics = create_telemetry(api, endpoint=receiver.url, types=["METRICS"])
    ids = {"logsTelemetryId": logs["telemetryId"], "metricsTelemetryId": metrics["telemetryId"]}
    registration = {**function_body("shipped"), "telemetries": ids}
    r = api.post("/v2/nvcf/functions", json=registration, headers=bearer())
    assert r.status_code == 200, r.text
    fid, vid = r.json()["function"]["id"], r.json()["function"]["versionId"]
    deploy(api, fid, vid)
    wait_active(api, fid, vid)
    details = api.get(f"/v2/nvcf/functions/{fid}/versions/{vid}", headers=bearer()).json()
    (instance,) = details["function"]["activeInstances"]
    marker = f"telemetry-{uuid.uuid4().hex[:8]}"
    r = api.post(f"/v2/nvcf/pexec/functions/{fid}", json={"log": marker}, headers=bearer())
    assert r.status_code == 200, r.text

    def record_of(text: str) -> Any:
        found = [(a, r) for a, r in receiver.log_records() if text in r["body"]["stringValue"]]
        return found[0] if found else None

    attrs, record = wait_for(lambda: record_of(marker), what="the function's log line")
    assert record["body"]["stringValue"].startswith("function_server: ")
    assert attrs["service.name"] == "shipped"
    assert (attrs["nvcf.function.id"], attrs["nvcf.function.version.id"]) == (fid, vid)
    assert attrs["nvcf.instance.id"] == instance["instanceId"]
    # the container was followed from its first line: the server's start is there too
    assert record_of("function_server: listening on :8000") is not None
    points = wait_for(
        lambda: [p for p in invocation_points(receiver, vid) if p["asDouble"] >= 1],
        what="the invocation count as an OTLP metric",
    )
    assert attributes(points[-1]) == {"status": "200"}
    assert receiver.exports and receiver.refused == []
    assert {e.headers["authorization"] for e in receiver.exports} == {f"Bearer {SECRET}"}
    assert {e.path for e in receiver.exports} == {"/v1/logs", "/v1/metrics"}
    text = api.get("/metrics").text
    assert f'nvcf_lite_telemetry_exported_total{{telemetry_id="{logs["telemetryId"]}"' in text
