"""GET /health: no auth; what works and what is missing (store, Docker, GPUs).

GET /metrics: no auth either (the server listens on 127.0.0.1 unless told otherwise), the
Prometheus text format; see nvcf_lite/domain/metrics.py for what is counted.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire


class ComponentWire(Wire, kw_only=True):
    status: str  # "ok" | "unavailable" | "degraded"
    detail: str | None = None


class HealthResponse(Wire, kw_only=True):
    status: str
    version: str
    store: ComponentWire
    docker: ComponentWire
    gpus: ComponentWire


@get("/health", opt={}, summary="Server health (no auth)", tags=["health"])
async def health(request: Request[Any, Any, Any]) -> Response[HealthResponse]:
    report: HealthResponse = await services_of(request).health_report()
    return Response(report, status_code=200 if report.store.status == "ok" else 503)


PROMETHEUS_TEXT = "text/plain; version=0.0.4"  # Litestar adds "; charset=utf-8"


@get(
    "/metrics",
    opt={},
    media_type=PROMETHEUS_TEXT,
    summary="Prometheus metrics (no auth)",
    tags=["health"],
)
async def metrics(request: Request[Any, Any, Any]) -> Response[str]:
    text: str = services_of(request).metrics_text()
    return Response(text, media_type=PROMETHEUS_TEXT)
