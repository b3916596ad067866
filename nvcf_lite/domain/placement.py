"""What this host offers (GPU names, instance types) and where an instance goes (pure).

Naming (documented in the README):
- GPU names are NVCF-style short names from NVML ("H100", "A100_80GB", "L40S"); a MIG device
  is its own GPU name `<GPU>_MIG_<profile>` (e.g. "A100_MIG_1g.5gb") and its own unit.
- Instance types are `<GPU>.GPU.<n>x`, n = 1 .. the number of such units on the host; an
  instance of `<GPU>.GPU.2x` gets two whole units. Placement never gives a unit to two instances.
- `CPU` with instance type `CPU.x1` requests no device at all (for hosts without GPUs), up to
  `gpus.cpu_instance_max` such instances at once.
- Simulated GPUs (config) are units like real ones but make no DeviceRequest.
- Each instance type also carries CPU cores, memory and shared memory (domain/instance_types):
  an instance gets exactly those limits, and is placed only where they fit as well.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from nvcf_lite.domain.instance_types import Limits, Sizing
from nvcf_lite.errors import Invalid

CPU = "CPU"
CPU_INSTANCE_TYPE = "CPU.x1"


class GpuUnit(msgspec.Struct, frozen=True):
    """One placeable device: a whole GPU or a MIG device."""

    unit_id: str  # GPU-..., MIG-... or SIM-... (simulated)
    gpu: str
    index: int
    memory_mb: int
    physical: bool = True  # False for simulated units: NVIDIA_VISIBLE_DEVICES only
    node: str = ""  # the Swarm node that holds it; "" on a single host


def instance_type_name(gpu: str, count: int) -> str:
    return f"{gpu}.GPU.{count}x"


class Host:
    """The placeable inventory of this machine."""

    def __init__(
        self,
        units: Iterable[GpuUnit],
        cpu_instance_max: int = 8,
        gpu_error: str | None = None,
        sizing: Sizing | None = None,
    ) -> None:
        self.units = sorted(units, key=lambda u: u.index)
        self.cpu_instance_max = cpu_instance_max
        self.gpu_error = gpu_error
        self.sizing = sizing  # None: instances get no CPU or memory limits (unit tests only)
        # units on nodes that cannot take instances now (down, drained): the runtime says
        self.unavailable: set[str] = set()

    def nodes(self) -> list[str]:
        """The nodes its units are on ("" alone on a single host)."""
        return list(dict.fromkeys(u.node for u in self.units))

    def limits(self, instance_type: str) -> Limits | None:
        """The CPU, memory and /dev/shm an instance of this type gets (None: no sizing)."""
        if self.sizing is None:
            return None
        try:
            units = units_per_instance(instance_type)
        except ValueError:  # a label of another version's naming: one share
            units = 1
        return self.sizing.limits(instance_type, units)

    def all_instance_types(self) -> list[str]:
        return [t for g in self.gpu_names() for t in self.instance_types(g)]

    def gpu_names(self) -> list[str]:
        names = list(dict.fromkeys(u.gpu for u in self.units))
        return [*names, CPU] if self.cpu_instance_max > 0 else names

    def count(self, gpu: str) -> int:
        """CPU instances at once, or the most units of `gpu` one instance can get: an
        instance's units are all on one node."""
        if gpu == CPU:
            return self.cpu_instance_max
        per_node: dict[str, int] = {}
        for u in self.units:
            if u.gpu == gpu:
                per_node[u.node] = per_node.get(u.node, 0) + 1
        return max(per_node.values(), default=0)

    def memory_mb(self, gpu: str) -> int:
        return max((u.memory_mb for u in self.units if u.gpu == gpu), default=0)

    def instance_types(self, gpu: str) -> list[str]:
        if gpu == CPU:
            return [CPU_INSTANCE_TYPE] if self.cpu_instance_max > 0 else []
        return [instance_type_name(gpu, n) for n in range(1, self.count(gpu) + 1)]

    def offer_text(self) -> str:
        offers = [f"{g} ({', '.join(self.instance_types(g))})" for g in self.gpu_names()]
        text = "; ".join(offers) if offers else "nothing"
        if self.gpu_error:
            text += f". No NVIDIA GPUs: {self.gpu_error}"
        return text

    def resolve(self, gpu: str, instance_type: str | None) -> tuple[str, str, int]:
        """Validate a spec's gpu / instanceType -> (gpu, instance type, units per instance)."""
        match = next((g for g in self.gpu_names() if g.lower() == gpu.lower()), None)
        if match is None:
            raise Invalid(
                f"GPU '{gpu}' is not available on this host; it offers: {self.offer_text()}"
            )
        types = self.instance_types(match)
        if not instance_type:
            instance_type = types[0]
        chosen = next((t for t in types if t.lower() == instance_type.lower()), None)
        if chosen is None:
            raise Invalid(
                f"instance type '{instance_type}' is not available for GPU '{match}'; "
                f"this host offers: {', '.join(types) or 'none'}"
            )
        limits = self.limits(chosen)
        if self.sizing is not None and limits is not None:
            too_big = self.sizing.too_big(chosen, limits)
            if too_big:
                raise Invalid(too_big)
        return match, chosen, units_per_instance(chosen)

    def place(self, gpu: str, units: int, used: set[str]) -> list[GpuUnit] | None:
        """Free units for one instance (lowest index first), or None when it does not fit."""
        if gpu == CPU:
            return []
        taken = used | self.unavailable
        for node in self.nodes():
            free = [u for u in self.units if u.gpu == gpu and u.node == node]
            free = [u for u in free if u.unit_id not in taken]
            if len(free) >= units:
                return free[:units]
        return None

    def cpu_free(self, cpu_instances_running: int) -> bool:
        return cpu_instances_running < self.cpu_instance_max


def units_per_instance(instance_type: str) -> int:
    if instance_type == CPU_INSTANCE_TYPE:
        return 0
    suffix = instance_type.rsplit(".", 1)[-1]
    return int(suffix.removesuffix("x"))
