"""The gauges of GET /metrics, read from the live scheduler and backlog at scrape time."""

from __future__ import annotations

from nvcf_lite.domain.metrics import Gauge
from nvcf_lite.workers.backlog import Backlog
from nvcf_lite.workers.scheduler import Scheduler


def live_gauges(scheduler: Scheduler, backlog: Backlog) -> list[Gauge]:
    queued = Gauge(
        "nvcf_lite_queue_depth",
        "Requests waiting for an instance slot, by function and version.",
        ("function_id", "version_id"),
    )
    in_flight = Gauge(
        "nvcf_lite_requests_in_flight",
        "Requests an instance is answering now, by function and version.",
        ("function_id", "version_id"),
    )
    instances = Gauge(
        "nvcf_lite_instances",
        "Instances by function, version and state (starting, ready, paused, draining, ...).",
        ("function_id", "version_id", "state"),
    )
    units = Gauge(
        "nvcf_lite_gpu_units",
        "Placeable GPU units (whole GPUs, MIG devices, simulated GPUs) by GPU name, "
        "used (held by an instance) or free.",
        ("gpu", "state"),
    )
    functions = {vid: d.function_id for vid, d in scheduler.deployed.items()}
    for vid in functions:
        queued.set(0, functions[vid], vid)
        in_flight.set(0, functions[vid], vid)
    for fid, vid, depth in backlog.queued():
        queued.set(depth, functions.get(vid) or fid, vid)
    held: set[str] = set()
    for inst in scheduler.instances.values():
        instances.add(1, inst.function_id, inst.version_id, inst.state.value)
        in_flight.add(inst.in_flight, inst.function_id, inst.version_id)
        held.update(u.unit_id for u in inst.units)
    for unit in scheduler.host.units:
        units.add(0, unit.gpu, "used")
        units.add(0, unit.gpu, "free")
        units.add(1, unit.gpu, "used" if unit.unit_id in held else "free")
    return [queued, in_flight, instances, units]
