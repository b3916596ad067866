"""Recent traffic per function, for the console: request rate and p50/p99 latency over the last
minutes, and the last requests that ended.

Fed by the same event that counts `nvcf_lite_invocations_total` and observes
`nvcf_lite_invocation_duration_seconds` (the dispatcher's end of a request), so it never
disagrees with /metrics; it only keeps a short window of it in memory (a ring of samples, one
every `interval_s`, and the last `keep_requests` requests of each function). Values start empty
with each process, like the metrics.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import msgspec

SAMPLE_INTERVAL_S = 5.0
KEEP_SAMPLES = 72  # six minutes of 5-second samples
KEEP_REQUESTS = 20


class EndedRequest(msgspec.Struct, kw_only=True, frozen=True):
    request_id: str
    version_id: str
    status: int
    latency_ms: float
    ended_at: float  # epoch seconds


class TrafficPoint(msgspec.Struct, kw_only=True, frozen=True):
    at: float  # epoch seconds: the end of the sample's interval
    requests: int
    requests_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None


class FunctionTraffic(msgspec.Struct, kw_only=True):
    function_id: str
    points: list[TrafficPoint]


def quantile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank quantile of a non-empty sorted list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class Traffic:
    """The console's window on the requests that ended; `sample` closes one interval."""

    def __init__(
        self,
        interval_s: float = SAMPLE_INTERVAL_S,
        keep_samples: int = KEEP_SAMPLES,
        keep_requests: int = KEEP_REQUESTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._keep_requests = keep_requests
        self._window: dict[str, list[float]] = {}  # function -> latencies (s) this interval
        self._last: dict[str, deque[EndedRequest]] = {}
        self._samples: deque[tuple[float, dict[str, TrafficPoint]]] = deque(maxlen=keep_samples)
        self._since = clock()

    def ended(
        self, function_id: str, version_id: str, request_id: str, status: int, seconds: float
    ) -> None:
        """A request ended with `status` after `seconds` from its acceptance."""
        self._window.setdefault(function_id, []).append(seconds)
        last = self._last.get(function_id)
        if last is None:
            last = self._last[function_id] = deque(maxlen=self._keep_requests)
        last.appendleft(
            EndedRequest(
                request_id=request_id,
                version_id=version_id,
                status=status,
                latency_ms=round(seconds * 1000, 2),
                ended_at=self._clock(),
            )
        )

    async def sample(self, now: float | None = None) -> int:
        """Close the interval since the last sample: one point per function seen so far
        (zero requests where none ended). Returns 0: the sweeper that calls it logs a truthy
        result as things removed, and a sample removes nothing."""
        now = self._clock() if now is None else now
        span = max(now - self._since, 1e-9)
        points: dict[str, TrafficPoint] = {}
        for fid in self._last:
            values = sorted(self._window.get(fid, []))
            points[fid] = TrafficPoint(
                at=now,
                requests=len(values),
                requests_per_s=round(len(values) / span, 3),
                p50_ms=round(quantile(values, 0.5) * 1000, 2) if values else None,
                p99_ms=round(quantile(values, 0.99) * 1000, 2) if values else None,
            )
        self._samples.append((now, points))
        self._window, self._since = {}, now
        return 0

    def series(self, function_ids: set[str]) -> list[FunctionTraffic]:
        """The ring's points of each of these functions, oldest first."""
        out: dict[str, list[TrafficPoint]] = {fid: [] for fid in sorted(function_ids)}
        for _, points in self._samples:
            for fid, series in out.items():
                point = points.get(fid)
                if point is not None:
                    series.append(point)
        return [FunctionTraffic(function_id=fid, points=pts) for fid, pts in out.items()]

    def last_requests(self, function_id: str) -> list[EndedRequest]:
        """The function's last requests that ended, newest first."""
        return list(self._last.get(function_id, ()))
