"""The GPU inventory: the empty answer without NVML, and enumeration (MIG too) on a fake NVML."""

from __future__ import annotations

import pynvml
import pytest
from fake_gpu_host.gpus import FakeDevice
from fake_gpu_host.nvml import FakeNvml

from nvcf_lite.runtime import nvml
from nvcf_lite.runtime.nvml import Gpu, GpuInventory, MigDevice, gpu_short_name, read_inventory

ADVICE = "GPU deployments are refused, use the CPU instance type or simulated GPUs"


def three_gpus() -> list[FakeDevice]:
    mig_3g = FakeDevice("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "MIG-3g-uuid", 19968)
    mig_1g = FakeDevice(b"NVIDIA A100-SXM4-40GB MIG 1g.5gb", "MIG-1g-uuid", 4864)
    return [
        FakeDevice("NVIDIA H100 80GB HBM3", "GPU-h100", 81559, mig_mode=[0, 0]),
        FakeDevice(
            b"NVIDIA A100-SXM4-40GB",  # older nvidia-ml-py releases answer bytes
            "GPU-a100",
            40960,
            mig_mode=[pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE],
            mig_slots=[mig_3g, None, mig_1g, None],
        ),
        FakeDevice("Tesla T4", "GPU-t4", 15360),
    ]


def test_this_host_answers_without_raising() -> None:
    inventory = read_inventory()
    if inventory.gpus:
        assert inventory.error is None and inventory.driver_version
    else:
        assert inventory.error is not None and inventory.error.startswith("NVML not available (")
        assert inventory.error.endswith(ADVICE)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
            f"NVML not available (NVML Shared Library Not Found): no NVIDIA driver on this host; "
            f"{ADVICE}",
        ),
        (
            pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
            f"NVML not available (Driver Not Loaded): the NVIDIA kernel driver is not loaded; "
            f"{ADVICE}",
        ),
        (
            pynvml.NVML_ERROR_UNKNOWN,
            f"NVML not available (Unknown Error): the NVIDIA driver did not answer; {ADVICE}",
        ),
    ],
)
def test_without_nvml_the_inventory_is_empty_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, code: int, expected: str
) -> None:
    fake = FakeNvml(three_gpus(), init_error=code)
    monkeypatch.setattr(nvml, "pynvml", fake)
    assert read_inventory() == GpuInventory(gpus=[], error=expected, driver_version=None)
    assert fake.shutdowns == 0  # nothing to shut down after a failed init


def test_enumerates_gpus_and_mig_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(three_gpus())
    monkeypatch.setattr(nvml, "pynvml", fake)

    inventory = read_inventory()

    assert inventory.error is None
    assert inventory.driver_version == "550.54.15"
    assert inventory.gpus == [
        Gpu(0, "GPU-h100", "NVIDIA H100 80GB HBM3", 81559, []),
        Gpu(
            1,
            "GPU-a100",
            "NVIDIA A100-SXM4-40GB",
            40960,
            [
                MigDevice("MIG-3g-uuid", "NVIDIA A100-SXM4-40GB MIG 3g.20gb", 19968, 1, 0),
                MigDevice("MIG-1g-uuid", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864, 1, 2),
            ],
        ),
        Gpu(2, "GPU-t4", "Tesla T4", 15360, []),
    ]
    assert fake.shutdowns == 1


def test_mig_pending_is_not_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = three_gpus()
    devices[1].mig_mode = [0, pynvml.NVML_DEVICE_MIG_ENABLE]  # enabled only after a GPU reset
    monkeypatch.setattr(nvml, "pynvml", FakeNvml(devices))
    assert read_inventory().gpus[1].mig_devices == []


def test_a_failure_while_listing_empties_the_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(three_gpus())
    fake.lost_gpu = 1
    monkeypatch.setattr(nvml, "pynvml", fake)

    inventory = read_inventory()

    assert inventory.gpus == []
    assert inventory.error == f"NVML failed while listing GPUs (GPU is lost); {ADVICE}"
    assert fake.shutdowns == 1


@pytest.mark.parametrize(
    ("nvml_name", "short"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100_80GB"),
        ("NVIDIA A100 80GB PCIe", "A100_80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10G", "A10G"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("NVIDIA GeForce RTX 4090", "RTX_4090"),
        ("NVIDIA RTX A6000", "RTX_A6000"),
        ("Quadro RTX 8000", "RTX_8000"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA", "NVIDIA"),
    ],
)
def test_gpu_short_name(nvml_name: str, short: str) -> None:
    assert gpu_short_name(nvml_name) == short
