"""The composition root: the Litestar app over the Platform (lifespan, routes, errors)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from types import FrameType
from typing import Any, cast

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from nvcf_lite import logs
from nvcf_lite.api import fastpath
from nvcf_lite.api.artifacts import ARTIFACT_HANDLERS
from nvcf_lite.api.assets import ASSET_HANDLERS, SIGNED_HANDLERS
from nvcf_lite.api.authorizations import AUTHORIZATION_HANDLERS
from nvcf_lite.api.cluster_groups import CLUSTER_GROUP_HANDLERS
from nvcf_lite.api.console import console_files
from nvcf_lite.api.deployments import DEPLOYMENT_HANDLERS
from nvcf_lite.api.docs import openapi_config, swagger_assets
from nvcf_lite.api.functions import FUNCTION_HANDLERS
from nvcf_lite.api.gateway import GATEWAY_HANDLERS
from nvcf_lite.api.health import health, metrics
from nvcf_lite.api.host_routes import HostRoutes
from nvcf_lite.api.invocations import (
    INVOCATION_HANDLERS,
    host_invocation,
    host_invocation_head,
    path_invocation,
    path_invocation_head,
)
from nvcf_lite.api.json_bodies import JsonRequest
from nvcf_lite.api.keys import KEY_HANDLERS
from nvcf_lite.api.logs import LOGS_HANDLERS
from nvcf_lite.api.ngc import NGC_HANDLERS
from nvcf_lite.api.problems import EXCEPTION_HANDLERS
from nvcf_lite.api.registry_credentials import REGISTRY_CREDENTIAL_HANDLERS
from nvcf_lite.api.secrets import SECRETS_HANDLERS
from nvcf_lite.api.security import authorize, path_families
from nvcf_lite.api.services import services
from nvcf_lite.api.status import STATUS_HANDLERS
from nvcf_lite.api.telemetries import TELEMETRY_HANDLERS
from nvcf_lite.api.traffic import TRAFFIC_HANDLERS
from nvcf_lite.config import Config
from nvcf_lite.platform import Platform, RuntimeFactory, docker_runtime


class NvcfLite(Litestar):
    """Litestar, with the invocation hot path answered before the framework's routing
    (unless `server.fast_path` is off: then the Litestar route in api/invocations answers)."""

    def __init__(
        self, *, fast_path: bool, max_header_bytes: int, host_routes: HostRoutes, **litestar: Any
    ) -> None:
        super().__init__(**litestar)
        self.fast_path = fast_path
        self.max_header_bytes = max_header_bytes
        self.host_routes = host_routes
        # Litestar's automatic OPTIONS answer lists the methods of the route as it was when the
        # first handler of a path was registered; the methods of the finished routes, by path
        # (not the catch-all I5 route's: an OPTIONS call there is the container's to answer).
        self.allow = {
            route.path_format: ", ".join(sorted(route.methods))
            for route in self.routes
            if isinstance(route, HTTPRoute) and ":path}" not in route.path
        }

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        raw: Any = scope
        if raw["type"] == "http" and fastpath.head_size(raw) > self.max_header_bytes:
            await fastpath.refuse_head(raw, cast(Any, send), self.max_header_bytes)
            return
        by_host = self.host_routes.match(raw)
        if by_host is not None:  # every path on a function's host is the function's
            await super().__call__(HostRoutes.routed(raw, by_host), receive, send)
            return
        if raw["type"] == "http" and raw["method"] == "OPTIONS":
            await super().__call__(scope, receive, self._with_allow(raw, send))
            return
        match = fastpath.claims(raw) if self.fast_path else None
        if match is not None:
            await fastpath.serve(
                services(self.state), raw, cast(Any, receive), cast(Any, send), match
            )
            return
        await super().__call__(scope, receive, send)

    def _with_allow(self, scope: Any, send: Any) -> Any:
        """`send`, with the `Allow` of an automatic OPTIONS answer set to the path's methods."""

        async def allowed(message: Any) -> None:
            allow = self.allow.get(scope.get("path_template", ""))
            if message["type"] == "http.response.start" and allow:
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow.encode())]}
            await send(message)

        return allowed


def create_app(
    config: Config, *, runtime_factory: RuntimeFactory | None = docker_runtime
) -> Litestar:
    platform = Platform(config, runtime_factory)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.enter_context(_on_stop_signals(platform.begin_shutdown))
            app.state.services = await platform.start(stack)
            try:
                yield
            finally:
                platform.begin_shutdown()

    nvcf_handlers: list[Any] = [
        *FUNCTION_HANDLERS,
        *SECRETS_HANDLERS,
        *TELEMETRY_HANDLERS,
        *REGISTRY_CREDENTIAL_HANDLERS,
        *LOGS_HANDLERS,
        *DEPLOYMENT_HANDLERS,
        *CLUSTER_GROUP_HANDLERS,
        *INVOCATION_HANDLERS,
        *ASSET_HANDLERS,
        *AUTHORIZATION_HANDLERS,
    ]
    app = NvcfLite(
        fast_path=config.server.fast_path,
        max_header_bytes=config.server.max_header_bytes,
        host_routes=HostRoutes(config.invocation.host_domain),
        route_handlers=[
            swagger_assets(),
            health,
            metrics,
            *NGC_HANDLERS,
            *SIGNED_HANDLERS,
            *STATUS_HANDLERS,
            *TRAFFIC_HANDLERS,
            *KEY_HANDLERS,
            *([console_files()] if config.console.enabled else []),
            *ARTIFACT_HANDLERS,
            *GATEWAY_HANDLERS,
            *path_families(nvcf_handlers),
            path_invocation,
            path_invocation_head,
            host_invocation,
            host_invocation_head,
        ],
        guards=[authorize],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=config.server.max_body_bytes,
        request_class=JsonRequest,
        openapi_config=openapi_config(),
        logging_config=None,
        debug=False,
    )
    app.state.platform = platform  # for tests and tools: the platform's own objects
    return app


@contextmanager
def _on_stop_signals(callback: Callable[[], None]) -> Iterator[None]:
    """SIGINT/SIGTERM also call `callback` (on the event loop), then the handler they had.

    Granian's worker, on the signal, waits for every open connection to finish before it runs
    the lifespan shutdown, and a log follow never finishes by itself: the signal must reach
    the app at once. Runs in the lifespan, after granian installed its own handlers (asyncio's,
    which this chains to). Off the main thread (a test client) signals are not ours to take.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    before: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        previous = before.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default action: end the process as before
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        before[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def serve_app() -> Litestar:
    """Granian's factory target: config from NVCF_LITE_CONFIG and the environment."""
    import os

    from nvcf_lite.config import load_config

    config = load_config(os.environ.get("NVCF_LITE_CONFIG") or None, os.environ)
    # granian applied the same config before loading us; again for other ASGI servers
    logs.configure(config.server.log_level, config.server.log_format)
    return create_app(config)
