"""One telemetry endpoint's one signal (logs or metrics): a bounded buffer and the task that
sends it to the endpoint in batches, with retries.

`offer` never blocks and never fails: the container-log follow and the metrics pass call it on
the event loop, and a full buffer drops its oldest item and counts it
(`nvcf_lite_telemetry_dropped_total{reason="buffer_full"}`). `run` sends a batch when
`batch_max_records` are waiting or `flush_interval_s` after the first one arrived. A batch that
fails (connection error, timeout, HTTP 408/429/5xx) is retried `retry_attempts` times in all,
waiting `retry_backoff_initial_s` doubling up to `retry_backoff_max_s`; any other 4xx is not
retried. Each failed try is counted (`nvcf_lite_telemetry_export_failures_total`) and a batch
given up is dropped and counted (`reason="export_failed"`); the first failure after a success
is a warning in the log (then one a minute while it lasts) and a recovery is logged too, so a
failing endpoint is never silent and never floods the log. Headers (the secret) are never
logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec

from nvcf_lite.config import TelemetryConfig
from nvcf_lite.domain.metrics import Metrics

log = logging.getLogger("nvcf_lite.telemetry")

T = TypeVar("T")
Post = Callable[[str, dict[str, str], bytes, float], Awaitable[int]]
"""(url, headers, body, timeout_s) -> the HTTP status; raises OSError/TimeoutError (or the
HTTP client's errors, all subclasses of Exception) when no answer came."""
RETRYABLE = frozenset({408, 429})
STILL_FAILING_S = 60.0  # while an endpoint keeps failing: one warning a minute


class Target(msgspec.Struct, frozen=True):
    """Where and how to send: `reason` is set (and url empty) when nvcf-lite cannot ship."""

    url: str = ""
    headers: dict[str, str] = {}
    reason: str = ""


class Exporter(Generic[T]):
    def __init__(
        self,
        telemetry_id: str,
        signal: str,
        encode: Callable[[list[T]], bytes],
        post: Post,
        settings: TelemetryConfig,
        metrics: Metrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.telemetry_id, self.signal = telemetry_id, signal
        self.encode, self.post = encode, post
        self.settings, self.metrics = settings, metrics
        self.sleep, self.clock = sleep, clock
        self.target = Target(reason="not configured yet")
        self.buffer: deque[T] = deque()
        self._wake = asyncio.Event()
        self._failing_since: float | None = None
        self._warned_at = 0.0

    def retarget(self, target: Target) -> None:
        """A new endpoint or secret (read by the shipper's scan) applies to the next batch."""
        if target.reason and target.reason != self.target.reason:
            log.warning(
                "telemetry %s: %s are not shipped: %s",
                self.telemetry_id,
                self.signal,
                target.reason,
            )
        self.target = target

    def offer(self, item: T) -> None:
        if len(self.buffer) >= self.settings.max_buffered_records:
            self.buffer.popleft()
            self._dropped(1, "buffer_full")
        self.buffer.append(item)
        if len(self.buffer) == 1 or len(self.buffer) >= self.settings.batch_max_records:
            self._wake.set()

    async def run(self) -> None:
        """Send batches until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self.buffer) < self.settings.batch_max_records:
                await self.sleep(self.settings.flush_interval_s)  # let a batch fill
            while self.buffer:
                await self.send(self._take())

    async def flush(self) -> None:
        """Send what is buffered (at shutdown, under the caller's timeout)."""
        while self.buffer:
            await self.send(self._take())

    def _take(self) -> list[T]:
        count = min(len(self.buffer), self.settings.batch_max_records)
        return [self.buffer.popleft() for _ in range(count)]

    async def send(self, batch: list[T]) -> bool:
        """One batch, retried; True once the endpoint took it."""
        wait_s = self.settings.retry_backoff_initial_s
        for attempt in range(1, self.settings.retry_attempts + 1):
            target = self.target
            if target.reason:
                self._dropped(len(batch), "unsupported")
                return False
            why, retry = await self._try(target, batch)
            if not why:
                self._delivered(len(batch))
                return True
            self.metrics.telemetry_failures.inc(self.telemetry_id, self.signal)
            self._failed(why, attempt)
            if not retry or attempt == self.settings.retry_attempts:
                break
            await self.sleep(wait_s)
            wait_s = min(wait_s * 2, self.settings.retry_backoff_max_s)
        self._dropped(len(batch), "export_failed")
        return False

    async def _try(self, target: Target, batch: list[T]) -> tuple[str, bool]:
        """("", _) when sent; else why and whether a retry may help."""
        try:
            status = await self.post(
                target.url, target.headers, self.encode(batch), self.settings.export_timeout_s
            )
        except Exception as exc:  # connection refused, reset, timeout, TLS: all worth a retry
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True
        if 200 <= status < 300:
            return "", False
        return f"HTTP {status}", status in RETRYABLE or status >= 500

    def _delivered(self, count: int) -> None:
        self.metrics.telemetry_exported.inc(self.telemetry_id, self.signal, by=count)
        if self._failing_since is not None:
            log.info(
                "telemetry %s: %s export recovered after %.0f s",
                self.telemetry_id,
                self.signal,
                self.clock() - self._failing_since,
            )
            self._failing_since = None

    def _failed(self, why: str, attempt: int) -> None:
        now = self.clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._warned_at < STILL_FAILING_S:
            log.debug(
                "telemetry %s: %s try %d failed: %s", self.telemetry_id, self.signal, attempt, why
            )
            return
        self._warned_at = now
        log.warning(
            "telemetry %s: %s export failed (try %d of %d): %s",
            self.telemetry_id,
            self.signal,
            attempt,
            self.settings.retry_attempts,
            why,
        )

    def _dropped(self, count: int, reason: str) -> None:
        self.metrics.telemetry_dropped.inc(self.telemetry_id, self.signal, reason, by=count)
