"""How many instances a spec wants now (spec §2.2.1 autoscalingConfiguration), pure.

Demand is in-flight plus queued requests; an instance serves `maxRequestConcurrency` at once.
- Scale up as soon as utilisation (demand / (instances x concurrency)) exceeds the up
  threshold (`scaleUpDetails.threshold` in percent, default 100): to at least
  ceil(instances x factor) (`scaleUpDetails.factor`, default 1, i.e. no extra jump) and to
  enough instances for the demand at that threshold.
- Scale down only after demand has needed fewer instances for a whole idle window
  (`scaleDownDetails.stickiness.size` as an ISO duration, else `scheduler.scale_down_idle_s`):
  to what the demand needs, or ceil(instances x `scaleDownDetails.factor`) when given,
  whichever is larger. Never below minInstances, never above maxInstances; demand with no
  instance at all always wants one (scale from zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nvcf_lite.domain.function_fields import parse_duration
from nvcf_lite.models import GpuSpec


@dataclass
class ScaleState:
    """Per-spec memory of the autoscaler."""

    busy_at: float = 0.0  # last time the demand needed the current number of instances


@dataclass(frozen=True)
class Policy:
    up_threshold: float = 1.0  # utilisation that triggers a scale up (1.0 = 100 %)
    up_factor: float = 1.0
    down_factor: float | None = None
    idle_s: float = 30.0


def policy(spec: GpuSpec, default_idle_s: float) -> Policy:
    config: dict[str, Any] = dict(spec.autoscaling_configuration or {})
    up: dict[str, Any] = config.get("scaleUpDetails") or {}
    down: dict[str, Any] = config.get("scaleDownDetails") or {}
    idle = default_idle_s
    stickiness = down.get("stickiness") or {}
    if isinstance(stickiness, dict) and isinstance(stickiness.get("size"), str):
        idle = float(parse_duration(stickiness["size"]) or idle)
    threshold = up.get("threshold")
    return Policy(
        up_threshold=float(threshold) / 100
        if isinstance(threshold, int | float) and threshold > 0
        else 1.0,
        up_factor=float(up.get("factor") or 1.0),
        down_factor=float(down["factor"]) if isinstance(down.get("factor"), int | float) else None,
        idle_s=idle,
    )


def desired(
    spec: GpuSpec, current: int, demand: int, state: ScaleState, now: float, pol: Policy
) -> int:
    """The instance count this spec should have now (current = live instances)."""
    slots = max(1, spec.max_request_concurrency)
    need = math.ceil(demand / (slots * pol.up_threshold)) if demand else 0
    low, high = spec.min_instances, spec.max_instances
    if demand and current == 0:
        state.busy_at = now
        return max(low, min(high, max(1, need)))
    if current and demand / (current * slots) > pol.up_threshold:
        state.busy_at = now
        grown = max(need, math.ceil(current * pol.up_factor))
        return max(low, min(high, grown))
    if need >= current:
        state.busy_at = now
        return max(low, min(high, current))
    if now - state.busy_at < pol.idle_s:
        return max(low, min(high, current))
    shrunk = need
    if pol.down_factor is not None:
        shrunk = max(need, math.floor(current * pol.down_factor))
    return max(low, min(high, shrunk))
