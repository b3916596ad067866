"""`FakeNvml` stands in for the pynvml module over `FakeDevice`s.

NVML_* constants and error classes come from the real pynvml; every nvml* function the
inventory calls is defined here (any other is an AttributeError, so a new NVML call in
nvcf_lite.runtime.nvml shows up as a failing test, not as a silent real-driver call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pynvml

from fake_gpu_host.gpus import FakeDevice

MIB = 1024 * 1024


@dataclass
class Memory:
    total: int


@dataclass(frozen=True)
class Handle:
    gpu: int
    mig_slot: int | None = None


class FakeNvml:
    def __init__(
        self,
        devices: list[FakeDevice],
        init_error: int | None = None,
        driver_version: str = "550.54.15",
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.driver_version = driver_version
        self.shutdowns = 0
        self.lost_gpu: int | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("NVML"):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def _device(self, handle: Handle) -> FakeDevice:
        device = self.devices[handle.gpu]
        if handle.mig_slot is None:
            return device
        slot = (device.mig_slots or [])[handle.mig_slot]
        assert slot is not None
        return slot

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        if index == self.lost_gpu:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return Handle(index)

    def nvmlDeviceGetName(self, handle: Handle) -> str | bytes:
        return self._device(handle).name

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return self._device(handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> Memory:
        return Memory(total=self._device(handle).memory_mb * MIB + 12345)

    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:
        mode = self._device(handle).mig_mode
        if mode is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return mode

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Handle) -> int:
        return len(self._device(handle).mig_slots or [])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, index: int) -> Handle:
        if (self._device(handle).mig_slots or [])[index] is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return Handle(handle.gpu, index)
