"""One instance's life: launch (pull, create, start), readiness, health, pause, failure, removal.

Every step is timed on the Instance so a cold start can be explained: image pull, container
create+start, time to the first healthy probe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from nvcf_lite import logs
from nvcf_lite.config import Config
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.scheduling import STABLE_AFTER_S, SpecHistory
from nvcf_lite.models import InstanceState
from nvcf_lite.runtime.base import ContainerInfo, ContainerRuntime, RuntimeFailure
from nvcf_lite.workers.instances import Instance, LaunchInfo, Prober, container_spec, wait_ready
from nvcf_lite.workers.pulls import PullAuthLookup, Pulls

# A secrets update is used by launches for this long (they read the store before writing).
FRESH_S = 60.0
log = logging.getLogger("nvcf_lite.scheduler")

LaunchLookup = Callable[[str], Awaitable[LaunchInfo | None]]


class Lifecycle:
    def __init__(
        self,
        config: Config,
        runtime: ContainerRuntime,
        launch_info: LaunchLookup,
        history: dict[str, SpecHistory],
        changed: Callable[[], None],
        spawn: Callable[[Awaitable[None]], asyncio.Task[None]],
        metrics: Metrics | None = None,
        *,
        pull_auth: PullAuthLookup | None = None,
    ) -> None:
        self.cfg = config.scheduler
        self.pulls = Pulls(runtime, config.registry.mirrors, pull_auth)
        self.metrics = metrics or Metrics()
        self.docker_cfg = config.docker
        self.runtime = runtime
        self.launch_info = launch_info
        self.history = history
        self.changed = changed
        self.spawn = spawn
        self.prober = Prober()
        self.data = config.data_path
        self.inf_dir = self.data / "inf"
        # in memory and outside data_dir: no secret value on disk in plain text (config.py)
        self.secrets_root = config.secrets_path
        self.instances: dict[str, Instance] = {}
        # Secret values set after a version's launch info was read, and the lock that orders a
        # launch's secrets.json write against an update's rewrite (else a start racing an
        # update could keep the old values).
        self._fresh_secrets: dict[str, tuple[float, dict[str, object]]] = {}
        self._secrets_lock = threading.Lock()

    def start(self, inst: Instance) -> None:
        self.instances[inst.instance_id] = inst
        inst.task = self.spawn(self._launch(inst))

    def adopt(self, inst: Instance) -> None:
        self.instances[inst.instance_id] = inst
        inst.task = self.spawn(self._adopt(inst))

    def resume(self, inst: Instance) -> None:
        """Warm pool: unpause and probe again; the next cold start is an unpause."""
        inst.set_state(InstanceState.STARTING)
        inst.cold_kind = "paused"
        inst.launch_t0 = time.monotonic()
        inst.first_byte_s = None
        inst.task = self.spawn(self._resume(inst))

    async def pause(self, inst: Instance) -> None:
        inst.set_state(InstanceState.PAUSED, "idle (warm pool)")
        inst.paused_at = time.monotonic()
        if inst.task is not None and inst.task is not asyncio.current_task():
            inst.task.cancel()
        try:
            await self.runtime.pause(inst.container_id or "")
        except RuntimeFailure as exc:
            self.retire(inst, f"could not pause: {exc}")
        self.changed()

    # -- launch and watch -------------------------------------------------------------

    async def _launch(self, inst: Instance) -> None:
        logs.bind(**inst.log_ids())  # this task's lines (pulls, engine errors) carry its ids
        try:
            info = await self.launch_info(inst.version_id)
        except RuntimeFailure as exc:  # its secrets do not open
            await self.fail(inst, str(exc))
            return
        if info is None:
            self.retire(inst, "function version gone")
            return
        if info.unresolved:  # no retry can help: the version goes to ERROR at once
            await self.fail(inst, info.unresolved, permanent=True)
            return
        inst.launch_t0 = time.monotonic()
        try:
            secrets = await asyncio.to_thread(self._write_secrets, inst, info)
            spec = container_spec(inst, info, self.docker_cfg, secrets, self.inf_dir)
            image, local = await self.pulls.resolve(info.image)
            inst.image = image
            # A pull counts against no deadline: it fails only when it stops progressing.
            if not local and await self.pulls.pull(info, image):
                inst.pull_s = time.monotonic() - inst.launch_t0
            t0 = time.monotonic()
            # names only: env values and secrets never reach the log
            log.debug("creating container %s from %s (env %s)", spec.name, image, sorted(spec.env))
            c = await self.runtime.create_and_start(msgspec.structs.replace(spec, image=image))
            inst.start_s = time.monotonic() - t0
        except RuntimeFailure as exc:
            await self.fail(inst, str(exc))
            return
        inst.container_id = c.id
        _attach(inst, info, c)
        await self._watch(inst, info)

    async def _adopt(self, inst: Instance) -> None:
        logs.bind(**inst.log_ids())
        info = await self.launch_info(inst.version_id)
        c = await self.runtime.inspect(inst.container_id or "")
        if info is None or c is None:
            self.retire(inst, "function version gone")
            return
        if c.state == "paused":
            await self.runtime.unpause(c.id)
        inst.cold_kind = "adopted"  # started by an earlier process: no start phases to time
        _attach(inst, info, c)
        await self._watch(inst, info)

    async def _resume(self, inst: Instance) -> None:
        logs.bind(**inst.log_ids())
        info = await self.launch_info(inst.version_id)
        if info is None:
            self.retire(inst, "function version gone")
            return
        try:
            t0 = time.monotonic()
            await self.runtime.unpause(inst.container_id or "")
            inst.start_s, inst.pull_s = time.monotonic() - t0, 0.0
        except RuntimeFailure as exc:
            await self.fail(inst, f"could not unpause: {exc}")
            return
        await self._watch(inst, info)

    async def exit_reason(self, container_id: str) -> str:
        c = await self.runtime.inspect(container_id)
        lost = c is not None and c.state == "dead" and c.node is not None  # its logs with it
        logs = "" if lost else (await self.runtime.logs_tail(container_id, 10)).strip()
        code = c.exit_code if c else None
        what = "was killed: out of memory" if c and c.oom_killed else f"exited with code {code}"
        if c is not None and c.state == "dead" and c.error:
            what = f"is gone: {c.error}"  # e.g. its Swarm node is down: no exit code to tell
        return f"container {what}" + (f"; last log lines:\n{logs}" if logs else "")

    async def _watch(self, inst: Instance, info: LaunchInfo) -> None:
        async def exited() -> str | None:
            c = await self.runtime.inspect(inst.container_id or "")
            if c is None:
                return "the container disappeared"
            return await self.exit_reason(c.id) if c.state in ("exited", "dead") else None

        port = inst.health_port
        if port is None:
            await self.fail(inst, await exited() or f"port {info.health.port} was not published")
            return
        t0 = time.monotonic()
        reason = await wait_ready(
            self.prober, port, info.health, self.cfg.startup_deadline_s, exited, inst.address
        )
        if reason:
            await self.fail(inst, reason)
            return
        inst.healthy_s = time.monotonic() - t0
        inst.ready_mono = time.monotonic()
        inst.set_state(InstanceState.READY)
        if inst.cold_kind != "adopted":
            observe = self.metrics.instance_start.observe
            if inst.cold_kind == "cold":
                observe(inst.pull_s, inst.cold_kind, "image_pull")
            observe(inst.start_s, inst.cold_kind, "container_start")
            observe(inst.healthy_s, inst.cold_kind, "first_healthy")
        history = self.history.setdefault(inst.spec_id, SpecHistory())
        history.ready()
        log.info(
            "instance of %s ready (%s start: pull %.3f s, create+start %.3f s, healthy %.3f s)",
            info.name,
            inst.cold_kind,
            inst.pull_s,
            inst.start_s,
            inst.healthy_s,
            extra=inst.log_ids(),
        )
        self.changed()
        await self._monitor(inst, info, port, history, exited)

    async def _monitor(
        self,
        inst: Instance,
        info: LaunchInfo,
        port: int,
        history: SpecHistory,
        exited: Callable[[], Awaitable[str | None]],
    ) -> None:
        misses = 0
        while inst.state in (InstanceState.READY, InstanceState.UNHEALTHY):
            await asyncio.sleep(self.cfg.health_interval_s)
            if inst.state not in (InstanceState.READY, InstanceState.UNHEALTHY):
                return
            status = await self.prober.probe(port, info.health, inst.address)
            ok = status == info.health.expected_status
            misses = 0 if ok else misses + 1
            if ok and history.failures and time.monotonic() - inst.ready_mono >= STABLE_AFTER_S:
                history.stable()
                self.changed()
            if ok and inst.state == InstanceState.UNHEALTHY:
                inst.set_state(InstanceState.READY)
                self.changed()
            elif misses and inst.state == InstanceState.READY:
                inst.set_state(InstanceState.UNHEALTHY, "health check failing")
                self.changed()
            if misses >= self.cfg.unhealthy_threshold:
                on = f" on node {inst.node}" if inst.node else ""
                why = await exited() or (
                    f"stopped answering health checks{on} ({misses} misses in a row)"
                )
                await self.fail(inst, why)
                return

    # -- the end ------------------------------------------------------------------------

    async def fail(self, inst: Instance, reason: str, *, permanent: bool = False) -> None:
        """The instance failed; `permanent`: so will every start of its version."""
        if not inst.live and inst.state != InstanceState.PAUSED:
            return
        log.warning("instance failed: %s", reason, extra=inst.log_ids())
        self.metrics.instance_failures.inc(inst.function_id, inst.version_id)
        inst.set_state(InstanceState.FAILED, reason)
        history = self.history.setdefault(inst.spec_id, SpecHistory())
        backoff = self.cfg.restart_backoff_initial_s, self.cfg.restart_backoff_max_s
        # one that was ready and died (a crash, the engine restarted) is no failed start: the
        # requests waiting for it wait for its replacement
        history.failed(reason, *backoff, start=inst.ready_mono == 0.0)
        history.permanent = history.permanent or permanent
        self.retire(inst, reason, keep_state=True)

    def drain(self, inst: Instance, reason: str) -> None:
        """No new requests; removed once its in-flight requests are done."""
        inst.set_state(InstanceState.DRAINING, reason)
        if inst.in_flight == 0:
            self.retire(inst, reason, keep_state=True)
        self.changed()

    def retire(self, inst: Instance, reason: str, keep_state: bool = False) -> None:
        """Remove the container (in the background); the units stay taken until it is gone."""
        if inst.removing:
            return
        inst.removing = True
        if not keep_state:
            inst.set_state(InstanceState.DRAINING, reason)
        if inst.task is not None and inst.task is not asyncio.current_task():
            inst.task.cancel()
        self.spawn(self._remove(inst))
        self.changed()

    async def _remove(self, inst: Instance) -> None:
        if inst.container_id:
            # a failed instance's container is stopped but kept, for `nvcf-lite logs`; the
            # scheduler prunes all but the newest docker.failed_containers_kept per version
            keep = inst.state == InstanceState.FAILED and self.docker_cfg.failed_containers_kept
            await self.safe_remove(inst.container_id, keep=bool(keep), about=inst.log_ids())
        await asyncio.to_thread(self._remove_secrets, inst.instance_id)
        self.instances.pop(inst.instance_id, None)
        self.changed()

    async def safe_remove(
        self, container_id: str, *, keep: bool = False, about: dict[str, str] | None = None
    ) -> None:
        """Remove the container (or with `keep` only stop it); a failure is logged."""
        timeout = self.docker_cfg.stop_timeout_s
        try:
            if keep:
                await self.runtime.stop(container_id, stop_timeout_s=timeout)
            else:
                await self.runtime.remove(container_id, stop_timeout_s=timeout)
        except RuntimeFailure as exc:
            what = "stop" if keep else "remove"
            log.warning("could not %s container %s: %s", what, container_id[:12], exc, extra=about)

    async def refresh_secrets(self, version_id: str, secrets: dict[str, object]) -> None:
        """New secret values for the running instances of a version: a new secrets.json is
        renamed into each one's mounted folder (readers see the old file or the new one, never
        a mix); an instance starting now writes them too."""
        folders = [
            self.secrets_root / inst.instance_id
            for inst in self.instances.values()
            if inst.version_id == version_id and not inst.removing
        ]
        data = msgspec.json.encode(secrets)

        def rewrite() -> None:
            with self._secrets_lock:
                now = time.monotonic()
                self._fresh_secrets = {
                    v: kept for v, kept in self._fresh_secrets.items() if now - kept[0] < FRESH_S
                }
                self._fresh_secrets[version_id] = (now, secrets)
                for folder in folders:
                    if folder.is_dir():  # else: the instance is going away
                        _replace(folder / "secrets.json", data)

        try:
            await asyncio.to_thread(rewrite)
        except OSError as exc:  # the store has the new values; the next start gets them
            log.warning(
                "could not write new secrets for version %s: %s",
                version_id,
                exc,
                extra=logs.ids(version_id=version_id),
            )

    def _write_secrets(self, inst: Instance, info: LaunchInfo) -> Path | None:
        """The instance's secrets folder (mounted at /var/secrets), or None without secrets."""
        self.inf_dir.mkdir(parents=True, exist_ok=True)
        if not info.secrets:
            return None
        root = self.secrets_root
        try:
            root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            root.mkdir(exist_ok=True, mode=0o700)
            root.chmod(0o700)  # host users stay out (a folder we do not own refuses this)
            folder = root / inst.instance_id
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)  # mounted: the container's user may not be root
            with self._secrets_lock:
                fresh = self._fresh_secrets.get(inst.version_id)
                recent = fresh is not None and time.monotonic() - fresh[0] < FRESH_S
                values = fresh[1] if fresh is not None and recent else info.secrets
                _replace(folder / "secrets.json", msgspec.json.encode(values))
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot write the instance's secrets.json under {root} ({exc.strerror or exc}):"
                " set docker.secrets_dir to a folder this server may write (a tmpfs)"
            ) from exc
        return folder

    def _remove_secrets(self, instance_id: str) -> None:
        shutil.rmtree(self.secrets_root / instance_id, ignore_errors=True)
        # where a server before docker.secrets_dir wrote them (under data_dir)
        shutil.rmtree(self.data / "secrets" / instance_id, ignore_errors=True)


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a temp file renamed over it), mode 0644."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _attach(inst: Instance, info: LaunchInfo, c: ContainerInfo) -> None:
    """What a started or adopted instance needs to be reached: its names and host ports."""
    inst.function_name, inst.inference_url = info.name, info.inference_url
    inst.host_port = c.host_ports.get(info.inference_port)
    inst.health_port = c.host_ports.get(info.health.port)
    inst.address, inst.node = c.address, c.node
