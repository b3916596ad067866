"""The telemetry shipper (workers/telemetry_shipping.py, spec §2.8) against a local OTLP/HTTP
receiver: log lines and metrics arrive with their resource and the telemetry's auth header;
retries, refusals, a full buffer and unsupported providers are counted and logged, never
silent; a version no longer shipped stops being followed; close() ships what is buffered."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from telemetry_support import SECRET, OtlpReceiver, attributes, serve_receiver

from nvcf_lite.config import TelemetryConfig
from nvcf_lite.domain import otlp
from nvcf_lite.domain.metrics import Gauge, Metrics
from nvcf_lite.models import Telemetry, TelemetryProtocol, TelemetryProvider, TelemetryType
from nvcf_lite.workers.otlp_export import Exporter
from nvcf_lite.workers.telemetry_shipping import ShippedVersion, TelemetryShipping

NCA, FID, VID, INSTANCE = "nca-1", "f-1", "v-1", "i-1"
FAST = TelemetryConfig(
    scan_interval_s=0.05,
    metrics_interval_s=0.1,
    flush_interval_s=0.02,
    retry_backoff_initial_s=0.01,
    retry_backoff_max_s=0.02,
    retry_attempts=3,
    export_timeout_s=2.0,
)


def telemetry(url: str, provider: str = "OTEL_COLLECTOR", tid: str = "t-1") -> Telemetry:
    return Telemetry(
        telemetry_id=tid,
        name="otel",
        endpoint=url,
        protocol=TelemetryProtocol.HTTP,
        provider=TelemetryProvider(provider),
        types=(TelemetryType.LOGS, TelemetryType.METRICS),
        created_at="2026-01-01T00:00:00.000Z",
    )


class FakeLogs:
    """The container-logs seam: a queue of (instance id, line) per version, followed until
    cancelled; `since` is recorded so the tests see what the shipper asked for."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}
        self.followed: list[tuple[str, float]] = []

    def say(self, version_id: str, text: str, instance_id: str = INSTANCE) -> None:
        self.queues.setdefault(version_id, asyncio.Queue()).put_nowait((instance_id, text.encode()))

    async def instance_lines(
        self, function_id: str, version_id: str, *, since: float
    ) -> AsyncIterator[tuple[str, bytes]]:
        self.followed.append((version_id, since))
        queue = self.queues.setdefault(version_id, asyncio.Queue())
        while True:
            yield await queue.get()


class Bench:
    def __init__(self, receiver: OtlpReceiver, settings: TelemetryConfig = FAST) -> None:
        self.receiver, self.logs, self.metrics = receiver, FakeLogs(), Metrics()
        self.endpoint = telemetry(receiver.url)
        self.secret: Any = SECRET
        self.versions = [
            ShippedVersion(
                nca_id=NCA,
                function_id=FID,
                version_id=VID,
                name="echo",
                logs_telemetry_id="t-1",
                metrics_telemetry_id="t-1",
            )
        ]
        self.gauge = Gauge("nvcf_lite_queue_depth", "Queued.", ("function_id", "version_id"))

        async def versions() -> list[ShippedVersion]:
            return list(self.versions)

        async def endpoint_of(nca_id: str, tid: str) -> tuple[Telemetry, Any] | None:
            return (self.endpoint, self.secret) if tid == self.endpoint.telemetry_id else None

        self.shipping = TelemetryShipping(
            settings,
            versions,
            endpoint_of,
            self.logs,
            lambda: [*self.metrics.families(), self.gauge],
            self.metrics,
        )

    def counter(self, family: str, *labels: str) -> float:
        return float(getattr(self.metrics, family).values.get(labels, 0.0))


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    yield from serve_receiver(OtlpReceiver())


