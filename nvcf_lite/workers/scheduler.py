"""The Scheduler: makes running containers match the deployments table.

`tick()` is one level-triggered pass: observe managed containers (adopting ours after a
restart, reaping leftovers), start or remove instances to reach each spec's target, and
derive each deployed version's status (§3.1) and health info. `run()` repeats it on an
interval or at once when nudged. Launches and health probes run as per-instance tasks.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from nvcf_lite.config import Config
from nvcf_lite.domain.placement import CPU, GpuUnit, Host
from nvcf_lite.domain.registry import local_image_candidates
from nvcf_lite.domain.scheduling import STABLE_AFTER_S, SpecHistory, next_status, spec_health
from nvcf_lite.models import (
    Deployment,
    FunctionStatus,
    GpuSpec,
    InstanceState,
    InstanceView,
    new_id,
    now_iso,
)
from nvcf_lite.runtime.base import (
    LABEL_DEPLOYMENT,
    LABEL_FUNCTION_ID,
    LABEL_INSTANCE_ID,
    LABEL_VERSION_ID,
    ContainerInfo,
    ContainerRuntime,
    RuntimeFailure,
)
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.workers.instances import (
    LABEL_GPU,
    LABEL_INSTANCE_TYPE,
    LABEL_NAMESPACE,
    LABEL_SPEC_ID,
    LABEL_UNITS,
    Instance,
    LaunchInfo,
    Prober,
    container_spec,
    wait_ready,
)

log = logging.getLogger("nvcf_lite.scheduler")

LaunchLookup = Callable[[str], Awaitable[LaunchInfo | None]]


class Scheduler:
    def __init__(
        self,
        config: Config,
        repo: DeploymentsRepo,
        runtime: ContainerRuntime,
        host: Host,
        launch_info: LaunchLookup,
    ) -> None:
        self.cfg = config.scheduler
        self.docker_cfg = config.docker
        self.repo = repo
        self.runtime = runtime
        self.host = host
        self.launch_info = launch_info
        self.instances: dict[str, Instance] = {}
        self.history: dict[str, SpecHistory] = {}  # by gpuSpecificationId
        self.prober = Prober()
        self.data = Path(config.store.data_dir)
        self.inf_dir = self.data / "inf"
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_change: Callable[[], None] = lambda: None
        self.queue_depth: Callable[[str], int] = lambda version_id: 0
        self.deployed: dict[str, Deployment] = {}  # by version id, as of the last tick
        self.errors: dict[str, str] = {}  # version id -> why it is in ERROR

    # -- public ---------------------------------------------------------------------------

    def nudge(self) -> None:
        self._wake.set()

    def views(self, version_id: str) -> list[InstanceView]:
        return [i.view() for i in self.instances.values() if i.version_id == version_id]

    def ready_instances(self, version_id: str) -> list[Instance]:
        return [
            i
            for i in self.instances.values()
            if i.version_id == version_id and i.state == InstanceState.READY
        ]

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.tick_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def tick(self) -> None:
        async with self._lock:
            deployments = {d.deployment_id: d for d in await self.repo.all()}
            statuses = await self.repo.statuses()
            self.deployed = {d.version_id: d for d in deployments.values()}
            try:
                ns = self.docker_cfg.namespace
                containers = [
                    c
                    for c in await self.runtime.list_managed()
                    if c.labels.get(LABEL_NAMESPACE, "default") == ns
                ]
            except RuntimeFailure as exc:
                log.warning("cannot list containers: %s", exc)
            else:
                await self._observe(deployments, containers)
            for deployment in deployments.values():
                status = statuses.get(deployment.version_id)
                if status == FunctionStatus.ERROR and not deployment.draining:
                    self._give_up(deployment)
                    reasons = "; ".join(h.error for h in deployment.health_info)
                    self.errors.setdefault(deployment.version_id, reasons or "deployment failed")
                    continue
                await self._reconcile(deployment)
            await self._report(list(deployments.values()), statuses)

    async def shutdown(self, keep_instances: bool) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not keep_instances:
            for inst in list(self.instances.values()):
                if inst.container_id:
                    await self._safe_remove(inst.container_id)
        await self.prober.close()

    # -- observe: adopt, reap, notice exits ----------------------------------------------

    async def _observe(
        self, deployments: dict[str, Deployment], containers: list[ContainerInfo]
    ) -> None:
        seen: set[str] = set()
        for c in containers:
            iid = c.labels.get(LABEL_INSTANCE_ID, "")
            inst = self.instances.get(iid)
            seen.add(c.id)
            if inst is None:
                await self._adopt_or_reap(c, deployments)
            elif c.state in ("exited", "dead") and inst.live:
                await self._fail(inst, await self._exit_reason(c.id))
        for inst in list(self.instances.values()):
            gone = inst.container_id is not None and inst.container_id not in seen
            if gone and inst.live:
                await self._fail(inst, "the container disappeared (removed outside nvcf-lite)")
            if inst.deployment_id not in deployments and inst.live:
                self._retire(inst, "deployment removed")

    async def _adopt_or_reap(self, c: ContainerInfo, deployments: dict[str, Deployment]) -> None:
        deployment = deployments.get(c.labels.get(LABEL_DEPLOYMENT, ""))
        spec_id = c.labels.get(LABEL_SPEC_ID, "")
        spec = (
            next((s for s in deployment.specs if s.gpu_specification_id == spec_id), None)
            if deployment
            else None
        )
        if (
            deployment is None
            or spec is None
            or deployment.draining
            or c.state not in ("running", "paused")
        ):
            log.info("removing leftover container %s (%s)", c.name, c.state)
            self._spawn(self._safe_remove(c.id))
            return
        units = [
            u for u in self.host.units if u.unit_id in c.labels.get(LABEL_UNITS, "").split(",")
        ]
        inst = Instance(
            instance_id=c.labels[LABEL_INSTANCE_ID],
            deployment_id=deployment.deployment_id,
            function_id=c.labels.get(LABEL_FUNCTION_ID, deployment.function_id),
            version_id=c.labels.get(LABEL_VERSION_ID, deployment.version_id),
            spec_id=spec_id,
            gpu=c.labels.get(LABEL_GPU, spec.gpu),
            instance_type=c.labels.get(LABEL_INSTANCE_TYPE, spec.instance_type),
            units=units,
            container_id=c.id,
        )
        self.instances[inst.instance_id] = inst
        log.info("adopted running container %s as instance %s", c.name, inst.instance_id)
        inst.task = self._spawn(self._adopt(inst))

    async def _adopt(self, inst: Instance) -> None:
        info = await self.launch_info(inst.version_id)
        c = await self.runtime.inspect(inst.container_id or "")
        if info is None or c is None:
            self._retire(inst, "function version gone")
            return
        if c.state == "paused":
            await self.runtime.unpause(c.id)
        inst.function_name, inst.inference_url = info.name, info.inference_url
        inst.host_port = c.host_ports.get(info.inference_port)
        inst.health_port = c.host_ports.get(info.health.port)
        await self._watch(inst, info)

    async def _exit_reason(self, container_id: str) -> str:
        c = await self.runtime.inspect(container_id)
        logs = (await self.runtime.logs_tail(container_id, 10)).strip()
        code = c.exit_code if c else None
        what = "was killed: out of memory" if c and c.oom_killed else f"exited with code {code}"
        return f"container {what}" + (f"; last log lines:\n{logs}" if logs else "")

    # -- reconcile: reach each spec's target ---------------------------------------------

    async def _reconcile(self, deployment: Deployment) -> None:
        mine = [i for i in self.instances.values() if i.deployment_id == deployment.deployment_id]
        if deployment.draining:
            if self.queue_depth(deployment.version_id):
                return  # graceful: queued work is still served before the instances go
            for inst in mine:
                if inst.in_flight == 0 and inst.state != InstanceState.DRAINING:
                    self._retire(inst, "undeployed")
            if not any(i.live or i.state == InstanceState.DRAINING for i in mine):
                await self.repo.delete_now(deployment.deployment_id)
            return
        for spec in deployment.specs:
            live = [i for i in mine if i.spec_id == spec.gpu_specification_id and i.live]
            for inst in live:
                inst.slots = spec.max_request_concurrency
            target = self.target(spec, live)
            if len(live) < target:
                await self._scale_up(deployment, spec, target - len(live))
            elif len(live) > target:
                self._scale_down(live, len(live) - target)

    def target(self, spec: GpuSpec, live: list[Instance]) -> int:
        """How many instances a spec should have now (the autoscaler refines this)."""
        return spec.min_instances

    async def _scale_up(self, deployment: Deployment, spec: GpuSpec, missing: int) -> None:
        history = self.history.setdefault(spec.gpu_specification_id, SpecHistory())
        if history.gave_up or time.monotonic() < history.next_attempt:
            return
        units_each = self.host.resolve(spec.gpu, spec.instance_type)[2]
        for _ in range(missing):
            units = self._place(spec.gpu, units_each)
            if units is None:
                history.unschedulable = (
                    f"waiting for capacity: an instance needs {units_each or 1} free "
                    f"{spec.gpu} unit(s) and none are free now"
                )
                return
            history.unschedulable = None
            inst = Instance(
                instance_id=new_id(),
                deployment_id=deployment.deployment_id,
                function_id=deployment.function_id,
                version_id=deployment.version_id,
                spec_id=spec.gpu_specification_id,
                gpu=spec.gpu,
                instance_type=spec.instance_type,
                units=units,
            )
            self.instances[inst.instance_id] = inst
            inst.task = self._spawn(self._launch(inst))

    def _place(self, gpu: str, units: int) -> list[GpuUnit] | None:
        if gpu == CPU:
            running = sum(1 for i in self.instances.values() if i.gpu == CPU)
            return [] if self.host.cpu_free(running) else None
        used = {u.unit_id for i in self.instances.values() for u in i.units}
        return self.host.place(gpu, units, used)

    def _scale_down(self, live: list[Instance], extra: int) -> None:
        order = {InstanceState.UNHEALTHY: 0, InstanceState.STARTING: 1, InstanceState.READY: 2}
        for inst in sorted(live, key=lambda i: (order.get(i.state, 3), i.in_flight))[:extra]:
            if inst.in_flight == 0:
                self._retire(inst, "scaled down")

    # -- one instance's life ------------------------------------------------------------

    async def _launch(self, inst: Instance) -> None:
        info = await self.launch_info(inst.version_id)
        if info is None:
            self._retire(inst, "function version gone")
            return
        try:
            secrets = self._write_secrets(inst, info)
            self.inf_dir.mkdir(parents=True, exist_ok=True)
            spec = container_spec(inst, info, self.docker_cfg, secrets, self.inf_dir)
            image = await self._local_image(info.image)
            await self.runtime.ensure_image(image)
            c = await self.runtime.create_and_start(msgspec.structs.replace(spec, image=image))
        except RuntimeFailure as exc:
            await self._fail(inst, str(exc))
            return
        inst.container_id = c.id
        inst.function_name, inst.inference_url = info.name, info.inference_url
        inst.host_port = c.host_ports.get(info.inference_port)
        inst.health_port = c.host_ports.get(info.health.port)
        await self._watch(inst, info)

    async def _local_image(self, image: str) -> str:
        """The stored image, or its local twin without the nvcr.io/ prefix ngcsdk adds."""
        for ref in local_image_candidates(image):
            if await self.runtime.image_exists(ref):
                return ref
        return image

    async def _watch(self, inst: Instance, info: LaunchInfo) -> None:
        async def exited() -> str | None:
            c = await self.runtime.inspect(inst.container_id or "")
            if c is None:
                return "the container disappeared"
            return await self._exit_reason(c.id) if c.state in ("exited", "dead") else None

        port = inst.health_port
        if port is None:
            why = await exited() or f"port {info.health.port} was not published by Docker"
            await self._fail(inst, why)
            return

        reason = await wait_ready(
            self.prober, port, info.health, self.cfg.startup_deadline_s, exited
        )
        if reason:
            await self._fail(inst, reason)
            return
        inst.set_state(InstanceState.READY)
        history = self.history.setdefault(inst.spec_id, SpecHistory())
        history.ready()
        ready_at = time.monotonic()
        log.info(
            "instance %s of %s ready after %.3f s",
            inst.instance_id,
            info.name,
            time.monotonic() - inst.started,
        )
        self._changed()
        misses = 0
        while inst.state in (InstanceState.READY, InstanceState.UNHEALTHY):
            await asyncio.sleep(self.cfg.health_interval_s)
            ok = await self.prober.probe(port, info.health) == info.health.expected_status
            misses = 0 if ok else misses + 1
            if ok and history.failures and time.monotonic() - ready_at >= STABLE_AFTER_S:
                history.stable()
                self._changed()
            if ok and inst.state == InstanceState.UNHEALTHY:
                inst.set_state(InstanceState.READY)
                self._changed()
            elif misses and inst.state == InstanceState.READY:
                inst.set_state(InstanceState.UNHEALTHY, "health check failing")
                self._changed()
            if misses >= self.cfg.unhealthy_threshold:
                reason = (
                    await exited() or f"stopped answering health checks ({misses} misses in a row)"
                )
                await self._fail(inst, reason)
                return

    async def _fail(self, inst: Instance, reason: str) -> None:
        if not inst.live:
            return
        log.warning("instance %s failed: %s", inst.instance_id, reason)
        inst.set_state(InstanceState.FAILED, reason)
        history = self.history.setdefault(inst.spec_id, SpecHistory())
        history.failed(reason, self.cfg.restart_backoff_initial_s, self.cfg.restart_backoff_max_s)
        self._retire(inst, reason, keep_state=True)

    def _retire(self, inst: Instance, reason: str, keep_state: bool = False) -> None:
        """Remove the container (in the background); the units stay taken until it is gone."""
        if not keep_state:
            inst.set_state(InstanceState.DRAINING, reason)
        if inst.task is not None and inst.task is not asyncio.current_task():
            inst.task.cancel()
        self._spawn(self._remove(inst))
        self._changed()

    async def _remove(self, inst: Instance) -> None:
        if inst.container_id:
            await self._safe_remove(inst.container_id)
        shutil.rmtree(self.data / "secrets" / inst.instance_id, ignore_errors=True)
        self.instances.pop(inst.instance_id, None)
        self._changed()

    async def _safe_remove(self, container_id: str) -> None:
        try:
            await self.runtime.remove(container_id, stop_timeout_s=self.docker_cfg.stop_timeout_s)
        except RuntimeFailure as exc:
            log.warning("could not remove container %s: %s", container_id[:12], exc)

    def _write_secrets(self, inst: Instance, info: LaunchInfo) -> Path | None:
        if not info.secrets:
            return None
        folder = self.data / "secrets" / inst.instance_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / "secrets.json"
        path.write_bytes(msgspec.json.encode(info.secrets))
        path.chmod(0o644)  # the container's user may not be root; the folder is 0700
        return path

    # -- report: version status and health info -------------------------------------------

    async def _report(
        self, deployments: list[Deployment], statuses: dict[str, FunctionStatus]
    ) -> None:
        changes: dict[str, FunctionStatus] = {}
        now = now_iso()
        for d in deployments:
            if d.draining or d.version_id not in statuses:
                continue
            views = [
                i.view() for i in self.instances.values() if i.deployment_id == d.deployment_id
            ]
            current = statuses[d.version_id]
            new = next_status(current, d.specs, views, self.history, self.cfg.deploy_attempts)
            if new != current:
                changes[d.version_id] = new
            info = spec_health(d.specs, self.history)
            if new == FunctionStatus.ERROR:
                self._give_up(d)
                self.errors[d.version_id] = "; ".join(h.error for h in info) or "deployment failed"
            if info != d.health_info:
                await self.repo.set_health_info(d.deployment_id, info, now)
        if changes:
            await self.repo.set_statuses(changes, now)
            log.info("status changes: %s", {k[:8]: v.value for k, v in changes.items()})

    def _give_up(self, deployment: Deployment) -> None:
        """ERROR is final until an undeploy: stop retrying and remove what is left."""
        for spec in deployment.specs:
            self.history.setdefault(spec.gpu_specification_id, SpecHistory()).gave_up = True
        for inst in list(self.instances.values()):
            if inst.deployment_id == deployment.deployment_id and inst.live:
                self._retire(inst, "deployment in ERROR")

    def _changed(self) -> None:
        self.nudge()
        self.on_change()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler task failed", exc_info=task.exception())
