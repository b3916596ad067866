"""Status rules for deployed versions (spec §3.1) and each spec's failure history (pure).

A spec's history counts failed instance starts in a row. Backoff between attempts doubles
from `restart_backoff_initial_s` up to `restart_backoff_max_s`, so a crash-looping container
is not restarted in a hot loop. The count resets once an instance has stayed ready for
`STABLE_AFTER_S`. A version still DEPLOYING whose spec failed `deploy_attempts` starts in a
row without ever becoming ready goes to ERROR and is not retried (undeploy to try again); so
does one whose start failed `permanent`ly (a model missing from the store), at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nvcf_lite.models import FunctionStatus, GpuSpec, HealthInfo, InstanceState, InstanceView

STABLE_AFTER_S = 60.0
CRASH_LOOP_AFTER = 3


@dataclass
class SpecHistory:
    failures: int = 0
    ever_ready: bool = False
    last_error: str | None = None
    next_attempt: float = 0.0
    unschedulable: str | None = None
    gave_up: bool = False
    failed_at: float = 0.0  # monotonic time of the last failed start since one was ready
    permanent: bool = False  # a start failed in a way no retry can fix (a missing model)

    def failed(self, reason: str, initial_s: float, max_s: float, *, start: bool = True) -> float:
        """Record a failed instance; returns the backoff before the next attempt. `start`: it
        failed to start (requests already waiting then fail with its reason); False for one
        that was serving and died (they wait for its replacement)."""
        self.failures += 1
        self.last_error = reason
        if start:
            self.failed_at = time.monotonic()
        backoff = float(min(max_s, initial_s * 2.0 ** (self.failures - 1)))
        self.next_attempt = time.monotonic() + backoff
        return backoff

    def ready(self) -> None:
        self.ever_ready = True
        self.failed_at = 0.0  # an instance started: earlier failed starts refuse nothing more

    def stable(self) -> None:
        self.failures, self.last_error, self.next_attempt = 0, None, 0.0

    @property
    def crash_looping(self) -> bool:
        return self.failures >= CRASH_LOOP_AFTER


def next_status(
    current: FunctionStatus,
    specs: Sequence[GpuSpec],
    instances: Sequence[InstanceView],
    history: Mapping[str, SpecHistory],
    deploy_attempts: int,
) -> FunctionStatus:
    """The version's status given its specs, its instances and their histories."""
    if current in (FunctionStatus.INACTIVE, FunctionStatus.ERROR, FunctionStatus.DELETED):
        return current
    for spec in specs:  # even with minInstances 0: no instance of it can ever serve
        h = history.get(spec.gpu_specification_id)
        if h and h.permanent and not h.ever_ready:
            return FunctionStatus.ERROR
    ready = {s.gpu_specification_id: 0 for s in specs}
    starting = dict(ready)
    for inst in instances:
        if inst.gpu_specification_id in ready:
            if inst.state == InstanceState.READY:
                ready[inst.gpu_specification_id] += 1
            elif inst.state == InstanceState.STARTING:
                starting[inst.gpu_specification_id] += 1
    if all(ready[s.gpu_specification_id] >= s.min_instances for s in specs):
        return FunctionStatus.ACTIVE
    if current == FunctionStatus.ACTIVE and all(
        ready[s.gpu_specification_id] + starting[s.gpu_specification_id] >= s.min_instances
        for s in specs
    ):
        # nothing was lost: instances for a raised minimum, or adopted ones awaiting their
        # first probe after a restart, are still starting; it stays invocable meanwhile
        return FunctionStatus.ACTIVE
    if current in (FunctionStatus.ACTIVE, FunctionStatus.DEGRADING, FunctionStatus.DEGRADED):
        return FunctionStatus.DEGRADING if sum(ready.values()) else FunctionStatus.DEGRADED
    for spec in specs:
        h = history.get(spec.gpu_specification_id)
        if spec.min_instances and h and not h.ever_ready and h.failures >= deploy_attempts:
            return FunctionStatus.ERROR
    return FunctionStatus.DEPLOYING


def spec_health(specs: Sequence[GpuSpec], history: Mapping[str, SpecHistory]) -> list[HealthInfo]:
    """healthInfo entries (only for specs with something wrong)."""
    out = []
    for spec in specs:
        h = history.get(spec.gpu_specification_id)
        if h is None:
            continue
        if h.unschedulable:
            error = h.unschedulable
        elif h.last_error and h.crash_looping:
            error = f"crash-looping: {h.failures} failed starts in a row; last: {h.last_error}"
        elif h.last_error:
            error = h.last_error
        else:
            continue
        out.append(
            HealthInfo(
                icms_request_id=spec.gpu_specification_id,
                gpu=spec.gpu,
                backend=spec.backend or "local",
                instance_type=spec.instance_type,
                error=error,
            )
        )
    return out
