"""The composition root: builds the store, drivers, domain and workers, and the Litestar app.

Everything long-lived is opened in one AsyncExitStack in the lifespan and closed in reverse.
A missing Docker engine or NVML is not fatal: the API serves and /health says what is missing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from nvcf_lite import __version__
from nvcf_lite.api.functions import FUNCTION_HANDLERS
from nvcf_lite.api.health import Component, HealthReport, health
from nvcf_lite.api.ngc import NGC_HANDLERS
from nvcf_lite.api.problems import EXCEPTION_HANDLERS
from nvcf_lite.api.security import authorize, path_families
from nvcf_lite.config import Config
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.registry import Registry
from nvcf_lite.runtime.base import ContainerRuntime
from nvcf_lite.store.keys import KeysRepo
from nvcf_lite.store.sqlite import Database

log = logging.getLogger("nvcf_lite")

RuntimeFactory = Callable[[Config], ContainerRuntime | None]


def docker_runtime(config: Config) -> ContainerRuntime | None:
    from nvcf_lite.runtime.docker import DockerRuntime

    return DockerRuntime.connect(config.docker.base_url or None)


class Platform:
    """Everything the handlers and workers share, opened by `start` and closed by the stack."""

    def __init__(self, config: Config, runtime_factory: RuntimeFactory | None) -> None:
        self.config = config
        self.runtime_factory = runtime_factory
        self.runtime: ContainerRuntime | None = None
        self.bootstrap_key: str | None = None

    async def start(self, stack: AsyncExitStack, state: State) -> None:
        config = self.config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.db = await Database.open(data / "nvcf-lite.db")
        stack.push_async_callback(self.db.close)
        self.keys = Keys(KeysRepo(self.db), config.account.nca_id, config.auth.key_cache_seconds)
        self.bootstrap_key = await self.keys.ensure_bootstrap(config.auth.bootstrap_key)
        if self.bootstrap_key:
            _announce_bootstrap(self.bootstrap_key)
        if self.runtime_factory is not None:
            self.runtime = self.runtime_factory(config)
            if self.runtime is not None:
                stack.push_async_callback(self.runtime.close)
        self.registry = Registry(self.runtime)
        state.api_keys = self.keys
        state.registry = self.registry
        state.org_name = config.account.org_name
        state.platform = self
        state.health_report = self.health_report

    async def health_report(self) -> HealthReport:
        store_err = await self.db.check()
        store = Component(status="ok" if store_err is None else "unavailable", detail=store_err)
        if self.runtime is None:
            docker = Component(status="unavailable", detail="no container runtime configured")
        else:
            why = await self.runtime.ping()
            docker = Component(status="ok" if why is None else "unavailable", detail=why)
        gpus = Component(status="unavailable", detail="GPU inventory not read yet")
        overall = "ok" if store.status == "ok" and docker.status == "ok" else "degraded"
        return HealthReport(
            status=overall, version=__version__, store=store, docker=docker, gpus=gpus
        )


def _announce_bootstrap(token: str) -> None:
    print(
        "\n  nvcf-lite created an admin API key with every scope (shown only this once):\n"
        f"\n      {token}\n\n"
        "  Use it as 'Authorization: Bearer <key>'. More keys: nvcf-lite keys create --help\n",
        file=sys.stderr,
        flush=True,
    )


def create_app(
    config: Config, *, runtime_factory: RuntimeFactory | None = docker_runtime
) -> Litestar:
    platform = Platform(config, runtime_factory)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await platform.start(stack, app.state)
            yield

    nvcf_handlers: list[Any] = [*FUNCTION_HANDLERS]
    app = Litestar(
        route_handlers=[health, *NGC_HANDLERS, *path_families(nvcf_handlers)],
        guards=[authorize],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="nvcf-lite",
            version=__version__,
            description="The NVIDIA Cloud Functions API on one machine",
            path="/openapi",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        logging_config=None,
        debug=False,
    )
    app.state.platform = platform
    return app


def serve_app() -> Litestar:
    """Granian's factory target: config from NVCF_LITE_CONFIG and the environment."""
    import os

    from nvcf_lite.config import load_config

    config = load_config(os.environ.get("NVCF_LITE_CONFIG") or None, os.environ)
    _setup_logging(config.server.log_level)
    return create_app(config)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
