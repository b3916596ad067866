"""Prometheus metrics in the text exposition format (0.0.4), kept in memory.

Counters and histograms are updated by the workers as things happen (an invocation ends, an
instance becomes ready); gauges (queue depth, instances by state, GPU units) are read from the
live state when `GET /metrics` is scraped. No client library: a dict update per event is all
the invocation hot path pays. Values start at zero with each process.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from nvcf_lite.domain.traffic import Traffic

Labels = tuple[str, ...]

# Seconds. Invocations: sub-millisecond echo functions up to 20-minute polls.
LATENCY_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1, 2.5, 5, 10, 30, 60, 300, 1200),
)
# Seconds. Cold starts: an unpause (~20 ms) up to an image pull of minutes.
START_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class _Values(_Family):
    """One number per label set (counters and gauges)."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        super().__init__(name, help_text, label_names)
        self.values: dict[Labels, float] = {}

    def lines(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, k)} {_number(v)}"
            for k, v in sorted(self.values.items())
        ]


class Counter(_Values):
    kind = "counter"

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by


class Gauge(_Values):
    """Set at scrape time from live state (`set` or `add` what exists now)."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def add(self, value: float, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + value


class Histogram(_Family):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(sorted(buckets))
        # per label set: counts per bucket (not cumulative; the last is +Inf), sum
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect_left(self.bounds, value)] += 1  # `le` is inclusive
        series[1][0] += value

    def lines(self) -> list[str]:
        out: list[str] = []
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total[0])}")
            out.append(f"{self.name}_count{_labels(self.label_names, labels)} {running}")
        return out


class Metrics:
    """What the workers record; `render` adds the gauges read at scrape time."""

    def __init__(self) -> None:
        self.traffic = Traffic()  # the console's recent window of the same request ends
        self.invocations = Counter(
            "nvcf_lite_invocations_total",
            "Accepted invocations that ended, by function, version and the HTTP status answered.",
            ("function_id", "version_id", "status"),
        )
        self.invocation_seconds = Histogram(
            "nvcf_lite_invocation_duration_seconds",
            "From acceptance to the end of the answer (queue wait included).",
            ("function_id", "version_id"),
            LATENCY_BUCKETS,
        )
        self.cold_start_wait = Histogram(
            "nvcf_lite_cold_start_wait_seconds",
            "Requests that waited for an instance to start: acceptance to first byte, by kind "
            "(cold: a new container; paused: an unpause from the warm pool).",
            ("kind",),
            START_BUCKETS,
        )
        self.instance_start = Histogram(
            "nvcf_lite_instance_start_seconds",
            "Instance start phases, once per instance that became ready: image_pull, "
            "container_start (create+start or unpause), first_healthy.",
            ("kind", "phase"),
            START_BUCKETS,
        )
        self.instance_failures = Counter(
            "nvcf_lite_instance_failures_total",
            "Instances that failed (could not start, exited, stayed unhealthy), by function "
            "and version.",
            ("function_id", "version_id"),
        )
        self.llm_requests = Counter(
            "nvcf_lite_llm_requests_total",
            "OpenAI-compatible gateway calls answered, by key, function, model, endpoint and "
            "the HTTP status answered.",
            ("key_id", "function_id", "model", "endpoint", "status"),
        )
        self.llm_tokens = Counter(
            "nvcf_lite_llm_tokens_total",
            "Tokens the containers reported in `usage` (kind: input = prompt, output = "
            "completion), by key, function and model.",
            ("key_id", "function_id", "model", "kind"),
        )
        self.llm_first_token = Histogram(
            "nvcf_lite_llm_time_to_first_token_seconds",
            "Streamed gateway calls: from acceptance to the first chunk sent to the client.",
            ("function_id", "model"),
            LATENCY_BUCKETS,
        )

        labels = ("telemetry_id", "signal")
        self.telemetry_exported = Counter(
            "nvcf_lite_telemetry_exported_total",
            "Items a telemetry endpoint accepted (log records; resource metrics, one per version "
            "and pass), by telemetry and signal (logs, metrics).",
            labels,
        )
        self.telemetry_failures = Counter(
            "nvcf_lite_telemetry_export_failures_total",
            "Export requests to a telemetry endpoint that failed (each try of a batch).",
            labels,
        )
        self.telemetry_dropped = Counter(
            "nvcf_lite_telemetry_dropped_total",
            "Items not shipped, by telemetry, signal and reason (buffer_full: the oldest made "
            "room; export_failed: the retries ran out; unsupported: nvcf-lite cannot ship there).",
            (*labels, "reason"),
        )

        self.webhook_attempts = Counter(
            "nvcf_lite_webhook_attempts_total",
            "Webhook POST attempts by function and result (delivered: answered 2xx; retry: "
            "failed, tried again later; failed: failed with no attempt left).",
            ("function_id", "result"),
        )

    def request_ended(
        self, function_id: str, version_id: str, request_id: str, status: int, seconds: float
    ) -> None:
        """An invocation ended: counted, timed, and kept in the console's recent window."""
        self.invocations.inc(function_id, version_id, str(status))
        self.invocation_seconds.observe(seconds, function_id, version_id)
        self.traffic.ended(function_id, version_id, request_id, status, seconds)

    def families(self) -> list[_Family]:
        return [
            self.invocations,
            self.invocation_seconds,
            self.cold_start_wait,
            self.instance_start,
            self.instance_failures,
            self.llm_requests,
            self.llm_tokens,
            self.llm_first_token,
            self.telemetry_exported,
            self.telemetry_failures,
            self.telemetry_dropped,
            self.webhook_attempts,
        ]

    def render(self, gauges: Iterable[Gauge] = ()) -> str:
        lines: list[str] = []
        for family in [*self.families(), *gauges]:
            lines += family.header()
            lines += family.lines()
        return "\n".join(lines) + "\n"
