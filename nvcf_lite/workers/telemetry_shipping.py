"""The telemetry shipper: the logs and metrics of function versions that name telemetries
(spec §2.1.1 `telemetries`, §2.8), sent OTLP/HTTP (domain/otlp.py) to those endpoints.

`tick()` is one level-triggered pass: it reads the versions to ship (registered with a
`logsTelemetryId` or `metricsTelemetryId` and not INACTIVE), keeps one `Exporter` per telemetry
and signal (its endpoint and secret read again each pass, so a new secret applies within
`scan_interval_s`), follows each such version's container output through the container-logs
seam (runtime/container_logs.py, the one way nvcf-lite reads it) into its logs exporter, and
every `metrics_interval_s` offers each version's `/metrics` series to its metrics exporter.
`run()` repeats it every `scan_interval_s`, or at once when nudged (a deployment changed). A
pass that raises is logged and the loop goes on; `close()` ends the follows, gives the
buffered items one last try within a grace period, and stops the exporters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from nvcf_lite.config import TelemetryConfig
from nvcf_lite.domain import otlp
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.otlp import LOGS, METRICS, Resource
from nvcf_lite.models import Telemetry
from nvcf_lite.workers.otlp_export import Exporter, Post, Target
from nvcf_lite.workers.tasks import TaskSet

if TYPE_CHECKING:  # imported when a telemetry first ships: with what it pulls in, ~20 MB of RSS
    import aiohttp

log = logging.getLogger("nvcf_lite.telemetry")

CLOSE_GRACE_S = 3.0
FOLLOW_RETRY_S = 5.0  # a follow that failed (no engine) starts again after this


class ShippedVersion(msgspec.Struct, frozen=True, kw_only=True):
    nca_id: str
    function_id: str
    version_id: str
    name: str
    logs_telemetry_id: str | None = None
    metrics_telemetry_id: str | None = None


VersionsToShip = Callable[[], Awaitable[list[ShippedVersion]]]
EndpointOf = Callable[[str, str], Awaitable[tuple[Telemetry, str | dict[str, Any] | None] | None]]
"""(nca_id, telemetry_id) -> the telemetry and its secret value; None when it is gone."""
MetricFamilies = Callable[[], Iterable[object]]
"""The families of /metrics now (domain/metrics.py counters and histograms, live gauges)."""
LogItem = tuple[Resource, dict[str, Any]]
Key = tuple[str, str]  # (telemetry id, signal)


class LogSource(Protocol):
    def instance_lines(
        self, function_id: str, version_id: str, *, since: float
    ) -> AsyncIterator[tuple[str, bytes]]: ...


class TelemetryShipping:
    def __init__(
        self,
        settings: TelemetryConfig,
        versions: VersionsToShip,
        endpoints: EndpointOf,
        logs: LogSource,
        families: MetricFamilies,
        metrics: Metrics,
        *,
        post: Post | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.metrics = settings, metrics
        self.versions, self.endpoints = versions, endpoints
        self.logs, self.families = logs, families
        self.clock = clock
        self.started_at = clock()
        self.start_ns = time.time_ns()
        self._post = post
        self._session: aiohttp.ClientSession | None = None
        self.exporters: dict[Key, Exporter[Any]] = {}
        self._export_tasks: dict[Key, asyncio.Task[None]] = {}
        self.follows: dict[str, asyncio.Task[None]] = {}
        self._since: dict[str, float] = {}  # version id -> its output is shipped up to then
        self._retry_at: dict[str, float] = {}
        self._follow_errors: dict[str, str] = {}
        self._tasks = TaskSet(log, "telemetry")
        self._metrics_due = 0.0
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        self._nudged.set()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("telemetry pass failed")
            due_s = self._metrics_due - self.clock()
            wait_s = min(self.settings.scan_interval_s, max(0.01, due_s))
            # Not asyncio.timeout/wait_for: on 3.11 a cancel that races the timeout is
            # swallowed, and the loop would outlive the shutdown that cancelled it.
            waiter = asyncio.ensure_future(self._nudged.wait())
            try:
                await asyncio.wait({waiter}, timeout=wait_s)
            finally:
                waiter.cancel()
            self._nudged.clear()

    async def tick(self) -> None:
        shipped = await self.versions()
        needed: dict[Key, str] = {}  # -> nca id
        for v in shipped:
            if v.logs_telemetry_id:
                needed[(v.logs_telemetry_id, LOGS)] = v.nca_id
            if v.metrics_telemetry_id:
                needed[(v.metrics_telemetry_id, METRICS)] = v.nca_id
        for key, nca_id in needed.items():
            await self._configure(key, nca_id)
        for key in set(self.exporters) - set(needed):
            await self._retire(key)
        self._follow_logs([v for v in shipped if v.logs_telemetry_id])
        if self.clock() >= self._metrics_due:
            self._metrics_due = self.clock() + self.settings.metrics_interval_s
            self._offer_metrics([v for v in shipped if v.metrics_telemetry_id])

    async def close(self) -> None:
        for task in self.follows.values():
            task.cancel()
        await asyncio.gather(*self.follows.values(), return_exceptions=True)
        self.follows.clear()
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await asyncio.gather(*(e.flush() for e in self.exporters.values()))
        except TimeoutError:
            log.warning("telemetry: items still buffered at shutdown were not shipped")
        await self._tasks.cancel()
        if self._session is not None:
            await self._session.close()

    # -- exporters --------------------------------------------------------------------------

    async def _configure(self, key: Key, nca_id: str) -> None:
        found = await self.endpoints(nca_id, key[0])
        if found is None:
            target = Target(reason="the telemetry is gone")
        else:
            telemetry, secret = found
            try:
                headers = otlp.auth_headers(telemetry, secret)
                target = Target(url=otlp.url(telemetry, key[1]), headers=headers)
            except otlp.Unsupported as exc:
                target = Target(reason=str(exc))
        exporter = self.exporters.get(key)
        if exporter is None:
            encode = _encode_logs if key[1] == LOGS else otlp.metrics_body
            exporter = Exporter(key[0], key[1], encode, self._poster(), self.settings, self.metrics)
            self.exporters[key] = exporter
            self._export_tasks[key] = self._tasks.spawn(exporter.run())
        exporter.retarget(target)

    async def _retire(self, key: Key) -> None:
        exporter = self.exporters.pop(key)
        task = self._export_tasks.pop(key)
        self._tasks.spawn(_flush_then_stop(exporter, task))

    def _poster(self) -> Post:
        if self._post is not None:
            return self._post
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        session = self._session

        async def post(url: str, headers: dict[str, str], body: bytes, timeout_s: float) -> int:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with session.post(url, data=body, headers=headers, timeout=timeout) as r:
                await r.read()
                return r.status

        self._post = post
        return post

    # -- logs -------------------------------------------------------------------------------

    def _follow_logs(self, versions: list[ShippedVersion]) -> None:
        wanted = {v.version_id: v for v in versions}
        for vid in set(self.follows) - set(wanted):
            self.follows.pop(vid).cancel()
        now = self.clock()
        for vid, version in wanted.items():
            task = self.follows.get(vid)
            if task is not None and not task.done():
                continue
            if self._retry_at.get(vid, 0.0) > now:
                continue
            self.follows[vid] = self._tasks.spawn(self._follow(version))

    async def _follow(self, v: ShippedVersion) -> None:
        key = (v.logs_telemetry_id or "", LOGS)
        base = Resource(v.nca_id, v.function_id, v.version_id, v.name)
        since = self._since.get(v.version_id, self.started_at)
        resources: dict[str, Resource] = {}
        try:
            lines = self.logs.instance_lines(v.function_id, v.version_id, since=since)
            async for instance_id, line in lines:
                exporter = self.exporters.get(key)
                if exporter is None:
                    continue
                resource = resources.get(instance_id)
                if resource is None:
                    resource = resources[instance_id] = msgspec.structs.replace(
                        base, instance_id=instance_id
                    )
                text = line.decode("utf-8", "replace")
                exporter.offer((resource, otlp.log_record(text, time.time_ns())))
        except Exception as exc:
            why = str(exc) or type(exc).__name__
            if self._follow_errors.get(v.version_id) != why:  # once per reason, not per retry
                log.warning(
                    "telemetry: cannot follow the output of version %s: %s", v.version_id, why
                )
            self._follow_errors[v.version_id] = why
            self._retry_at[v.version_id] = self.clock() + FOLLOW_RETRY_S
        finally:
            self._since[v.version_id] = self.clock()

    # -- metrics ----------------------------------------------------------------------------

    def _offer_metrics(self, versions: list[ShippedVersion]) -> None:
        if not versions:
            return
        families = list(self.families())
        now_ns = time.time_ns()
        for v in versions:
            exporter = self.exporters.get((v.metrics_telemetry_id or "", METRICS))
            resource = Resource(v.nca_id, v.function_id, v.version_id, v.name)
            item = otlp.resource_metrics(resource, families, self.start_ns, now_ns)
            if exporter is not None and item is not None:
                exporter.offer(item)


def _encode_logs(batch: list[LogItem]) -> bytes:
    return otlp.logs_body(batch)


async def _flush_then_stop(exporter: Exporter[Any], task: asyncio.Task[None]) -> None:
    """A telemetry no version ships to any more: what it holds gets one try, then it stops."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    try:
        async with asyncio.timeout(CLOSE_GRACE_S):
            await exporter.flush()
    except TimeoutError:
        pass
