"""GET /metrics: the Prometheus text format, and the gauges of a server without Docker."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from conftest import bearer, make_config, metric_samples
from litestar.testing import TestClient

from nvcf_lite.domain.metrics import Counter, Gauge, Histogram, Metrics


def test_counter_and_gauge_lines_with_escaped_labels() -> None:
    c = Counter("x_total", "Things.", ("name",))
    c.inc('a "quoted"\\ new\nline')
    c.inc("b", by=2.5)
    assert c.header() == ["# HELP x_total Things.", "# TYPE x_total counter"]
    assert c.lines() == ['x_total{name="a \\"quoted\\"\\\\ new\\nline"} 1', 'x_total{name="b"} 2.5']
    g = Gauge("y", "Now.", ())
    g.set(3)
    assert g.lines() == ["y 3"]


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    h = Histogram("z_seconds", "Time.", ("kind",), (0.1, 1))
    for value in (0.05, 0.1, 0.5, 7):
        h.observe(value, "cold")
    assert h.lines() == [
        'z_seconds_bucket{kind="cold",le="0.1"} 2',
        'z_seconds_bucket{kind="cold",le="1"} 3',
        'z_seconds_bucket{kind="cold",le="+Inf"} 4',
        'z_seconds_sum{kind="cold"} 7.65',
        'z_seconds_count{kind="cold"} 4',
    ]


def test_every_family_has_help_and_type_even_when_empty() -> None:
    text = Metrics().render()
    assert text.endswith("\n")
    for name in (
        "nvcf_lite_invocations_total",
        "nvcf_lite_invocation_duration_seconds",
        "nvcf_lite_cold_start_wait_seconds",
        "nvcf_lite_instance_start_seconds",
        "nvcf_lite_instance_failures_total",
    ):
        assert f"# TYPE {name} " in text and f"# HELP {name} " in text


def test_metrics_without_auth_show_gpu_units(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Any
) -> None:
    simulated = json.dumps([{"name": "L40", "count": 2}])
    client = app_factory(make_config(tmp_path / "data", NVCF_LITE_GPUS__SIMULATED=simulated))
    r = client.get("/metrics")  # no Authorization header
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = metric_samples(r.text)
    assert m['nvcf_lite_gpu_units{gpu="L40",state="free"}'] == 2
    assert m['nvcf_lite_gpu_units{gpu="L40",state="used"}'] == 0
    assert "# TYPE nvcf_lite_queue_depth gauge" in r.text
    # a bad bearer changes nothing: the endpoint is public like /health
    assert client.get("/metrics", headers=bearer("nvapi-" + "x" * 64)).status_code == 200
