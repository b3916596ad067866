"""Autoscaling on the real Docker engine through a real `nvcf-lite serve`: bursts scale up to
maxInstances and back, scale to zero and back with a measured cold start, warm pool, and
queued requests that fail fast when no instance can start."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import metric_samples, wait_for
from docker_support import (
    ECHO_IMAGE,
    docker_client_or_skip,
    ensure_test_images,
    namespace_containers,
    remove_namespace,
)
from server_support import ServerProcess

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    dock = docker_client_or_skip()
    ensure_test_images()
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    proc = ServerProcess(
        tmp_path,
        {
            "NVCF_LITE_DOCKER__NAMESPACE": namespace,
            "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "false",
            "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "2",
            "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.3",
            "NVCF_LITE_SCHEDULER__SCALE_DOWN_IDLE_S": "1",
            "NVCF_LITE_SCHEDULER__RESTART_BACKOFF_INITIAL_S": "0.2",
        },
    ).start()
    proc.namespace = namespace  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()
        remove_namespace(dock, namespace)


def deploy(server: ServerProcess, image: str = ECHO_IMAGE, **spec: Any) -> tuple[str, str]:
    body = {
        "name": "auto",
        "inferenceUrl": "/echo",
        "containerImage": image,
        "healthUri": "/health",
    }
    f = server.json("POST", "/v2/nvcf/functions", body)["function"]
    specs = {"gpu": "CPU", "instanceType": "CPU.x1", "minInstances": 1, "maxInstances": 1, **spec}
    path = f"/v2/nvcf/deployments/functions/{f['id']}/versions/{f['versionId']}"
    server.json("POST", path, {"deploymentSpecifications": [specs]})
    return f["id"], f["versionId"]


def instances(server: ServerProcess, fid: str, vid: str) -> list[dict[str, Any]]:
    d = server.json("GET", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    return list(d["deployment"].get("instances") or [])


def status(server: ServerProcess, fid: str, vid: str) -> str:
    return str(server.json("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]["status"])


def containers(namespace: str) -> list[Any]:
    dock = docker_client_or_skip()
    return namespace_containers(dock, namespace)


def scrape(server: ServerProcess) -> dict[str, float]:
    """GET /metrics as {'name{labels}': value}."""
    code, headers, body = server.call("GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    return metric_samples(body.decode())


def test_burst_scales_to_max_then_back_to_min(server: ServerProcess) -> None:
    fid, vid = deploy(server, minInstances=1, maxInstances=3, maxRequestConcurrency=1)
    wait_for(lambda: status(server, fid, vid) == "ACTIVE", what="ACTIVE")

    def invoke(_: int) -> int:
        code, _, _ = server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"delay": 3})
        return code

    peak = 0
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(invoke, i) for i in range(8)]
        deadline = time.monotonic() + 20
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            ready = [i for i in instances(server, fid, vid) if i["state"] == "ready"]
            peak = max(peak, len(ready))
            time.sleep(0.2)
        codes = [f.result() for f in futures]
    assert codes == [200] * 8
    assert peak == 3, f"peak ready instances {peak}"
    wait_for(lambda: len(instances(server, fid, vid)) == 1, timeout=20, what="scale down to min")
    assert len(containers(server.namespace)) == 1  # type: ignore[attr-defined]


def test_scale_to_zero_and_back_with_a_measured_cold_start(server: ServerProcess) -> None:
    fid, vid = deploy(server, minInstances=0, maxInstances=1)
    assert status(server, fid, vid) == "ACTIVE"
    assert containers(server.namespace) == []  # type: ignore[attr-defined]
    t0 = time.monotonic()
    code, headers, body = server.call(
        "POST", f"/v2/nvcf/pexec/functions/{fid}", {"hello": 1}, headers={"NVCF-POLL-SECONDS": "30"}
    )
    assert code == 200, body
    assert json.loads(body)["body"] == {"hello": 1}
    cold = headers.get("nvcf-lite-cold-start", "")
    assert (
        cold.startswith("cold start:") and "containerStartMs=" in cold and "firstHealthyMs=" in cold
    )
    assert time.monotonic() - t0 < 15
    # idle: back to zero containers, and served again by the next invocation
    wait_for(lambda: not containers(server.namespace), timeout=20, what="scale to zero")  # type: ignore[attr-defined]
    code, _, _ = server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"again": 1})
    assert code == 200
    # both waits are in the metrics: two cold starts, each phase timed once per instance
    m = scrape(server)
    ids = f'function_id="{fid}",version_id="{vid}"'
    assert m[f'nvcf_lite_invocations_total{{{ids},status="200"}}'] == 2
    assert m[f"nvcf_lite_invocation_duration_seconds_count{{{ids}}}"] == 2
    assert m['nvcf_lite_cold_start_wait_seconds_count{kind="cold"}'] == 2
    assert m['nvcf_lite_cold_start_wait_seconds_bucket{kind="cold",le="+Inf"}'] == 2
    assert m['nvcf_lite_cold_start_wait_seconds_sum{kind="cold"}'] > 0
    for phase in ("image_pull", "container_start", "first_healthy"):
        assert m[f'nvcf_lite_instance_start_seconds_count{{kind="cold",phase="{phase}"}}'] == 2
    assert m[f"nvcf_lite_queue_depth{{{ids}}}"] == 0
    assert m[f'nvcf_lite_instances{{{ids},state="ready"}}'] == 1


def test_short_poll_during_cold_start_says_it_waits_for_an_instance(server: ServerProcess) -> None:
    fid, _ = deploy(server, "nvcf-lite-test/slow-ready:1", minInstances=0, maxInstances=1)
    code, headers, _ = server.call(
        "POST", f"/v2/nvcf/pexec/functions/{fid}", {"x": 1}, headers={"NVCF-POLL-SECONDS": "1"}
    )
    assert code == 202
    assert headers["nvcf-status"] == "pending-evaluation"
    assert "waiting for an instance" in headers.get("nvcf-lite-detail", "")
    rid = headers["nvcf-reqid"]
    code, _, body = server.call(
        "GET", f"/v2/nvcf/pexec/status/{rid}", headers={"NVCF-POLL-SECONDS": "30"}
    )
    assert code == 200, body


def test_unstartable_image_fails_queued_requests_fast(server: ServerProcess) -> None:
    fid, _ = deploy(server, "nvcf-lite-test/not-here:1", minInstances=0, maxInstances=1)
    t0 = time.monotonic()
    code, _, body = server.call(
        "POST", f"/v2/nvcf/pexec/functions/{fid}", {"x": 1}, headers={"NVCF-POLL-SECONDS": "60"}
    )
    assert code == 503, body
    assert "could not be pulled" in json.loads(body)["detail"]
    assert time.monotonic() - t0 < 10
    m = scrape(server)
    failed = [
        v for k, v in m.items() if k.startswith("nvcf_lite_instance_failures_total{") and fid in k
    ]
    assert failed and failed[0] >= 1, m
    answered = [k for k in m if k.startswith("nvcf_lite_invocations_total{") and fid in k]
    assert answered and answered[0].endswith('status="503"}'), answered


def test_warm_pool_resumes_a_paused_instance(server: ServerProcess) -> None:
    fid, vid = deploy(server, minInstances=0, maxInstances=1, warmPoolSeconds=60)
    code, headers, _ = server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"a": 1})
    assert code == 200 and headers["nvcf-lite-cold-start"].startswith("cold start")
    wait_for(
        lambda: [i["state"] for i in instances(server, fid, vid)] == ["paused"],
        timeout=20,
        what="paused",
    )
    (c,) = containers(server.namespace)  # type: ignore[attr-defined]
    assert c.status == "paused"
    code, headers, _ = server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"b": 2})
    assert code == 200 and headers["nvcf-lite-cold-start"].startswith("paused start")
    assert [x.id for x in containers(server.namespace)] == [c.id]  # type: ignore[attr-defined]
    m = scrape(server)
    assert m['nvcf_lite_cold_start_wait_seconds_count{kind="paused"}'] == 1
    assert m['nvcf_lite_instance_start_seconds_count{kind="paused",phase="container_start"}'] == 1
    assert 'nvcf_lite_instance_start_seconds_count{kind="paused",phase="image_pull"}' not in m
