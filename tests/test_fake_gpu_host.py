"""The fake GPU host that scripts/gpu-check-rehearsal.sh runs scripts/gpu-check.sh on.

The rehearsal is only as good as its fakes: the hook must refuse unknown devices and show a
container exactly its devices, and the fake NVML must reach `nvcf-lite` through sitecustomize.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_gpu_host.gpus import FakeDevice, known_ids, load_devices, smi_listing

FAKE = Path(__file__).parent / "fake_gpu_host"
GPUS = {
    "gpus": [
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaa", "memory_mb": 81559},
        {
            "name": "NVIDIA A100-SXM4-40GB",
            "uuid": "GPU-bbb",
            "memory_mb": 40960,
            "mig": [
                {"name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "uuid": "MIG-one", "memory_mb": 1},
                None,
                {"name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "uuid": "MIG-two", "memory_mb": 1},
            ],
        },
    ]
}


@pytest.fixture
def gpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(GPUS))
    return path


def test_loads_gpus_and_mig_slots(gpus_file: Path) -> None:
    h100, a100 = load_devices(gpus_file)
    assert h100 == FakeDevice("NVIDIA H100 80GB HBM3", "GPU-aaa", 81559)
    assert a100.mig_mode == [1, 1]
    assert [s and s.uuid for s in a100.mig_slots or []] == ["MIG-one", None, "MIG-two"]
    assert known_ids([h100, a100]) == {"all", "0", "1", "GPU-aaa", "GPU-bbb", "MIG-one", "MIG-two"}


def test_listing_shows_only_the_visible_devices_numbered_from_zero(gpus_file: Path) -> None:
    devices = load_devices(gpus_file)
    assert smi_listing(devices).splitlines() == [
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaa)",
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbb)",
        "  MIG 3g.20gb     Device  0: (UUID: MIG-one)",
        "  MIG 1g.5gb      Device  1: (UUID: MIG-two)",
    ]
    assert smi_listing(devices, ["GPU-bbb"]).startswith("GPU 0: NVIDIA A100-SXM4-40GB")
    assert smi_listing(devices, ["MIG-two"]).splitlines() == [
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-bbb)",
        "  MIG 1g.5gb      Device  0: (UUID: MIG-two)",
    ]


def run_hook(
    bundle: Path, gpus_file: Path, visible: str | None
) -> subprocess.CompletedProcess[str]:
    env = ["PATH=/opt/python/bin:/usr/bin"] + (
        [f"NVIDIA_VISIBLE_DEVICES={visible}"] * bool(visible)
    )
    config = {"root": {"path": "rootfs"}, "process": {"env": env}}
    (bundle / "config.json").write_text(json.dumps(config))
    state = {"ociVersion": "1.0.2", "id": "x", "status": "creating", "bundle": str(bundle)}
    return subprocess.run(
        [str(FAKE / "bin/nvidia-container-runtime-hook"), "prestart"],
        input=json.dumps(state),
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_GPU_HOST_GPUS": str(gpus_file)},
        timeout=30,
    )


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    python = bundle / "rootfs/opt/python/bin/python3"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    return bundle


def test_hook_gives_the_container_an_nvidia_smi_with_its_devices(
    bundle: Path, gpus_file: Path
) -> None:
    done = run_hook(bundle, gpus_file, "MIG-two")
    assert done.returncode == 0, done.stderr
    smi = bundle / "rootfs/usr/bin/nvidia-smi"
    assert smi.read_text().startswith("#!/opt/python/bin/python3\n")  # the image's python
    shown = subprocess.run([sys.executable, str(smi), "-L"], capture_output=True, text=True)
    assert shown.stdout == smi_listing(load_devices(gpus_file), ["MIG-two"])


def test_hook_refuses_an_unknown_device_like_the_real_one(bundle: Path, gpus_file: Path) -> None:
    done = run_hook(bundle, gpus_file, "GPU-aaa,GPU-zzz")
    assert done.returncode == 1
    assert "nvidia-container-cli: device error: GPU-zzz: unknown device" in done.stderr
    assert not (bundle / "rootfs/usr/bin/nvidia-smi").exists()


def test_hook_leaves_containers_without_gpus_alone(bundle: Path, gpus_file: Path) -> None:
    assert run_hook(bundle, gpus_file, None).returncode == 0
    assert not (bundle / "rootfs/usr/bin").exists()


def test_sitecustomize_puts_the_fake_gpus_into_nvcf_lite(gpus_file: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")}
    env |= {
        "PYTHONPATH": str(FAKE / "site"),
        "FAKE_GPU_HOST_GPUS": str(gpus_file),
        "NVCF_LITE_STORE__DATA_DIR": str(tmp_path / "data"),
        "NVCF_LITE_SYSTEM_CONFIG": "/nonexistent/nvcf-lite/config.toml",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("nvcf-lite")), "gpus"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "GPU 0: NVIDIA H100 80GB HBM3 GPU-aaa 81559 MiB" in done.stdout
    assert "  A100_MIG_1g.5gb: A100_MIG_1g.5gb.GPU.1x" in done.stdout, done.stdout
