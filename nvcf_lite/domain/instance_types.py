"""The CPU, memory and shared memory each instance type gets, and what is still free (pure).

Rules (documented in the README, "GPUs and instance types"):
- The host's placeable totals are its CPU cores and memory (detected, or `resources.cpu_cores`
  / `resources.memory_mb`) less `resources.reserved_*` for the host and nvcf-lite itself.
- A share is the totals divided by the number of GPU units on the host; an instance of
  `<GPU>.GPU.<n>x` gets n shares. `CPU.x1` gets the totals divided by `gpus.cpu_instance_max`,
  so that many CPU-only instances fill an otherwise idle host.
- `resources.instance_types` sets any of the three for one instance type by name instead.
- Shared memory (/dev/shm) is `resources.shm_size_mb` unless the type sets its own, and never
  more than the instance's memory (tmpfs pages count against the memory limit anyway).
- Placement adds up what every instance holds (running, starting, paused or draining, until
  its container is gone) and starts one more only when it fits: never overcommits.

CPU is a CFS quota (Docker's NanoCpus), not a cpuset: shares are often fractions of a core
(CPU.x1 on a small host, many GPUs on few cores), a quota adds up exactly against the host's
cores whatever the mix, and nothing fragments (a cpuset has to find whole free cores, and an
adopted container would have to be matched back to them after a restart).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from nvcf_lite.config import InstanceTypeLimits

MILLI = 1000  # CPU is counted in thousandths of a core
MIN_CPU_MILLIS = 10  # Docker refuses less than 0.01 CPU
MIN_MEMORY_MB = 6  # and less than 6 MiB of memory


def cores_text(cpu_millis: int) -> str:
    return f"{cpu_millis / MILLI:g} CPU core{'' if cpu_millis == MILLI else 's'}"


def mib_text(memory_mb: int) -> str:
    return f"{memory_mb} MiB" if memory_mb < 10 * 1024 else f"{memory_mb / 1024:.1f} GiB"


class Resources(msgspec.Struct, frozen=True):
    """CPU (thousandths of a core) and memory (MiB): held, needed or free."""

    cpu_millis: int = 0
    memory_mb: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_mb + other.memory_mb)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_mb - other.memory_mb)

    def covers(self, need: Resources) -> bool:
        return self.cpu_millis >= need.cpu_millis and self.memory_mb >= need.memory_mb

    def text(self) -> str:
        return f"{cores_text(self.cpu_millis)} and {mib_text(self.memory_mb)} of memory"


class Limits(msgspec.Struct, frozen=True):
    """What one instance's container gets: its CPU quota, memory limit and /dev/shm size."""

    cpu_millis: int
    memory_mb: int
    shm_mb: int

    @property
    def resources(self) -> Resources:
        return Resources(self.cpu_millis, self.memory_mb)

    def text(self) -> str:
        return (
            f"{cores_text(self.cpu_millis)}, {mib_text(self.memory_mb)} memory, "
            f"{mib_text(self.shm_mb)} /dev/shm"
        )


def total(held: Iterable[Resources]) -> Resources:
    out = Resources()
    for r in held:
        out = out + r
    return out


class Sizing:
    """The host's placeable totals and the limits of each instance type on it."""

    def __init__(
        self,
        totals: Resources,
        *,
        gpu_units: int,
        cpu_instance_max: int,
        shm_mb: int,
        overrides: Sequence[InstanceTypeLimits] = (),
        source: str = "",
    ) -> None:
        self.totals = totals
        self.shm_mb = shm_mb
        self.overrides = {o.name.lower(): o for o in overrides}
        self.source = source  # where the totals come from, in words
        self.share = _divided(totals, gpu_units)
        self.cpu_share = _divided(totals, cpu_instance_max)

    def limits(self, instance_type: str, units: int) -> Limits:
        """What an instance of `instance_type` (of `units` GPU units, 0 for CPU.x1) gets."""
        base = self.cpu_share if units == 0 else self.share
        cpu = max(MIN_CPU_MILLIS, base.cpu_millis * max(units, 1))
        memory = max(MIN_MEMORY_MB, base.memory_mb * max(units, 1))
        shm = self.shm_mb
        o = self.overrides.get(instance_type.lower())
        if o is not None:
            cpu = round(o.cpu_cores * MILLI) if o.cpu_cores is not None else cpu
            memory = o.memory_mb if o.memory_mb is not None else memory
            shm = o.shm_size_mb if o.shm_size_mb is not None else shm
        return Limits(cpu_millis=cpu, memory_mb=memory, shm_mb=min(shm, memory))

    def unused_overrides(self, offered: Iterable[str]) -> list[str]:
        """Overrides naming no instance type this host offers (a typo, or another host's)."""
        names = {n.lower() for n in offered}
        return [o.name for o in self.overrides.values() if o.name.lower() not in names]

    def too_big(self, instance_type: str, limits: Limits) -> str | None:
        """Why one instance of this type can never fit this host, or None."""
        if self.totals.covers(limits.resources):
            return None
        return (
            f"an instance of {instance_type} needs {limits.resources.text()}, more than this "
            f"host gives all instances together ({self.totals.text()}); lower it in "
            "resources.instance_types or raise resources.cpu_cores / resources.memory_mb"
        )

    def shortfall(self, instance_type: str, need: Limits, held: Resources) -> str | None:
        """Why one more instance does not fit next to what is `held` now, or None."""
        free = self.totals - held
        if free.covers(need.resources):
            return None
        short = [
            what
            for what, lacking in (
                ("CPU", free.cpu_millis < need.cpu_millis),
                ("memory", free.memory_mb < need.memory_mb),
            )
            if lacking
        ]
        return (
            f"waiting for capacity: not enough {' and '.join(short)}; an instance of "
            f"{instance_type} needs {need.resources.text()}, and {_free_text(free)} of this "
            f"host's {self.totals.text()} are free now; running what fits"
        )


def _divided(totals: Resources, parts: int) -> Resources:
    parts = max(parts, 1)
    return Resources(totals.cpu_millis // parts, totals.memory_mb // parts)


def _free_text(free: Resources) -> str:
    return Resources(max(0, free.cpu_millis), max(0, free.memory_mb)).text()
