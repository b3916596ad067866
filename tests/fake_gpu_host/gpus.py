"""The fake GPUs (standard library only: the toolkit hook runs under dockerd's python3)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIG_ENABLED = 1  # pynvml.NVML_DEVICE_MIG_ENABLE


@dataclass
class FakeDevice:
    name: str | bytes
    uuid: str
    memory_mb: int
    mig_mode: list[int] | None = None  # None: MIG not supported; [current, pending]
    mig_slots: list[FakeDevice | None] | None = None  # None entries: empty slots

    @property
    def text_name(self) -> str:
        return self.name.decode() if isinstance(self.name, bytes) else self.name


def load_devices(path: str | Path) -> list[FakeDevice]:
    """GPUs from JSON: `{"gpus": [{"name", "uuid", "memory_mb", "mig": [slot, ...]}]}`.

    A GPU with a `mig` list has MIG enabled; each slot is null (empty) or a MIG device
    `{"name", "uuid", "memory_mb"}` with the NVML name, e.g. "NVIDIA A100-SXM4-40GB MIG 1g.5gb".
    """
    doc = json.loads(Path(path).read_text())
    return [_device(gpu) for gpu in doc["gpus"]]


def _device(doc: dict[str, Any]) -> FakeDevice:
    device = FakeDevice(doc["name"], doc["uuid"], int(doc["memory_mb"]))
    if "mig" in doc:
        device.mig_mode = [MIG_ENABLED, MIG_ENABLED]
        device.mig_slots = [None if s is None else _device(s) for s in doc["mig"]]
    return device


def smi_listing(devices: list[FakeDevice], visible: list[str] | None = None) -> str:
    """What `nvidia-smi -L` prints; with `visible` (UUIDs or indexes, as NVIDIA_VISIBLE_DEVICES
    takes them) only those GPUs and MIG devices, numbered from 0 as inside a container."""
    lines: list[str] = []
    shown = 0
    for index, gpu in enumerate(devices):
        slots = [(slot, mig) for slot, mig in enumerate(gpu.mig_slots or []) if mig is not None]
        if visible is None or gpu.uuid in visible or str(index) in visible:
            migs = slots
        else:
            migs = [(slot, mig) for slot, mig in slots if mig.uuid in visible]
            if not migs:
                continue
        lines.append(f"GPU {shown}: {gpu.text_name} (UUID: {gpu.uuid})")
        for number, (_slot, mig) in enumerate(migs):
            profile = mig.text_name.rsplit("MIG", 1)[-1].strip()
            lines.append(f"  MIG {profile:<11} Device {number:>2}: (UUID: {mig.uuid})")
        shown += 1
    return "".join(line + "\n" for line in lines)


def known_ids(devices: list[FakeDevice]) -> set[str]:
    """Every name NVIDIA_VISIBLE_DEVICES may use for these devices."""
    ids = {"all"}
    for index, gpu in enumerate(devices):
        ids |= {gpu.uuid, str(index)}
        ids |= {mig.uuid for mig in gpu.mig_slots or [] if mig is not None}
    return ids
