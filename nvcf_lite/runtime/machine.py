"""The CPU cores and memory of this machine, as the processes nvcf-lite starts could use them.

CPU: the cores this process may run on (sched_getaffinity), fewer when its cgroup (its own
container's, where it runs in one) has a CFS quota. Memory: /proc/meminfo MemTotal, less when
its cgroup has a memory limit. cgroup v2 (`cpu.max`, `memory.max`) and v1
(`cpu/cpu.cfs_quota_us`, `memory/memory.limit_in_bytes`) are both read; on a host the root
cgroup has no limit, so only a container's own limits count.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

MIB = 1024 * 1024


class MachineTotals(msgspec.Struct, frozen=True):
    cpu_cores: float
    memory_mb: int
    cpu_source: str  # where the figures come from, in words
    memory_source: str


def read_machine(root: Path = Path("/")) -> MachineTotals:
    cgroup = root / "sys" / "fs" / "cgroup"
    cores = float(len(os.sched_getaffinity(0)))
    cpu_source = "CPU affinity"
    quota = _cpu_quota(cgroup)
    if quota is not None and quota < cores:
        cores, cpu_source = quota, "this container's CPU quota"
    memory = _meminfo_total_mb(root / "proc" / "meminfo")
    memory_source = "/proc/meminfo MemTotal"
    limit = _memory_limit_mb(cgroup)
    if limit is not None and limit < memory:
        memory, memory_source = limit, "this container's memory limit"
    return MachineTotals(cores, memory, cpu_source, memory_source)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_quota(cgroup: Path) -> float | None:
    v2 = _read(cgroup / "cpu.max")  # "max 100000" or "<quota> <period>"
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" or not period else int(quota) / int(period)
    quota_us = _read(cgroup / "cpu" / "cpu.cfs_quota_us")
    period_us = _read(cgroup / "cpu" / "cpu.cfs_period_us")
    if quota_us is None or period_us is None or int(quota_us) <= 0:
        return None
    return int(quota_us) / int(period_us)


def _memory_limit_mb(cgroup: Path) -> int | None:
    raw = _read(cgroup / "memory.max") or _read(cgroup / "memory" / "memory.limit_in_bytes")
    if raw is None or not raw.isdigit():
        return None  # "max": no limit
    return int(raw) // MIB  # v1's "no limit" is a huge number, above MemTotal


def _meminfo_total_mb(path: Path) -> int:
    for line in (_read(path) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024  # kB
    return 0
