"""The Scheduler: makes running containers match the deployments table and the load.

`tick()` is one level-triggered pass: observe managed containers (adopting ours after a
restart, reaping leftovers), bring each spec to its autoscaled target (start, resume from the
warm pool, drain, pause), and derive each deployed version's status (§3.1) and health info.
`run()` repeats it on an interval, or at once when nudged (a request for a version with no
free instance nudges it, so scale-from-zero starts without waiting for the interval).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from nvcf_lite import logs
from nvcf_lite.config import Config
from nvcf_lite.domain.autoscaling import ScaleState, desired, policy
from nvcf_lite.domain.instance_types import Limits, Resources, total
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.placement import CPU, GpuUnit, Host
from nvcf_lite.domain.scheduling import SpecHistory, next_status, spec_health
from nvcf_lite.errors import GONE, WORKER_ERROR, Invalid
from nvcf_lite.models import (
    Deployment,
    FunctionStatus,
    GpuSpec,
    InstanceState,
    InstanceView,
    PullProgress,
    SpecState,
    new_id,
    now_iso,
)
from nvcf_lite.runtime.base import (
    LABEL_DEPLOYMENT,
    LABEL_FUNCTION_ID,
    LABEL_INSTANCE_ID,
    LABEL_NAMESPACE,
    LABEL_VERSION_ID,
    ContainerInfo,
    ContainerRuntime,
    RuntimeFailure,
)
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.workers.capacity import CapacityChanged, Demand, Refusal
from nvcf_lite.workers.instances import (
    LABEL_GPU,
    LABEL_INSTANCE_TYPE,
    LABEL_SPEC_ID,
    LABEL_UNITS,
    Instance,
    labelled_limits,
)
from nvcf_lite.workers.lifecycle import LaunchLookup, Lifecycle
from nvcf_lite.workers.pulls import PullAuthLookup
from nvcf_lite.workers.tasks import TaskSet

log = logging.getLogger("nvcf_lite.scheduler")


class Scheduler:
    def __init__(
        self,
        config: Config,
        repo: DeploymentsRepo,
        runtime: ContainerRuntime,
        host: Host,
        launch_info: LaunchLookup,
        metrics: Metrics | None = None,
        *,
        demand: Demand,
        changed: CapacityChanged,
        pull_auth: PullAuthLookup | None = None,
    ) -> None:
        self.cfg = config.scheduler
        self.namespace = config.docker.namespace
        self.failed_kept = config.docker.failed_containers_kept
        self._reaping: set[str] = set()  # container ids being removed
        self.repo = repo
        self.runtime = runtime
        self.host = host
        self.history: dict[str, SpecHistory] = {}  # by gpuSpecificationId
        self.scale: dict[str, ScaleState] = {}
        self.targets: dict[str, int] = {}  # by gpuSpecificationId: the autoscaler's last word
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks = TaskSet(log, "scheduler")
        self.life = Lifecycle(
            config,
            runtime,
            launch_info,
            self.history,
            self._changed,
            self._tasks.spawn,
            metrics,
            pull_auth=pull_auth,
        )
        self.instances: dict[str, Instance] = self.life.instances
        self.demand = demand  # requests waiting per version: scaled to, drained before undeploy
        self.changed = changed  # fired when instances or version statuses change
        self.deployed: dict[str, Deployment] = {}  # by version id, as of the last tick
        # when the last tick read the deployments, and when they last changed (a deploy, an
        # undeploy; monotonic): a version deployed since that read is not in `deployed` yet
        self._read_at = self._changed_at = -math.inf
        self.errors: dict[str, str] = {}  # version id -> why it is in ERROR

    # -- public ---------------------------------------------------------------------------

    def nudge(self) -> None:
        self._wake.set()

    def deployments_changed(self) -> None:
        """A deployment was created, changed or removed: tick now, and until that tick no
        request of a version it does not know yet is refused as undeployed."""
        self._changed_at = time.monotonic()
        self.nudge()

    def unreachable(self, inst: Instance, why: str) -> None:
        """UNHEALTHY: the health monitor makes it READY again on the next good probe, or fails
        it (and it is replaced) after `unhealthy_threshold` misses or once its container exits."""
        if inst.state == InstanceState.READY:
            log.warning("instance unreachable: %s", why, extra=inst.log_ids())
            inst.set_state(InstanceState.UNHEALTHY, f"a request could not reach it: {why}")
            self._changed()

    def views(self, version_id: str) -> list[InstanceView]:
        return [
            i.view(self._pull_of(i)) for i in self.instances.values() if i.version_id == version_id
        ]

    def _pull_of(self, inst: Instance) -> PullProgress | None:
        image = inst.awaiting_image
        return self.runtime.pull_progress(image) if image else None

    def held_units(self) -> set[str]:
        """The GPU units an instance holds (until its container is gone)."""
        return {u.unit_id for i in self.instances.values() for u in i.units}

    def held_resources(self) -> Resources:
        """The CPU and memory instances hold (until their containers are gone)."""
        return total(i.limits.resources for i in self.instances.values() if i.limits)

    def spec_states(self, version_id: str) -> list[SpecState]:
        deployment = self.deployed.get(version_id)
        if deployment is None:
            return []
        return [self._spec_state(version_id, spec) for spec in deployment.specs]

    def _spec_state(self, version_id: str, spec: GpuSpec) -> SpecState:
        mine = [
            i
            for i in self.instances.values()
            if i.version_id == version_id and i.spec_id == spec.gpu_specification_id
        ]
        count = {s: sum(1 for i in mine if i.state == s) for s in InstanceState}
        target = self.targets.get(spec.gpu_specification_id, spec.min_instances)
        h = self.history.get(spec.gpu_specification_id) or SpecHistory()
        state, detail = "ok", None
        if h.gave_up:
            state, detail = "error", h.last_error
        elif h.unschedulable:
            state, detail = "unschedulable", h.unschedulable
        elif h.crash_looping:
            state, detail = "crash-looping", h.last_error
        elif (
            count[InstanceState.READY] != target
            or count[InstanceState.STARTING]
            or count[InstanceState.DRAINING]
        ):
            state = "scaling"
        pull = next((p for p in map(self._pull_of, mine) if p is not None), None)
        if pull is not None and detail is None:
            detail = pull.text()
        return SpecState(
            gpu_specification_id=spec.gpu_specification_id,
            target=target,
            ready=count[InstanceState.READY],
            starting=count[InstanceState.STARTING],
            draining=count[InstanceState.DRAINING],
            paused=count[InstanceState.PAUSED],
            state=state,
            detail=detail,
            image_pull=pull,
        )

    # -- Capacity (workers/capacity.py): what the dispatcher sees ---------------------------

    def ready(self, version_id: str) -> list[Instance]:
        return [
            i
            for i in self.instances.values()
            if i.version_id == version_id and i.state == InstanceState.READY
        ]

    def slots(self, inst: Instance) -> int:
        """maxRequestConcurrency of the instance's spec (known before a tick copies it)."""
        deployment = self.deployed.get(inst.version_id)
        for spec in deployment.specs if deployment else ():
            if spec.gpu_specification_id == inst.spec_id:
                return max(1, spec.max_request_concurrency)
        return max(1, inst.slots)

    def refusal(self, version_id: str, queued_at: float) -> Refusal | None:
        failure = self.start_failure(version_id)
        if failure is not None and queued_at < failure[0]:
            # no instance could start for requests already waiting: fail them with why,
            # instead of letting them wait out their lifetime (later ones try again)
            detail = f"no instance could start for this request: {failure[1]}"
            return Refusal(503, WORKER_ERROR, detail, queued_before=failure[0], failed=True)
        error = self.errors.get(version_id)
        if error is not None and version_id in self.deployed:
            return Refusal(503, WORKER_ERROR, f"the function version cannot start: {error}")
        if version_id not in self.deployed and self._changed_at > self._read_at:
            return None  # maybe deployed since the last tick read them (min 0: ACTIVE at once)
        if version_id not in self.deployed:
            detail = f"Function version '{version_id}' is not deployed (undeployed before it ran)"
            return Refusal(404, GONE, detail)
        return None

    def has_instances(self, version_id: str) -> bool:
        return any(i.version_id == version_id for i in self.instances.values())

    def start_failure(self, version_id: str) -> tuple[float, str] | None:
        """(when, why) of the last failed start, while the version has no live instance."""
        deployment = self.deployed.get(version_id)
        if deployment is None:
            return None
        # asked on every pump of the queue: the (rare) failure first, the instances after
        for spec in deployment.specs:
            h = self.history.get(spec.gpu_specification_id)
            if h is not None and h.last_error and h.failed_at:
                if any(i.live for i in self.instances.values() if i.version_id == version_id):
                    return None
                return h.failed_at, h.last_error
        return None

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            # Not asyncio.wait_for: on 3.11 a cancel that arrives as the nudge does is
            # swallowed, and the loop would outlive the shutdown that cancelled it.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.cfg.tick_interval_s)
            finally:
                waiter.cancel()
            self._wake.clear()

    async def tick(self) -> None:
        async with self._lock:
            self._read_at = time.monotonic()
            known = set(self.deployed)
            deployments = {d.deployment_id: d for d in await self.repo.all()}
            statuses = await self.repo.statuses()
            self.deployed = {d.version_id: d for d in deployments.values()}
            # what each instance's container was before the listing: one created while the
            # engine answers (a slow Swarm call) is not missing from it
            before = {i.instance_id: i.container_id for i in self.instances.values()}
            try:
                containers = [
                    c
                    for c in await self.runtime.list_managed()
                    if c.labels.get(LABEL_NAMESPACE, "default") == self.namespace
                ]
            except RuntimeFailure as exc:
                log.warning("cannot list containers: %s", exc)
            else:
                await self._observe(deployments, containers, before)
            # GPUs on nodes that are down or drained take no new instance (Swarm; else none)
            self.host.unavailable = await self.runtime.unavailable_units()
            for deployment in deployments.values():
                status = statuses.get(deployment.version_id)
                if status == FunctionStatus.ERROR and not deployment.draining:
                    self._give_up(deployment)
                    reasons = "; ".join(h.error for h in deployment.health_info)
                    self.errors.setdefault(deployment.version_id, reasons or "deployment failed")
                    continue
                await self._reconcile(deployment)
            await self._report(list(deployments.values()), statuses)
            if set(self.deployed) != known:
                self.changed.fire()  # requests that waited for this tick to see their version

    async def shutdown(self, keep_instances: bool) -> None:
        await self._tasks.cancel()
        if not keep_instances:
            for inst in list(self.instances.values()):
                if inst.container_id:
                    await self.life.safe_remove(inst.container_id)
        await self.life.prober.close()

    # -- observe: adopt, reap, notice exits ----------------------------------------------

    async def _observe(
        self,
        deployments: dict[str, Deployment],
        containers: list[ContainerInfo],
        before: dict[str, str | None] | None = None,
    ) -> None:
        seen: set[str] = set()
        kept: list[ContainerInfo] = []
        for c in containers:
            inst = self.instances.get(c.labels.get(LABEL_INSTANCE_ID, ""))
            seen.add(c.id)
            if inst is None and _kept_for_logs(c, deployments):
                kept.append(c)
            elif inst is None:
                self._adopt_or_reap(c, deployments)
            elif c.state in ("exited", "dead") and inst.live:
                await self.life.fail(inst, await self.life.exit_reason(c.id))
        for inst in list(self.instances.values()):
            known = before is None or before.get(inst.instance_id) == inst.container_id
            gone = known and inst.container_id is not None and inst.container_id not in seen
            if gone and (inst.live or inst.state == InstanceState.PAUSED):
                await self.life.fail(inst, "the container disappeared (removed outside nvcf-lite)")
            if inst.deployment_id not in deployments and not inst.removing:
                self.life.retire(inst, "deployment removed")
        self._prune(kept)

    def _prune(self, kept: list[ContainerInfo]) -> None:
        """Of the stopped containers of failed instances, the newest `failed_kept` of each
        version stay (their logs explain the failure); older ones go."""
        by_version: dict[str, list[ContainerInfo]] = {}
        for c in kept:
            by_version.setdefault(c.labels.get(LABEL_VERSION_ID, ""), []).append(c)
        for rows in by_version.values():
            rows.sort(key=lambda c: c.created, reverse=True)
            for c in rows[self.failed_kept :]:
                self._reap(c, "an older failed instance")

    def _reap(self, c: ContainerInfo, why: str) -> None:
        if c.id in self._reaping:
            return
        self._reaping.add(c.id)
        about = logs.ids(
            function_id=c.labels.get(LABEL_FUNCTION_ID),
            version_id=c.labels.get(LABEL_VERSION_ID),
            instance_id=c.labels.get(LABEL_INSTANCE_ID),
        )
        log.info("removing container %s (%s): %s", c.name, c.state, why, extra=about)

        async def remove() -> None:
            try:
                await self.life.safe_remove(c.id, about=about)
            finally:
                self._reaping.discard(c.id)

        self._tasks.spawn(remove())

    def _adopt_or_reap(self, c: ContainerInfo, deployments: dict[str, Deployment]) -> None:
        deployment = deployments.get(c.labels.get(LABEL_DEPLOYMENT, ""))
        spec_id = c.labels.get(LABEL_SPEC_ID, "")
        spec = None
        if deployment is not None and not deployment.draining:
            spec = next((s for s in deployment.specs if s.gpu_specification_id == spec_id), None)
        if deployment is None or spec is None or c.state not in ("running", "paused"):
            self._reap(c, "a leftover container")
            return
        wanted = c.labels.get(LABEL_UNITS, "").split(",")
        instance_type = c.labels.get(LABEL_INSTANCE_TYPE, spec.instance_type)
        inst = Instance(
            instance_id=c.labels[LABEL_INSTANCE_ID],
            deployment_id=deployment.deployment_id,
            function_id=c.labels.get(LABEL_FUNCTION_ID, deployment.function_id),
            version_id=c.labels.get(LABEL_VERSION_ID, deployment.version_id),
            spec_id=spec_id,
            gpu=c.labels.get(LABEL_GPU, spec.gpu),
            instance_type=instance_type,
            units=[u for u in self.host.units if u.unit_id in wanted],
            limits=labelled_limits(c.labels) or self.host.limits(instance_type),
            container_id=c.id,
        )
        log.info(
            "adopting running container %s as instance %s",
            c.name,
            inst.instance_id,
            extra=inst.log_ids(),
        )
        self.life.adopt(inst)

    # -- reconcile: reach each spec's target ---------------------------------------------

    async def _reconcile(self, deployment: Deployment) -> None:
        mine = [i for i in self.instances.values() if i.deployment_id == deployment.deployment_id]
        for inst in mine:
            if inst.state == InstanceState.DRAINING and inst.in_flight == 0:
                self.life.retire(inst, inst.error or "drained", keep_state=True)
        if deployment.draining:
            if self.demand.depth(deployment.version_id):
                return  # graceful: queued work is still served before the instances go
            for inst in mine:
                if not inst.removing and inst.state != InstanceState.DRAINING:
                    self.life.drain(inst, "undeployed")
            if not self.instances.keys() & {i.instance_id for i in mine}:
                await self.repo.delete_now(deployment.deployment_id)
            return
        queued = self.demand.depth(deployment.version_id)
        share = -(-queued // len(deployment.specs)) if queued else 0
        for spec in deployment.specs:
            await self._reconcile_spec(deployment, spec, mine, share)

    async def _reconcile_spec(
        self, deployment: Deployment, spec: GpuSpec, mine: list[Instance], queued: int
    ) -> None:
        ours = [i for i in mine if i.spec_id == spec.gpu_specification_id]
        live = [i for i in ours if i.live]
        for inst in live:
            inst.slots = spec.max_request_concurrency
        demand = queued + sum(i.in_flight for i in live)
        state = self.scale.setdefault(spec.gpu_specification_id, ScaleState())
        target = desired(
            spec,
            len(live),
            demand,
            state,
            time.monotonic(),
            policy(spec, self.cfg.scale_down_idle_s),
        )
        self.targets[spec.gpu_specification_id] = target
        paused = [i for i in ours if i.state == InstanceState.PAUSED and not i.removing]
        if len(live) < target:
            for inst in paused[: target - len(live)]:
                self.life.resume(inst)
            missing = target - len(live) - min(len(paused), target - len(live))
            if missing > 0:
                self._scale_up(deployment, spec, missing)
        elif len(live) > target:
            self._scale_down(spec, live, len(live) - target)
        keep_s = self._warm_pool_s(spec)
        for inst in paused:
            if inst.paused_at is not None and time.monotonic() - inst.paused_at > keep_s:
                self.life.retire(inst, "warm pool time over")

    def _warm_pool_s(self, spec: GpuSpec) -> float:
        if spec.warm_pool_seconds is not None:
            return spec.warm_pool_seconds
        return self.cfg.warm_pool_s

    def _scale_up(self, deployment: Deployment, spec: GpuSpec, missing: int) -> None:
        history = self.history.setdefault(spec.gpu_specification_id, SpecHistory())
        if history.gave_up or time.monotonic() < history.next_attempt:
            return
        try:
            units_each = self.host.resolve(spec.gpu, spec.instance_type)[2]
        except Invalid as exc:  # the host changed since the deploy (config, GPUs): say so
            history.unschedulable = f"cannot be placed on this host now: {exc.detail}"
            return
        limits = self.host.limits(spec.instance_type)
        for _ in range(missing):
            units = self._place(spec.gpu, units_each)
            short = self._short(spec.instance_type, limits) if units is not None else None
            if units is None or short:
                history.unschedulable = short or (
                    f"waiting for capacity: an instance needs {units_each or 1} free "
                    f"{spec.gpu} unit(s) and none are free now; running what fits"
                )
                return
            history.unschedulable = None
            self.life.start(
                Instance(
                    instance_id=new_id(),
                    deployment_id=deployment.deployment_id,
                    function_id=deployment.function_id,
                    version_id=deployment.version_id,
                    spec_id=spec.gpu_specification_id,
                    gpu=spec.gpu,
                    instance_type=spec.instance_type,
                    units=units,
                    limits=limits,
                )
            )

    def _short(self, instance_type: str, limits: Limits | None) -> str | None:
        """Why the CPU or memory for one more instance is not free (None: it is); a paused
        warm-pool instance then gives back what it holds, for the next pass."""
        if limits is None or self.host.sizing is None:
            return None
        short = self.host.sizing.shortfall(instance_type, limits, self.held_resources())
        if short:
            idle = [i for i in self.instances.values() if i.state == InstanceState.PAUSED]
            for inst in idle:
                if not inst.removing:
                    self.life.retire(inst, "its CPU and memory are needed elsewhere")
                    break
        return short

    def _place(self, gpu: str, units: int) -> list[GpuUnit] | None:
        if gpu == CPU:
            running = sum(1 for i in self.instances.values() if i.gpu == CPU)
            placed: list[GpuUnit] | None = [] if self.host.cpu_free(running) else None
        else:
            used = {u.unit_id for i in self.instances.values() for u in i.units}
            placed = self.host.place(gpu, units, used)
        if placed is None:  # a paused warm-pool instance gives its place to live demand
            idle = [i for i in self.instances.values() if i.state == InstanceState.PAUSED]
            for inst in idle:
                if inst.gpu == gpu and not inst.removing:
                    self.life.retire(inst, "its GPU is needed elsewhere")
                    break
        return placed

    def _scale_down(self, spec: GpuSpec, live: list[Instance], extra: int) -> None:
        """Never an instance still starting; unhealthy first, then the least busy."""
        ready = [i for i in live if i.state != InstanceState.STARTING]
        ready.sort(key=lambda i: (i.state != InstanceState.UNHEALTHY, i.in_flight))
        keep_s = self._warm_pool_s(spec)
        for inst in ready[:extra]:
            if keep_s > 0 and inst.in_flight == 0 and inst.state == InstanceState.READY:
                self._tasks.spawn(self.life.pause(inst))
            else:
                self.life.drain(inst, "scaled down")

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
            for d in deployments:
                if d.version_id in changes:
                    about = logs.ids(function_id=d.function_id, version_id=d.version_id)
                    log.info("version status %s", changes[d.version_id].value, extra=about)
            self.changed.fire()

    def _give_up(self, deployment: Deployment) -> None:
        """ERROR is final until an undeploy: stop retrying and remove what is left."""
        for spec in deployment.specs:
            self.history.setdefault(spec.gpu_specification_id, SpecHistory()).gave_up = True
        for inst in list(self.instances.values()):
            if inst.deployment_id == deployment.deployment_id and not inst.removing:
                self.life.retire(inst, "deployment in ERROR")

    def _changed(self) -> None:
        self.nudge()
        self.changed.fire()


def _kept_for_logs(c: ContainerInfo, deployments: dict[str, Deployment]) -> bool:
    """A stopped container of a deployment that is still on: a failed instance's, kept."""
    deployment = deployments.get(c.labels.get(LABEL_DEPLOYMENT, ""))
    return c.state in ("exited", "dead") and deployment is not None and not deployment.draining
