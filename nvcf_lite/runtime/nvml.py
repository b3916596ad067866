"""The GPU inventory of this host, read once through NVML; the only module that imports pynvml.

Without NVML (no driver, no library, a broken driver) the inventory is empty and `error` says
why in words a user can act on: the API keeps serving and GPU deployments fail with that reason.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pynvml

MIB = 1024 * 1024
NO_GPU_ADVICE = "GPU deployments are refused, use the CPU instance type or simulated GPUs"
# Docker gives a container the driver's libraries only when asked to.
NO_GPU_IN_CONTAINER = (
    "no NVIDIA driver in this container (start it with `docker run --gpus all`; the host needs "
    "the NVIDIA driver and container toolkit)"
)
_CAUSES: dict[type[Exception], str] = {
    pynvml.NVMLError_LibraryNotFound: "no NVIDIA driver on this host",
    pynvml.NVMLError_DriverNotLoaded: "the NVIDIA kernel driver is not loaded",
    pynvml.NVMLError_NoPermission: "this user may not talk to the NVIDIA driver",
    pynvml.NVMLError_LibRmVersionMismatch: "the NVIDIA driver and library versions differ "
    "(reboot or reload the driver)",
}
_BRANDS = ("NVIDIA", "TESLA", "GEFORCE", "QUADRO")
_SERIES = ("RTX", "GTX", "TITAN")


class MigDevice(msgspec.Struct, frozen=True):
    """One MIG device; `uuid` (MIG-...) is what device_ids / NVIDIA_VISIBLE_DEVICES take."""

    uuid: str
    name: str
    memory_mb: int  # MiB
    parent_index: int  # index of the physical GPU
    index: int  # MIG device slot on that GPU (nvmlDeviceGetMigDeviceHandleByIndex)


class Gpu(msgspec.Struct, frozen=True):
    index: int
    uuid: str
    name: str  # NVML product name, e.g. "NVIDIA H100 80GB HBM3"; see gpu_short_name
    memory_mb: int  # MiB
    mig_devices: list[MigDevice] = []  # empty unless MIG mode is enabled
    node: str = ""  # the Swarm node that holds it (runtime swarm); "" on this host


class GpuInventory(msgspec.Struct, frozen=True):
    gpus: list[Gpu]
    error: str | None = None  # why there are no GPUs, when NVML could not be read
    driver_version: str | None = None
    nodes: list[str] = []  # the Swarm nodes (runtime swarm), with or without GPUs


def read_inventory(*, in_container: bool = False) -> GpuInventory:
    """Every GPU (and its MIG devices) NVML sees; never raises for NVML errors.

    `in_container`: this process runs in a container, where a missing NVML library usually
    means `docker run` lacked `--gpus all` (the error says so)."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuInventory(gpus=[], error=_unavailable(exc, in_container))
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        count = pynvml.nvmlDeviceGetCount()
        return GpuInventory(gpus=[_read_gpu(i) for i in range(count)], driver_version=driver)
    except pynvml.NVMLError as exc:
        return GpuInventory(
            gpus=[], error=f"NVML failed while listing GPUs ({exc}); {NO_GPU_ADVICE}"
        )
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # nothing useful to do about a failed shutdown


def gpu_short_name(nvml_name: str) -> str:
    """The NVCF-style GPU name for an NVML product name.

    The rule: split the name on spaces and dashes; drop leading brand words ("NVIDIA", "Tesla",
    "GeForce", "Quadro"); the next word is the model ("H100", "L40S", "A10G", "T4"), joined with
    one more word by "_" when it is a series word ("RTX 4090" -> "RTX_4090", "RTX A6000" ->
    "RTX_A6000"). Memory size, form factor and MIG profile words are dropped, except that an
    A100 with 80GB becomes "A100_80GB", because NVCF names the two A100 sizes apart.
    Examples: "NVIDIA H100 80GB HBM3" -> "H100", "NVIDIA A100-SXM4-80GB" -> "A100_80GB",
    "NVIDIA A100-SXM4-40GB" -> "A100", "NVIDIA GeForce RTX 4090" -> "RTX_4090", "Tesla T4" -> "T4".
    """
    words = [w for w in re.split(r"[\s-]+", nvml_name.strip().upper()) if w]
    while words and words[0] in _BRANDS:
        words.pop(0)
    if not words:
        return nvml_name.strip()
    model, rest = words[0], words[1:]
    if model in _SERIES and rest:
        model, rest = f"{model}_{rest[0]}", rest[1:]
    if model == "A100" and "80GB" in rest:
        model = "A100_80GB"
    return model


def _read_gpu(index: int) -> Gpu:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return Gpu(
        index=index,
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_mb=_memory_mb(handle),
        mig_devices=_read_mig_devices(handle, index) if _mig_enabled(handle) else [],
    )


def _mig_enabled(handle: Any) -> bool:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:
        return False  # NotSupported (pre-Ampere, consumer cards) or an old driver
    return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)


def _read_mig_devices(handle: Any, parent_index: int) -> list[MigDevice]:
    devices: list[MigDevice] = []
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except (pynvml.NVMLError_NotFound, pynvml.NVMLError_InvalidArgument):
            continue  # an empty slot: no GPU/compute instance was created there
        devices.append(
            MigDevice(
                uuid=_text(pynvml.nvmlDeviceGetUUID(mig)),
                name=_text(pynvml.nvmlDeviceGetName(mig)),
                memory_mb=_memory_mb(mig),
                parent_index=parent_index,
                index=slot,
            )
        )
    return devices


def _memory_mb(handle: Any) -> int:
    return int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB


def _unavailable(exc: Exception, in_container: bool = False) -> str:
    cause = next((text for cls, text in _CAUSES.items() if isinstance(exc, cls)), None)
    cause = cause or "the NVIDIA driver did not answer"
    if in_container and isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        cause = NO_GPU_IN_CONTAINER
    return f"NVML not available ({exc}): {cause}; {NO_GPU_ADVICE}"


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes where newer ones return str.
    return value.decode(errors="replace") if isinstance(value, bytes) else value
