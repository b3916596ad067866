"""The platform: store, drivers, domain services and workers, opened in one AsyncExitStack.

`Platform.start` runs in the app's lifespan; everything long-lived is closed in reverse. A
missing Docker engine or NVML is not fatal: the API serves and /health says what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from litestar.datastructures import State

from nvcf_lite import __version__, logs
from nvcf_lite.api.health import ComponentWire, HealthResponse
from nvcf_lite.config import Config, public_url
from nvcf_lite.domain.assets import Assets
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.deployments import Deployments, VersionRef, active_instance, version_ref
from nvcf_lite.domain.functions import Functions
from nvcf_lite.domain.invocations import CachedVersions, Invocations, Queues, VersionInfo
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.registry import Registry
from nvcf_lite.domain.signing import Signer
from nvcf_lite.domain.status import Overview
from nvcf_lite.domain.tokens import TokenSigner
from nvcf_lite.inventory import gpus_component, read_host
from nvcf_lite.models import ActiveInstance, Principal, RequestRecord
from nvcf_lite.runtime.base import ContainerRuntime, UnavailableRuntime
from nvcf_lite.runtime.container_logs import ContainerLogs
from nvcf_lite.store.assets import AssetsRepo
from nvcf_lite.store.blobs import BlobStore
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.keys import KeysRepo
from nvcf_lite.store.requests import RequestsRepo
from nvcf_lite.store.signing_key import load_signing_key
from nvcf_lite.store.sqlite import Database
from nvcf_lite.workers.dispatcher import Dispatcher
from nvcf_lite.workers.forwarding import Forwarder
from nvcf_lite.workers.gauges import live_gauges
from nvcf_lite.workers.instances import LaunchInfo, launch_info
from nvcf_lite.workers.scheduler import Scheduler
from nvcf_lite.workers.sweeper import Sweeper

log = logging.getLogger("nvcf_lite")

RuntimeFactory = Callable[[Config], ContainerRuntime | None]


def docker_runtime(config: Config) -> ContainerRuntime | None:
    from nvcf_lite.runtime.docker import DockerRuntime

    return DockerRuntime.connect(
        config.docker.base_url or None, pull_timeout_s=config.docker.pull_timeout_s
    )


class Platform:
    """Everything the handlers and workers share, opened by `start` and closed by the stack."""

    def __init__(self, config: Config, runtime_factory: RuntimeFactory | None) -> None:
        self.config = config
        self.runtime_factory = runtime_factory
        self.runtime: ContainerRuntime | None = None
        self.bootstrap_key: str | None = None
        # Set when the server begins to stop: open log follows end (they would hold it up).
        self.stopping = asyncio.Event()

    def begin_shutdown(self) -> None:
        """The server is stopping (a signal, or the lifespan's shutdown): end the streams that
        would otherwise keep their connection, and so the server, open."""
        if not self.stopping.is_set():
            log.info("shutting down: ending open log streams")
            self.stopping.set()

    async def start(self, stack: AsyncExitStack, state: State) -> None:
        config = self.config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.db = await Database.open(data / "nvcf-lite.db")
        stack.push_async_callback(self.db.close)
        signing_key = await asyncio.to_thread(load_signing_key, data)
        self.signer = Signer(signing_key)
        self.keys = Keys(
            KeysRepo(self.db),
            config.account.nca_id,
            config.auth.key_cache_seconds,
            tokens=TokenSigner(signing_key),
        )
        self.bootstrap_key = await self.keys.ensure_bootstrap(config.auth.bootstrap_key)
        if self.bootstrap_key:
            _announce_bootstrap(self.bootstrap_key, config.server.log_format)
        if self.runtime_factory is not None:
            self.runtime = self.runtime_factory(config)
            if self.runtime is not None:
                stack.push_async_callback(self.runtime.close)
        self.registry = Registry(self.runtime)
        self.functions = Functions(FunctionsRepo(self.db), config.account.nca_id)
        state.functions = self.functions
        await self._start_assets(stack)
        state.assets = self.assets
        await self._start_deployments(stack)
        state.api_keys = self.keys
        state.registry = self.registry
        state.org_name = config.account.org_name
        state.token_ttl_s = config.auth.token_ttl_s
        state.platform = self
        state.container_logs = self.container_logs
        state.deployments = self.deployments
        state.host = self.host
        state.nca_id = config.account.nca_id
        state.max_body_bytes = config.server.max_body_bytes
        state.invocations = self.invocations
        state.queues = Queues(self.invocations)
        state.health_report = self.health_report
        state.overview = Overview(
            self.functions,
            self.deployments,
            self.host,
            self.dispatcher.depth,
            self.scheduler.held_units,
        )
        state.metrics_text = self.metrics_text

    async def _start_assets(self, stack: AsyncExitStack) -> None:
        """One signing key and one blob store for assets and large results; the sweeper."""
        data = self.config.data_path
        self.blobs = BlobStore(data / "blobs")
        repo = AssetsRepo(self.db)
        base_url = public_url(self.config)
        self.assets = Assets(repo, self.blobs, self.signer, self.config.assets, base_url)
        await self.assets.recover()
        self.sweeper = Sweeper(self.config.assets.sweep_interval_s)
        self.sweeper.add("assets", self.assets.sweep)
        task = asyncio.create_task(self.sweeper.run(), name="sweeper")

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        stack.push_async_callback(stop)

    async def _start_deployments(self, stack: AsyncExitStack) -> None:
        config = self.config
        self.host, self.inventory = read_host(config)
        functions = FunctionsRepo(self.db)
        repo = DeploymentsRepo(self.db)

        async def lookup(fid: str, vid: str) -> VersionRef | None:
            version = await functions.get(fid, vid)
            return version_ref(version) if version else None

        async def launch(vid: str) -> LaunchInfo | None:
            version = await functions.get_version(vid)
            return launch_info(version, await functions.secrets(vid)) if version else None

        self.deployments = Deployments(self.db, repo, self.host, lookup, config.account.nca_id)
        runtime = self.runtime or UnavailableRuntime(
            "no container engine is configured for this server"
        )
        self.container_logs = ContainerLogs(
            runtime, config.docker.namespace, stopping=self.stopping
        )
        self.metrics = Metrics()
        self.scheduler = Scheduler(config, repo, runtime, self.host, launch, self.metrics)
        self.deployments.reconcile = self.scheduler.nudge
        self.deployments.instances = self.scheduler.views
        self.deployments.spec_states = self.scheduler.spec_states
        self.functions.before_delete = self.deployments.force_remove
        self.functions.after_secrets_change = self.scheduler.life.refresh_secrets
        nca_id = config.account.nca_id

        async def active_instances(vid: str) -> list[ActiveInstance]:
            return [active_instance(v, nca_id) for v in self.scheduler.views(vid)]

        self.functions.instances = active_instances
        task = asyncio.create_task(self.scheduler.run(), name="scheduler")

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.scheduler.shutdown(config.docker.keep_instances_on_shutdown)

        stack.push_async_callback(stop)
        await self._start_invocations(stack, functions)

    async def _start_invocations(self, stack: AsyncExitStack, functions: FunctionsRepo) -> None:
        cfg = self.config.invocation
        store = RequestsRepo(self.db)
        store.start()
        stack.push_async_callback(store.close)
        inf_dir = self.config.data_path / "inf"
        forwarder = Forwarder(
            inf_dir, cfg.max_response_bytes, cfg.request_ttl_s, self.assets.put_result
        )
        forwarder.start()
        dispatcher = Dispatcher(store, self.scheduler, forwarder, cfg.request_ttl_s, self.metrics)
        self.scheduler.queue_depth = dispatcher.depth
        scheduler = self.scheduler

        def busy(version_id: str) -> bool:
            """Graceful undeploy waits only for queued or in-flight work (spec §2.2.4)."""
            return dispatcher.depth(version_id) > 0 or any(
                i.in_flight for i in scheduler.instances.values() if i.version_id == version_id
            )

        self.deployments.busy = busy
        dispatcher.on_demand = lambda version_id: self.scheduler.nudge()
        nca_id = self.config.account.nca_id

        async def versions_of(fid: str) -> list[VersionInfo]:
            return [
                VersionInfo(v.function_id, v.version_id, v.name, v.status)
                for v in await functions.list_versions(fid)
                if v.nca_id == nca_id
            ]

        # The invocation hot path reads versions from memory; any status change clears it.
        versions = CachedVersions(versions_of)
        reconcile = self.scheduler.nudge

        def changed() -> None:
            versions.clear()
            dispatcher.pump_all()

        def deployments_changed() -> None:
            versions.clear()
            reconcile()

        self.scheduler.on_change = changed
        self.deployments.reconcile = deployments_changed
        self.invocations = Invocations(
            store,
            versions,
            dispatcher,
            default_poll=cfg.default_poll_seconds,
            max_poll=cfg.max_poll_seconds,
            max_queue=cfg.max_queue_per_function,
            stage_assets=self._stage_assets,
        )
        self.invocations.new_request_id = forwarder.take_request_id
        self.invocations.release_request_id = forwarder.cleanup
        self.dispatcher = dispatcher

        async def subject_of(record: RequestRecord) -> str:
            return f"apikey:{record.key_id}"

        # The dispatcher fails requests of versions the scheduler does not know as deployed:
        # let it read the deployments once before the requests of the last run are queued
        # (else they race its first tick and may fail as "not deployed").
        try:
            await self.scheduler.tick()
        except Exception:
            log.exception("first scheduler pass failed")
        recovered = await dispatcher.recover(subject_of)
        if recovered:
            log.info("re-queued %d request(s) accepted before the last stop", recovered)
        dispatcher.start()
        ttl = cfg.request_ttl_s

        async def expire_results(now: float) -> object:
            return len(await store.expire_finished(now - ttl))

        self.sweeper.add("uncollected results", expire_results)

        async def stop() -> None:
            await dispatcher.close()

        stack.push_async_callback(stop)

    async def _stage_assets(self, principal: Principal, header: str, request_id: str) -> list[str]:
        """NVCF-INPUT-ASSET-REFERENCES: hard-link each asset into the request's asset folder
        at acceptance, so deleting an asset later does not break a queued request."""
        ids = await self.assets.resolve_references(principal, header)
        folder = self.config.data_path / "inf" / "inputAssets" / request_id
        try:
            await self.assets.stage(ids, folder)
            await asyncio.to_thread(_open_up, folder)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return ids

    def metrics_text(self) -> str:
        """GET /metrics: what the workers counted, and gauges of the live state."""
        return self.metrics.render(live_gauges(self.scheduler, self.dispatcher))

    async def health_report(self) -> HealthResponse:
        store_err = await self.db.check()
        store = ComponentWire(status="ok" if store_err is None else "unavailable", detail=store_err)
        if self.runtime is None:
            docker = ComponentWire(status="unavailable", detail="no container runtime configured")
        else:
            why = await self.runtime.ping()
            docker = ComponentWire(status="ok" if why is None else "unavailable", detail=why)
        gpus = gpus_component(self.host, self.inventory)
        overall = "ok" if store.status == "ok" and docker.status == "ok" else "degraded"
        return HealthResponse(
            status=overall, version=__version__, store=store, docker=docker, gpus=gpus
        )


def _open_up(folder: Path) -> None:
    """The container's user may not be root: the request folder must be readable."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)


def _announce_bootstrap(token: str, log_format: str) -> None:
    """The first admin key, past the log's redaction: a banner, or one line of the JSON log."""
    if log_format == "json":
        line = logs.unredacted_json_line(
            "nvcf_lite",
            "WARNING",
            "nvcf-lite created an admin API key with every scope (shown only this once); use "
            "it as 'Authorization: Bearer <key>'; more keys: nvcf-lite keys create --help",
            admin_key=token,
        )
        print(line, file=sys.stderr, flush=True)
        return
    print(
        "\n  nvcf-lite created an admin API key with every scope (shown only this once):\n"
        f"\n      {token}\n\n"
        "  Use it as 'Authorization: Bearer <key>'. More keys: nvcf-lite keys create --help\n",
        file=sys.stderr,
        flush=True,
    )
