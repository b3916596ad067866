"""GET /health: no auth; what works and what is missing (store, Docker, GPUs)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from nvcf_lite.api.wire import Wire


class Component(Wire, kw_only=True):
    status: str  # "ok" | "unavailable" | "degraded"
    detail: str | None = None


class HealthReport(Wire, kw_only=True):
    status: str
    version: str
    store: Component
    docker: Component
    gpus: Component


@get("/health", opt={}, summary="Server health (no auth)", tags=["health"])
async def health(request: Request[Any, Any, Any]) -> Response[HealthReport]:
    report: HealthReport = await request.app.state.health_report()
    return Response(report, status_code=200 if report.store.status == "ok" else 503)
