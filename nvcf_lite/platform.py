"""The platform: store, drivers, domain services and workers, opened in one AsyncExitStack.

`Platform.start` runs in the app's lifespan: the one place objects are built, in dependency
order, each collaborator handed in through its constructor (a Protocol or a callable the
consumer's module names); it returns the `Services` the handlers read. Everything long-lived is
closed in reverse. A missing Docker engine or NVML is not fatal: the API serves and /health says
what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import msgspec

from nvcf_lite import __version__, logs
from nvcf_lite.api.health import ComponentWire, HealthResponse
from nvcf_lite.api.services import Services
from nvcf_lite.config import Config, public_url
from nvcf_lite.domain.accounts import Accounts, default_account
from nvcf_lite.domain.artifact_refs import ArtifactMissing, ModelServer
from nvcf_lite.domain.artifacts import Artifacts, deployed_versions
from nvcf_lite.domain.assets import Assets
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.authorizations import Authorizations
from nvcf_lite.domain.deployments import (
    Busy,
    Deployments,
    VersionLookup,
    VersionRef,
    active_instance,
    version_ref,
)
from nvcf_lite.domain.functions import Functions, InstancesProvider
from nvcf_lite.domain.gateway import Gateway, LlmVersions
from nvcf_lite.domain.idempotency import IdempotencyKeys, StoredOutcome
from nvcf_lite.domain.invocations import (
    CachedVersions,
    Invocations,
    Queues,
    VersionInfo,
    VersionsOf,
)
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.registry import Registry
from nvcf_lite.domain.registry_credentials import RegistryCredentials
from nvcf_lite.domain.signing import Signer
from nvcf_lite.domain.status import Overview
from nvcf_lite.domain.telemetries import TelemetryEndpoints, UsersOf
from nvcf_lite.domain.tokens import TokenSigner
from nvcf_lite.domain.webhooks import WebhookPolicy
from nvcf_lite.inventory import gpus_component, read_host, read_swarm_host
from nvcf_lite.models import (
    ActiveInstance,
    FunctionStatus,
    FunctionType,
    FunctionVersion,
    Outcome,
    Principal,
    RegistryAuth,
    RequestRecord,
)
from nvcf_lite.runtime.base import ContainerRuntime, RuntimeFailure, UnavailableRuntime
from nvcf_lite.runtime.container_logs import ContainerLogs
from nvcf_lite.runtime.swarm import SwarmRuntime
from nvcf_lite.store.accounts import AccountsRepo
from nvcf_lite.store.artifact_files import ArtifactFiles
from nvcf_lite.store.artifacts import ArtifactsRepo
from nvcf_lite.store.assets import AssetsRepo
from nvcf_lite.store.authorized_parties import FUNCTION_LEVEL, AuthorizedPartiesRepo
from nvcf_lite.store.blobs import BlobStore
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.idempotency import IdempotencyRepo
from nvcf_lite.store.keys import KeysRepo
from nvcf_lite.store.registry_credentials import RegistryCredentialsRepo
from nvcf_lite.store.requests import RequestsRepo
from nvcf_lite.store.sealing import SealBroken, SecretBox
from nvcf_lite.store.signing_key import load_signing_key
from nvcf_lite.store.sqlite import Database
from nvcf_lite.store.telemetries import TelemetriesRepo
from nvcf_lite.store.webhooks import DeliveriesRepo, load_webhook_secret
from nvcf_lite.workers.backlog import Backlog
from nvcf_lite.workers.capacity import CapacityChanged
from nvcf_lite.workers.dispatcher import Dispatcher
from nvcf_lite.workers.forwarding import Forwarder
from nvcf_lite.workers.gauges import live_gauges
from nvcf_lite.workers.instances import LaunchInfo, launch_info
from nvcf_lite.workers.lifecycle import LaunchLookup
from nvcf_lite.workers.pulls import PullAuthLookup
from nvcf_lite.workers.scheduler import Scheduler
from nvcf_lite.workers.sweeper import Sweeper
from nvcf_lite.workers.telemetry_shipping import ShippedVersion, TelemetryShipping, VersionsToShip
from nvcf_lite.workers.webhooks import WebhookSender

log = logging.getLogger("nvcf_lite")

RuntimeFactory = Callable[[Config], ContainerRuntime | None]


def docker_runtime(config: Config) -> ContainerRuntime | None:
    from nvcf_lite.runtime.docker import DockerRuntime
    from nvcf_lite.runtime.swarm import SwarmRuntime

    if config.docker.runtime == "swarm":
        return SwarmRuntime.connect(
            config.docker.base_url or None,
            pull_timeout_s=config.docker.pull_timeout_s,
            stop_grace_s=config.docker.stop_timeout_s,
            start_timeout_s=config.swarm.start_timeout_s,
        )
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

    async def start(self, stack: AsyncExitStack) -> Services:
        """Build every object in dependency order, each collaborator handed in through its
        constructor; start the workers; return what the handlers use. What is started is
        closed by `stack`, in reverse."""
        config, cfg = self.config, self.config.invocation
        nca_id = config.account.nca_id
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.db = await Database.open(data / "nvcf-lite.db")
        stack.push_async_callback(self.db.close)
        signing_key = await asyncio.to_thread(load_signing_key, data)
        self.signer = Signer(signing_key)
        self.secret_box = await asyncio.to_thread(SecretBox.in_data_dir, data)
        self.accounts = Accounts(
            AccountsRepo(self.db), default_account(nca_id, config.account.org_name)
        )
        await self.accounts.ensure_default()
        self.keys = Keys(
            KeysRepo(self.db),
            nca_id,
            config.auth.key_cache_seconds,
            tokens=TokenSigner(signing_key),
            org_name=config.account.org_name,
        )
        self.bootstrap_key = await self.keys.ensure_bootstrap(config.auth.bootstrap_key)
        if self.bootstrap_key:
            _announce_bootstrap(self.bootstrap_key, config.server.log_format)
        if self.runtime_factory is not None:
            self.runtime = self.runtime_factory(config)
            if self.runtime is not None:
                stack.push_async_callback(self.runtime.close)
        runtime = self.runtime or UnavailableRuntime(
            "no container engine is configured for this server"
        )
        self.registry = Registry(self.runtime)
        self.registry_credentials = RegistryCredentials(
            RegistryCredentialsRepo(self.db, self.secret_box), config.registry.mirrors
        )
        if isinstance(self.runtime, SwarmRuntime):
            self.host, self.inventory = await read_swarm_host(config, self.runtime)
        else:
            self.host, self.inventory = read_host(config)
        functions_repo = FunctionsRepo(self.db, self.secret_box)
        parties_repo = AuthorizedPartiesRepo(self.db)
        if sealed := await functions_repo.seal_legacy():
            log.info("sealed the secrets of %d function version(s) stored in plain text", sealed)
        deployments_repo = DeploymentsRepo(self.db)
        store = RequestsRepo(self.db, config.idempotency.ttl_s)
        secret = config.webhooks.secret or await asyncio.to_thread(load_webhook_secret, data)
        self.telemetries = TelemetryEndpoints(
            TelemetriesRepo(self.db, self.secret_box), users=_telemetry_users(functions_repo)
        )
        # One signing key and one blob store for assets and large results.
        self.blobs = BlobStore(data / "blobs")
        self.assets = Assets(
            AssetsRepo(self.db), self.blobs, self.signer, config.assets, public_url(config)
        )
        # The model store: trees mounted at /config/models|resources/{name} (spec §4.1).
        self.artifacts = Artifacts(
            self.db,
            ArtifactsRepo(self.db),
            ArtifactFiles(data),
            deployed_versions(deployments_repo, functions_repo),
            max_push_bytes=config.models.max_push_bytes,
        )
        self.sweeper = Sweeper(config.assets.sweep_interval_s)
        self.container_logs = ContainerLogs(
            runtime, config.docker.namespace, stopping=self.stopping
        )
        self.metrics = Metrics()
        self.webhook_sender = WebhookSender(
            DeliveriesRepo(self.db), secret, config.webhooks, metrics=self.metrics
        )
        # Scheduler <-> Dispatcher (workers/capacity.py): the scheduler scales on the backlog
        # (Demand) and fires `changed`; the dispatcher fills and drains the backlog and sees
        # instances only as Capacity. Neither holds the other.
        self.backlog = backlog = Backlog()
        changed = CapacityChanged()
        self.scheduler = scheduler = Scheduler(
            config,
            deployments_repo,
            runtime,
            self.host,
            _launch_lookup(
                functions_repo,
                self.artifacts,
                ModelServer(image=config.models.default_image, args=config.models.default_args),
            ),
            self.metrics,
            demand=backlog,
            changed=changed,
            pull_auth=_pull_auth(self.registry_credentials),
        )
        forwarder = Forwarder(
            data / "inf", cfg.max_response_bytes, cfg.request_ttl_s, self.assets.put_result
        )
        self.dispatcher = dispatcher = Dispatcher(
            store,
            backlog,
            scheduler,
            forwarder,
            cfg.request_ttl_s,
            self.metrics,
            webhook_due=self.webhook_sender.nudge,
        )
        # The invocation hot path reads versions from memory; any status change clears it.
        versions = CachedVersions(_versions_of(functions_repo, parties_repo))
        changed.subscribe(versions.clear)
        self.gateway = gateway = Gateway(_llm_versions(functions_repo), versions, self.metrics)
        changed.subscribe(gateway.clear)
        changed.subscribe(dispatcher.pump_all)  # instances became ready or went: move requests
        self.shipping = TelemetryShipping(
            config.telemetry,
            _versions_to_ship(functions_repo),
            self.telemetries.endpoint_of,
            self.container_logs,
            lambda: [*self.metrics.families(), *live_gauges(scheduler, backlog)],
            self.metrics,
        )

        def versions_changed() -> None:
            versions.clear()
            gateway.clear()

        def deployments_changed() -> None:
            versions_changed()
            scheduler.deployments_changed()
            self.shipping.nudge()  # start following a deployed version's output at once

        self.deployments = Deployments(
            self.db,
            deployments_repo,
            self.host,
            _version_lookup(functions_repo),
            nca_id,
            reconcile=deployments_changed,
            instances=scheduler.views,
            spec_states=scheduler.spec_states,
            busy=_busy(dispatcher, scheduler),
        )
        self.functions = Functions(
            functions_repo,
            nca_id,
            instances=_active_instances(scheduler, nca_id),
            before_delete=self.deployments.force_remove,
            after_secrets_change=scheduler.life.refresh_secrets,
            check_telemetries=self.telemetries.check_version,
            after_update=versions_changed,
            parties=parties_repo,
        )
        self.authorizations = Authorizations(parties_repo, self.functions, versions_changed)
        self.invocations = Invocations(
            store,
            versions,
            dispatcher,
            default_poll=cfg.default_poll_seconds,
            max_poll=cfg.max_poll_seconds,
            max_queue=cfg.max_queue_per_function,
            new_request_id=forwarder.take_request_id,
            release_request_id=forwarder.cleanup,
            stage_assets=self._stage_assets,
            webhooks=WebhookPolicy(config.webhooks.allow),
            keys=IdempotencyKeys(
                IdempotencyRepo(self.db), dispatcher.ticket, _stored_outcome(store)
            ),
        )
        services = Services(
            keys=self.keys,
            accounts=self.accounts,
            authorizations=self.authorizations,
            artifacts=self.artifacts,
            functions=self.functions,
            assets=self.assets,
            deployments=self.deployments,
            invocations=self.invocations,
            queues=Queues(self.invocations),
            gateway=gateway,
            registry=self.registry,
            telemetries=self.telemetries,
            registry_credentials=self.registry_credentials,
            overview=Overview(
                self.functions,
                self.deployments,
                self.host,
                dispatcher.depth,
                scheduler.held_units,
                scheduler.held_resources,
            ),
            traffic=self.metrics.traffic,
            container_logs=self.container_logs,
            host=self.host,
            health_report=self.health_report,
            metrics_text=self.metrics_text,
            nca_id=nca_id,
            org_name=config.account.org_name,
            token_ttl_s=config.auth.token_ttl_s,
            max_body_bytes=config.server.max_body_bytes,
        )
        await self._run_workers(stack, store, forwarder)
        if cfg.grpc_port:
            await self._serve_grpc(stack)
        return services

    async def _serve_grpc(self, stack: AsyncExitStack) -> None:
        """The gRPC invocation endpoint on server.host (TLS with the server's files)."""
        server = self.config.server
        tls = None
        if server.tls_cert and server.tls_key:
            cert, key = Path(server.tls_cert), Path(server.tls_key)
            tls = (
                await asyncio.to_thread(cert.read_bytes),
                await asyncio.to_thread(key.read_bytes),
            )
        from nvcf_lite.api.grpc_endpoint import GrpcEndpoint  # grpcio only when it is on

        self.grpc = GrpcEndpoint(self.keys, self.invocations)
        stack.push_async_callback(self.grpc.stop)
        await self.grpc.start(server.host, self.config.invocation.grpc_port, tls)

    async def _run_workers(
        self, stack: AsyncExitStack, store: RequestsRepo, forwarder: Forwarder
    ) -> None:
        """Recover what the last run left and start the workers, each stopped by `stack`."""
        await self.assets.recover()
        try:
            pruned = await self.artifacts.prune()
        except OSError as exc:
            log.warning("could not clean up the model store: %s", exc)
        else:
            if pruned:
                log.info("model store: removed %d leftover tree(s), folder(s) or blob(s)", pruned)
        self.sweeper.add("assets", self.assets.sweep)
        stack.push_async_callback(_cancel, asyncio.create_task(self.sweeper.run(), name="sweeper"))
        traffic = self.metrics.traffic  # the console's request-rate samples
        sampler = Sweeper(traffic.interval_s)
        sampler.add("traffic samples", traffic.sample)
        stack.push_async_callback(_cancel, asyncio.create_task(sampler.run(), name="traffic"))
        scheduler, dispatcher = self.scheduler, self.dispatcher
        task = asyncio.create_task(scheduler.run(), name="scheduler")
        keep = self.config.docker.keep_instances_on_shutdown

        async def stop_scheduler() -> None:
            await _cancel(task)
            await scheduler.shutdown(keep)

        stack.push_async_callback(stop_scheduler)
        store.start()
        stack.push_async_callback(store.close)
        forwarder.start()
        # The dispatcher fails requests of versions the scheduler does not know as deployed:
        # let it read the deployments once before the requests of the last run are queued
        # (else they race its first tick and may fail as "not deployed").
        try:
            await scheduler.tick()
        except Exception:
            log.exception("first scheduler pass failed")
        recovered = await dispatcher.recover(_subject_of)
        if recovered:
            log.info("re-queued %d request(s) accepted before the last stop", recovered)
        dispatcher.start()
        ttl = self.config.invocation.request_ttl_s

        async def expire_results(now: float) -> object:
            return len(await store.expire_finished(now - ttl))

        self.sweeper.add("uncollected results", expire_results)
        self._run_webhooks(stack, ttl)
        stack.push_async_callback(dispatcher.close)
        if self.config.telemetry.enabled:
            shipping = self.shipping
            shipper = asyncio.create_task(shipping.run(), name="telemetry")

            async def stop_shipping() -> None:
                await _cancel(shipper)
                await shipping.close()

            stack.push_async_callback(stop_shipping)

    def _run_webhooks(self, stack: AsyncExitStack, ttl: float) -> None:
        """The webhook sender (its first pass sends what the last run left pending) and the
        sweeps of expired idempotency keys and ended deliveries; stopped after the
        dispatcher's grace period, so the deliveries of requests ending in it are recorded."""
        sender = self.webhook_sender
        keys, deliveries = IdempotencyRepo(self.db), DeliveriesRepo(self.db)
        self.sweeper.add("idempotency keys", keys.expire)

        async def expire_deliveries(now: float) -> object:
            return await deliveries.expire(now - ttl)

        self.sweeper.add("webhook deliveries", expire_deliveries)
        task = asyncio.create_task(sender.run(), name="webhooks")

        async def stop_sender() -> None:
            await _cancel(task)
            await sender.close()

        stack.push_async_callback(stop_sender)

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
        return self.metrics.render(live_gauges(self.scheduler, self.backlog))

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


def _version_lookup(functions: FunctionsRepo) -> VersionLookup:
    async def lookup(fid: str, vid: str) -> VersionRef | None:
        version = await functions.get(fid, vid)
        return version_ref(version) if version else None

    return lookup


def _launch_lookup(
    functions: FunctionsRepo, artifacts: Artifacts, model_server: ModelServer
) -> LaunchLookup:
    async def launch(vid: str) -> LaunchInfo | None:
        version = await functions.get_version(vid)
        if version is None:
            return None
        try:
            secrets = await functions.secrets(vid)
        except SealBroken as exc:  # the instance fails with why, like an engine error
            raise RuntimeFailure(str(exc)) from exc
        try:
            mounts = await artifacts.mounts(version)
        except ArtifactMissing as exc:
            return launch_info(version, secrets, unresolved=str(exc), model_server=model_server)
        except OSError as exc:  # building a tree failed (a full disk): say so, not crash
            why = f"the model store could not build the trees to mount: {exc}"
            return launch_info(version, secrets, unresolved=why, model_server=model_server)
        return launch_info(version, secrets, mounts=mounts, model_server=model_server)

    return launch


def _pull_auth(credentials: RegistryCredentials) -> PullAuthLookup:
    async def pull_auth(nca_id: str, image: str) -> RegistryAuth | None:
        try:
            return await credentials.pull_auth(nca_id, image)
        except SealBroken as exc:  # the instance fails with why, like an engine error
            raise RuntimeFailure(str(exc)) from exc

    return pull_auth


def _versions_of(functions: FunctionsRepo, parties: AuthorizedPartiesRepo) -> VersionsOf:
    async def versions_of(fid: str) -> list[VersionInfo]:
        versions = await functions.list_versions(fid)
        shared = await parties.of_function(fid) if versions else {}
        inherited = {p.nca_id for p in shared.get(FUNCTION_LEVEL, ())}
        return [
            VersionInfo(
                v.function_id,
                v.version_id,
                v.name,
                v.status,
                v.rate_limit,
                nca_id=v.nca_id,
                parties=frozenset(inherited | {p.nca_id for p in shared.get(v.version_id, ())}),
                grpc=v.inference_url == "/grpc",
                priority=v.llm_invocation_config.priority if v.llm_invocation_config else None,
            )
            for v in versions
        ]

    return versions_of


def _llm_versions(functions: FunctionsRepo) -> LlmVersions:
    async def llm_versions() -> list[FunctionVersion]:
        return [v for v in await functions.list_every() if v.function_type == FunctionType.LLM]

    return llm_versions


def _versions_to_ship(functions: FunctionsRepo) -> VersionsToShip:
    async def versions() -> list[ShippedVersion]:
        return [
            ShippedVersion(
                nca_id=v.nca_id,
                function_id=v.function_id,
                version_id=v.version_id,
                name=v.name,
                logs_telemetry_id=v.telemetries.logs_telemetry_id,
                metrics_telemetry_id=v.telemetries.metrics_telemetry_id,
            )
            for v in await functions.list_every()
            if v.telemetries is not None and v.status is not FunctionStatus.INACTIVE
        ]

    return versions


def _telemetry_users(functions: FunctionsRepo) -> UsersOf:
    async def users(nca_id: str, telemetry_id: str) -> list[tuple[str, str]]:
        return [
            (v.function_id, v.version_id)
            for v in await functions.list_all(nca_id)
            if v.telemetries is not None and telemetry_id in msgspec.structs.astuple(v.telemetries)
        ]

    return users


def _busy(dispatcher: Dispatcher, scheduler: Scheduler) -> Busy:
    def busy(version_id: str) -> bool:
        """Graceful undeploy waits only for queued or in-flight work (spec §2.2.4)."""
        return dispatcher.depth(version_id) > 0 or any(
            i.in_flight for i in scheduler.instances.values() if i.version_id == version_id
        )

    return busy


def _active_instances(scheduler: Scheduler, nca_id: str) -> InstancesProvider:
    async def active_instances(vid: str) -> list[ActiveInstance]:
        return [active_instance(v, nca_id) for v in scheduler.views(vid)]

    return active_instances


async def _subject_of(record: RequestRecord) -> str:
    return f"apikey:{record.key_id}"


STOP_GRACE_S = 10.0


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it, at most STOP_GRACE_S: a task that swallows
    its cancel (a race inside asyncio.timeout on 3.11) must not hold up the shutdown; it is
    logged with where it stands instead."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_S)
    if not done:
        where = "".join(
            f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}; "
            for frame in task.get_stack()
        )
        log.error(
            "task %s did not stop within %.0f s at shutdown (%s)",
            task.get_name(),
            STOP_GRACE_S,
            where,
        )
    elif not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())


def _open_up(folder: Path) -> None:
    """The container's user may not be root: the request folder must be readable."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)


def _stored_outcome(store: RequestsRepo) -> StoredOutcome:
    async def outcome(request_id: str) -> Outcome | None:
        stored = await store.get(request_id)
        return stored[1] if stored else None

    return outcome


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