async def until(cond: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 10.0
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def test_log_lines_arrive_with_their_resource_and_the_bearer_token(
    receiver: OtlpReceiver,
) -> None:
    bench = Bench(receiver)
    await bench.shipping.tick()
    bench.logs.say(VID, "hello from the container")
    bench.logs.say(VID, "second line", instance_id="i-2")
    records = await until(lambda: receiver.log_records()[1:] and receiver.log_records(), "logs")
    by_text = {rec["body"]["stringValue"]: attrs for attrs, rec in records}
    assert by_text["hello from the container"] == {
        "service.name": "echo",
        "nvcf.nca.id": NCA,
        "nvcf.function.id": FID,
        "nvcf.function.version.id": VID,
        "nvcf.instance.id": INSTANCE,
        "nca_id": NCA,
        "function_id": FID,
        "function_version_id": VID,
        "instance_id": INSTANCE,
    }
    assert by_text["second line"]["nvcf.instance.id"] == "i-2"
    (_, rec), *_ = records
    assert int(rec["timeUnixNano"]) > 0 and rec["observedTimeUnixNano"] == rec["timeUnixNano"]
    export = receiver.of("/v1/logs")[0]
    assert export.headers["authorization"] == f"Bearer {SECRET}"
    assert export.headers["content-type"] == "application/json"
    assert bench.counter("telemetry_exported", "t-1", "logs") == 2
    assert bench.logs.followed == [(VID, bench.shipping.started_at)]
    await bench.shipping.close()


async def test_the_versions_metrics_arrive_as_otlp_sums_histograms_and_gauges(
    receiver: OtlpReceiver,
) -> None:
    bench = Bench(receiver)
    bench.metrics.invocations.inc(FID, VID, "200")
    bench.metrics.invocations.inc(FID, VID, "200")
    bench.metrics.invocations.inc("other", "v-other", "200")  # another version: not shipped
    bench.metrics.invocation_seconds.observe(0.004, FID, VID)
    bench.metrics.cold_start_wait.observe(0.3, "cold")  # host-wide: not shipped
    bench.gauge.set(3, FID, VID)
    await bench.shipping.tick()
    metrics = await until(receiver.metrics, "metrics")
    by_name = {m["name"]: (attrs, m) for attrs, m in metrics}
    attrs, calls = by_name["nvcf_lite_invocations_total"]
    assert attrs["service.name"] == "echo" and attrs["nvcf.function.version.id"] == VID
    assert "nvcf.instance.id" not in attrs  # version-wide series
    (point,) = calls["sum"]["dataPoints"]
    assert point["asDouble"] == 2 and attributes(point) == {"status": "200"}
    assert calls["sum"]["isMonotonic"] and calls["sum"]["aggregationTemporality"] == 2
    assert int(point["startTimeUnixNano"]) <= int(point["timeUnixNano"])
    (hist,) = by_name["nvcf_lite_invocation_duration_seconds"][1]["histogram"]["dataPoints"]
    assert (
        hist["count"] == "1"
        and hist["sum"] == 0.004
        and len(hist["bucketCounts"]) == len(hist["explicitBounds"]) + 1
    )
    assert by_name["nvcf_lite_invocation_duration_seconds"][1]["unit"] == "s"
    (depth,) = by_name["nvcf_lite_queue_depth"][1]["gauge"]["dataPoints"]
    assert depth["asDouble"] == 3
    assert "nvcf_lite_cold_start_wait_seconds" not in by_name
    assert receiver.of("/v1/metrics")[0].headers["authorization"] == f"Bearer {SECRET}"
    await bench.shipping.close()


async def test_failed_exports_are_retried_counted_and_logged(
    receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    bench = Bench(receiver)
    receiver.fail_next = 2
    caplog.set_level(logging.WARNING, "nvcf_lite.telemetry")
    await bench.shipping.tick()
    bench.logs.say(VID, "after two failures")
    await until(receiver.log_records, "the retried batch")
    assert bench.counter("telemetry_failures", "t-1", "logs") == 2
    assert bench.counter("telemetry_exported", "t-1", "logs") == 1
    assert "logs export failed (try 1 of 3): HTTP 503" in caplog.text
    assert SECRET not in caplog.text
    await bench.shipping.close()


async def test_a_refused_token_is_not_retried_and_the_batch_is_dropped(
    receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    bench = Bench(receiver)
    bench.secret = "wrong-token"
    caplog.set_level(logging.WARNING, "nvcf_lite.telemetry")
    await bench.shipping.tick()
    bench.logs.say(VID, "refused")
    await until(lambda: bench.counter("telemetry_dropped", "t-1", "logs", "export_failed"), "drop")
    assert len(receiver.refused) == 1 and receiver.exports == []
    assert bench.counter("telemetry_failures", "t-1", "logs") == 1
    assert "HTTP 401" in caplog.text and "wrong-token" not in caplog.text
    # a new secret applies at the next pass
    bench.secret = SECRET
    await bench.shipping.tick()
    bench.logs.say(VID, "accepted")
    records = await until(receiver.log_records, "logs with the new secret")
    assert [r["body"]["stringValue"] for _, r in records] == ["accepted"]
    await bench.shipping.close()


async def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    metrics = Metrics()
    settings = TelemetryConfig(max_buffered_records=3)

    async def never(url: str, headers: dict[str, str], body: bytes, timeout_s: float) -> int:
        raise AssertionError("not sent in this test")

    exporter: Exporter[int] = Exporter("t-1", "logs", lambda b: b"", never, settings, metrics)
    for item in range(10):
        exporter.offer(item)
    assert list(exporter.buffer) == [7, 8, 9]
    assert metrics.telemetry_dropped.values[("t-1", "logs", "buffer_full")] == 7


async def test_an_unsupported_provider_is_logged_once_and_its_items_dropped(
    receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    bench = Bench(receiver)
    bench.endpoint = telemetry(receiver.url, provider="DATADOG")
    caplog.set_level(logging.WARNING, "nvcf_lite.telemetry")
    await bench.shipping.tick()
    await bench.shipping.tick()
    bench.logs.say(VID, "nowhere to go")
    await until(lambda: bench.counter("telemetry_dropped", "t-1", "logs", "unsupported"), "drop")
    assert caplog.text.count("logs are not shipped: nvcf-lite ships OTLP/HTTP to") == 1
    assert receiver.exports == [] and receiver.refused == []
    await bench.shipping.close()


def test_grafana_cloud_uses_basic_auth_with_instance_id_and_api_key() -> None:
    grafana = telemetry("https://otlp-gateway.grafana.net/otlp/", provider="GRAFANA_CLOUD")
    headers = otlp.auth_headers(grafana, {"instanceId": "123", "apiKey": "glc_k"})
    assert headers["authorization"] == "Basic " + base64.b64encode(b"123:glc_k").decode()
    assert otlp.url(grafana, "logs") == "https://otlp-gateway.grafana.net/otlp/v1/logs"
    assert otlp.url(telemetry("collector:4318"), "metrics") == "https://collector:4318/v1/metrics"
    with pytest.raises(otlp.Unsupported):
        otlp.auth_headers(grafana, "just-a-string")
    with pytest.raises(otlp.Unsupported):
        otlp.auth_headers(telemetry("x"), {"token": "t"})


async def test_a_version_no_longer_shipped_is_not_followed(receiver: OtlpReceiver) -> None:
    bench = Bench(receiver)
    await bench.shipping.tick()
    follow = bench.shipping.follows[VID]
    bench.versions = []
    await bench.shipping.tick()
    await asyncio.sleep(0)
    assert follow.cancelled() or follow.done()
    assert bench.shipping.follows == {} and bench.shipping.exporters == {}
    await bench.shipping.close()


async def test_close_ships_what_is_buffered(receiver: OtlpReceiver) -> None:
    bench = Bench(receiver, TelemetryConfig(flush_interval_s=30.0, scan_interval_s=30.0))
    await bench.shipping.tick()
    bench.logs.say(VID, "last words")
    exporter = bench.shipping.exporters[("t-1", "logs")]
    await until(lambda: exporter.buffer, "the line buffered")
    await bench.shipping.close()
    assert [r["body"]["stringValue"] for _, r in receiver.log_records()] == ["last words"]


async def test_a_cancelled_run_always_ends(receiver: OtlpReceiver) -> None:
    """The platform stops the shipper by cancelling run(): a cancel that races the wait's
    timeout must still end it (asyncio.timeout on 3.11 may swallow such a cancel)."""
    bench = Bench(receiver, TelemetryConfig(scan_interval_s=0.001, metrics_interval_s=0.001))
    bench.versions = []
    for i in range(200):
        task = asyncio.create_task(bench.shipping.run())
        await asyncio.sleep(0.001 * (i % 5))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert done, f"run() outlived its cancel (round {i})"
    await bench.shipping.close()
