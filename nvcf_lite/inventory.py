"""What this host can place: NVML's GPUs and MIG devices, simulated GPUs, and the CPU cores
and memory instances share (the machine's totals, or the config's)."""

from __future__ import annotations

from nvcf_lite.api.health import ComponentWire
from nvcf_lite.config import Config
from nvcf_lite.domain.instance_types import MILLI, Resources, Sizing
from nvcf_lite.domain.placement import GpuUnit, Host
from nvcf_lite.runtime.machine import MachineTotals, read_machine
from nvcf_lite.runtime.nvml import GpuInventory, gpu_short_name, read_inventory
from nvcf_lite.runtime.own_container import in_container
from nvcf_lite.runtime.swarm import SwarmRuntime


def read_host(config: Config) -> tuple[Host, GpuInventory]:
    inventory = (
        read_inventory(in_container=in_container())
        if config.gpus.use_nvml
        else GpuInventory(gpus=[], error="NVML disabled by configuration (gpus.use_nvml)")
    )
    return build_host(config, inventory), inventory


async def read_swarm_host(config: Config, runtime: SwarmRuntime) -> tuple[Host, GpuInventory]:
    """The GPUs of every node of the swarm (docker.runtime = "swarm"), read once at start: a
    node that joins later is placeable after a restart; one that leaves or drains is excluded
    at once (the Scheduler asks the runtime every tick)."""
    inventory = await runtime.gpu_inventory()
    return build_host(config, inventory), inventory


def build_host(
    config: Config, inventory: GpuInventory, machine: MachineTotals | None = None
) -> Host:
    """Placeable units: whole GPUs, MIG devices (each its own unit), simulated GPUs; and the
    CPU and memory each instance type gets."""
    units: list[GpuUnit] = []
    for gpu in inventory.gpus:
        short = gpu_short_name(gpu.name)
        if not gpu.mig_devices:
            units.append(
                GpuUnit(
                    unit_id=gpu.uuid,
                    gpu=short,
                    index=gpu.index * 100,
                    memory_mb=gpu.memory_mb,
                    node=gpu.node,
                )
            )
        for mig in gpu.mig_devices:
            profile = mig.name.rsplit("MIG", 1)[-1].strip() or "mig"
            units.append(
                GpuUnit(
                    unit_id=mig.uuid,
                    gpu=f"{short}_MIG_{profile}",
                    index=gpu.index * 100 + mig.index + 1,
                    memory_mb=mig.memory_mb,
                )
            )
    for n, sim in enumerate(config.gpus.simulated):
        for i in range(sim.count):
            units.append(
                GpuUnit(
                    unit_id=f"SIM-{sim.name}-{i}",
                    gpu=sim.name,
                    index=1_000_000 + n * 1000 + i,
                    memory_mb=sim.memory_mb,
                    physical=False,
                )
            )
    sizing = build_sizing(config, machine or read_machine(), len(units))
    return Host(units, config.gpus.cpu_instance_max, inventory.error, sizing)


def build_sizing(config: Config, machine: MachineTotals, gpu_units: int) -> Sizing:
    """The placeable totals: configured, else detected less the reserve."""
    r = config.resources
    cores, cpu_source = _total(
        r.cpu_cores, "cpu_cores", machine.cpu_cores, f"{machine.cpu_cores:g} from "
        f"{machine.cpu_source}", r.reserved_cpu_cores, f"{r.reserved_cpu_cores:g}"
    )  # fmt: skip
    memory, memory_source = _total(
        r.memory_mb, "memory_mb", machine.memory_mb, f"{machine.memory_mb} MiB from "
        f"{machine.memory_source}", r.reserved_memory_mb, f"{r.reserved_memory_mb}"
    )  # fmt: skip
    return Sizing(
        Resources(round(cores * MILLI), int(memory)),
        gpu_units=gpu_units,
        cpu_instance_max=config.gpus.cpu_instance_max,
        shm_mb=r.shm_size_mb,
        overrides=r.instance_types,
        source=f"CPU: {cpu_source}; memory: {memory_source}",
    )


def _total(
    configured: float, key: str, detected: float, found: str, reserved: float, shown: str
) -> tuple[float, str]:
    """One placeable total and where it comes from: resources.<key> when set, else what was
    detected (`found`) less resources.reserved_<key>."""
    if configured:
        return configured, f"resources.{key}"
    source = found + (f", less resources.reserved_{key} {shown}" if reserved else "")
    return max(0, detected - reserved), source


def gpus_component(host: Host, inventory: GpuInventory) -> ComponentWire:
    physical = [u for u in host.units if u.physical]
    simulated = [u for u in host.units if not u.physical]
    parts = []
    nodes = inventory.nodes
    if physical and nodes:
        parts.append(f"{len(physical)} NVIDIA GPU unit(s) on {len(nodes)} Swarm node(s)")
    elif physical:
        parts.append(f"{len(physical)} NVIDIA GPU unit(s) from NVML")
    if simulated:
        parts.append(f"{len(simulated)} simulated GPU unit(s)")
    if inventory.error:
        parts.append(inventory.error)
    status = "ok" if physical else "degraded" if simulated else "unavailable"
    return ComponentWire(status=status, detail="; ".join(parts))
