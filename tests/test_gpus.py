"""GPU inventory as users see it: `nvcf-lite gpus`, G1/G2 names, and MIG units from NVML.

Naming (nvcf_lite/domain/placement.py, README "Deployments"): GPU names `<GPU>`, MIG devices
`<GPU>_MIG_<profile>`, instance types `<GPU>.GPU.<n>x`, and `CPU` with `CPU.x1`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, make_config
from litestar.testing import TestClient

from nvcf_lite.domain.placement import CPU, CPU_INSTANCE_TYPE
from nvcf_lite.errors import Invalid
from nvcf_lite.inventory import build_host
from nvcf_lite.runtime.nvml import Gpu, GpuInventory, MigDevice, read_inventory

SIMULATED = json.dumps([{"name": "L40", "count": 2, "memory_mb": 46068}])


def nvcf_lite(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("nvcf-lite")
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")}
    return {
        **env,
        "NVCF_LITE_SYSTEM_CONFIG": "/nonexistent/nvcf-lite/config.toml",
        "NVCF_LITE_STORE__DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def test_gpus_command_prints_the_nvml_reason_and_simulated_gpus(tmp_path: Path) -> None:
    done = nvcf_lite(
        "gpus", env=clean_env(tmp_path, NVCF_LITE_GPUS__SIMULATED=SIMULATED), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    inventory = read_inventory()
    if inventory.error:  # this machine: no NVIDIA driver
        assert lines[0] == f"NVML: {inventory.error}"
        assert "NVML not available" in lines[0]
        assert "use the CPU instance type or simulated GPUs" in lines[0]
    else:  # a GPU machine: one line per GPU (and MIG device)
        for gpu in inventory.gpus:
            assert f"GPU {gpu.index}: {gpu.name} {gpu.uuid} {gpu.memory_mb} MiB" in lines
    assert "simulated: 2 x L40 (46068 MiB)" in lines
    at = lines.index("deployable (gpu: instance types):")
    assert lines[at + 1 : at + 3] == ["  L40: L40.GPU.1x, L40.GPU.2x", "  CPU: CPU.x1"]


def test_gpus_command_prints_what_each_instance_type_gets(tmp_path: Path) -> None:
    overrides = json.dumps([{"name": "CPU.x1", "cpu_cores": 0.5}, {"name": "T4.GPU.1x"}])
    env = clean_env(
        tmp_path,
        NVCF_LITE_GPUS__SIMULATED=SIMULATED,
        NVCF_LITE_GPUS__CPU_INSTANCE_MAX="4",
        NVCF_LITE_RESOURCES__CPU_CORES="4",
        NVCF_LITE_RESOURCES__MEMORY_MB="8192",
        NVCF_LITE_RESOURCES__INSTANCE_TYPES=overrides,
    )
    done = nvcf_lite("gpus", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = lines.index("each instance gets (CPU quota, memory limit, shared memory):")
    assert lines[at - 1] == (
        "instances share 4 CPU cores and 8192 MiB of memory "
        "(CPU: resources.cpu_cores; memory: resources.memory_mb)"
    )
    assert lines[at + 1 :] == [
        "  L40.GPU.1x: 2 CPU cores, 4096 MiB memory, 1024 MiB /dev/shm",
        "  L40.GPU.2x: 4 CPU cores, 8192 MiB memory, 1024 MiB /dev/shm",
        "  CPU.x1: 0.5 CPU cores, 2048 MiB memory, 1024 MiB /dev/shm",
        "resources.instance_types T4.GPU.1x: not an instance type of this host (unused)",
    ]


def test_gpus_command_honours_use_nvml(tmp_path: Path) -> None:
    env = clean_env(tmp_path, NVCF_LITE_GPUS__USE_NVML="false")
    done = nvcf_lite("gpus", env=env, cwd=tmp_path)
    assert done.returncode == 0
    assert "NVML disabled by configuration" in done.stdout


def test_gpus_command_rejects_a_bad_config(tmp_path: Path) -> None:
    done = nvcf_lite("gpus", env=clean_env(tmp_path, NVCF_LITE_GPUS__NOPE="1"), cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown configuration key [gpus] nope" in done.stderr


@pytest.fixture
def simulated(app_factory: Callable[..., TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_GPUS__USE_NVML="false",
        NVCF_LITE_GPUS__SIMULATED=SIMULATED,
        NVCF_LITE_GPUS__CPU_INSTANCE_MAX="4",
        NVCF_LITE_RESOURCES__CPU_CORES="4",
        NVCF_LITE_RESOURCES__MEMORY_MB="16384",
        NVCF_LITE_RESOURCES__SHM_SIZE_MB="2048",
    )
    return app_factory(config)


@pytest.mark.parametrize("prefix", ["/v2/nvcf", "/v2/orgs/local/nvcf"])
def test_cluster_groups_name_simulated_gpus_and_cpu(
    simulated: TestClient[Any], prefix: str
) -> None:
    r = simulated.get(f"{prefix}/clusterGroups", headers=bearer())
    assert r.status_code == 200, r.text
    (group,) = r.json()["clusterGroups"]
    assert group["name"] == "local"
    assert group["ncaId"] == "nvcf-lite-local" and group["authorizedNcaIds"] == ["nvcf-lite-local"]
    assert group["id"] and group["clusters"][0]["id"] == "local"
    gpus = {g["name"]: g["instanceTypes"] for g in group["gpus"]}
    assert list(gpus) == ["L40", "CPU"]
    # names as clients read them; what an instance gets in words and in nvcf-lite's fields
    assert gpus["L40"] == [
        {
            "name": "L40.GPU.1x",
            "description": "1x L40 (44 GiB each); 2 CPU cores, 8192 MiB memory, 2048 MiB /dev/shm",
            "default": True,
            "cpuCores": 2.0,
            "memoryMb": 8192,
            "shmSizeMb": 2048,
        },
        {
            "name": "L40.GPU.2x",
            "description": "2x L40 (44 GiB each); 4 CPU cores, 16.0 GiB memory, 2048 MiB /dev/shm",
            "default": False,
            "cpuCores": 4.0,
            "memoryMb": 16384,
            "shmSizeMb": 2048,
        },
    ]
    assert gpus["CPU"] == [
        {
            "name": "CPU.x1",
            "description": "one container with no GPU; 1 CPU core, 4096 MiB memory, "
            "2048 MiB /dev/shm",
            "default": True,
            "cpuCores": 1.0,
            "memoryMb": 4096,
            "shmSizeMb": 2048,
        }
    ]


def test_supported_gpus_lists_the_same_names(simulated: TestClient[Any]) -> None:
    r = simulated.get("/v2/nvcf/supportedGpus", headers=bearer())
    assert r.status_code == 200, r.text
    assert r.json() == [{"gpu": "L40", "backend": "local"}, {"gpu": "CPU", "backend": "local"}]


def test_deploy_accepts_the_advertised_names_only(simulated: TestClient[Any]) -> None:
    r = simulated.post(
        "/v2/nvcf/functions",
        json={"name": "echo", "inferenceUrl": "/echo", "containerImage": "nvcf-lite-test/echo:1"},
        headers=bearer(),
    )
    fn = r.json()["function"]
    path = f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"

    def spec(**fields: Any) -> Any:
        body = {"deploymentSpecifications": [{"minInstances": 0, "maxInstances": 1, **fields}]}
        return simulated.post(path, json=body, headers=bearer())

    r = spec(gpu="L40", instanceType="L40.GPU.3x")
    assert r.status_code == 400
    assert "this host offers: L40.GPU.1x, L40.GPU.2x" in r.json()["detail"]
    r = spec(gpu="A100", instanceType="A100.GPU.1x")
    assert r.status_code == 400
    assert "L40 (L40.GPU.1x, L40.GPU.2x); CPU (CPU.x1)" in r.json()["detail"]
    r = spec(gpu="l40")  # case-insensitive; the first instance type is the default
    assert r.status_code == 200, r.text
    (got,) = r.json()["deployment"]["deploymentSpecifications"]
    assert (got["gpu"], got["instanceType"]) == ("L40", "L40.GPU.1x")


# --- build_host from an NVML inventory (no GPU needed) ---------------------------------------


def mig_inventory() -> GpuInventory:
    a100 = Gpu(
        index=0,
        uuid="GPU-a100",
        name="NVIDIA A100-SXM4-40GB",
        memory_mb=40960,
        mig_devices=[
            MigDevice(
                uuid=f"MIG-a100-{slot}",
                name="NVIDIA A100-SXM4-40GB MIG 1g.5gb",
                memory_mb=4864,
                parent_index=0,
                index=slot,
            )
            for slot in range(2)
        ]
        + [
            MigDevice(
                uuid="MIG-a100-big",
                name="NVIDIA A100-SXM4-40GB MIG 3g.20gb",
                memory_mb=19968,
                parent_index=0,
                index=2,
            )
        ],
    )
    h100 = Gpu(index=1, uuid="GPU-h100", name="NVIDIA H100 80GB HBM3", memory_mb=81559)
    return GpuInventory(gpus=[a100, h100], driver_version="550.54.15")


def test_build_host_makes_mig_devices_their_own_gpu_names(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", NVCF_LITE_GPUS__SIMULATED=SIMULATED)
    host = build_host(config, mig_inventory())
    assert host.gpu_names() == ["A100_MIG_1g.5gb", "A100_MIG_3g.20gb", "H100", "L40", CPU]
    by_name = {u.unit_id: u for u in host.units}
    # a MIG-enabled GPU is placed only through its MIG devices, never as a whole
    assert "GPU-a100" not in by_name
    assert by_name["MIG-a100-0"].gpu == "A100_MIG_1g.5gb" and by_name["MIG-a100-0"].physical
    assert by_name["GPU-h100"].gpu == "H100" and by_name["GPU-h100"].physical
    assert not by_name["SIM-L40-0"].physical
    assert host.instance_types("A100_MIG_1g.5gb") == [
        "A100_MIG_1g.5gb.GPU.1x",
        "A100_MIG_1g.5gb.GPU.2x",
    ]
    assert host.instance_types("A100_MIG_3g.20gb") == ["A100_MIG_3g.20gb.GPU.1x"]
    assert host.instance_types("H100") == ["H100.GPU.1x"]
    assert host.instance_types(CPU) == [CPU_INSTANCE_TYPE]
    assert host.memory_mb("A100_MIG_1g.5gb") == 4864

    gpu, itype, units = host.resolve("a100_mig_1g.5gb", "A100_MIG_1G.5GB.GPU.2X")
    assert (gpu, itype, units) == ("A100_MIG_1g.5gb", "A100_MIG_1g.5gb.GPU.2x", 2)
    placed = host.place(gpu, units, used=set())
    assert placed is not None and [u.unit_id for u in placed] == ["MIG-a100-0", "MIG-a100-1"]
    assert host.place(gpu, 1, used={"MIG-a100-0", "MIG-a100-1"}) is None
    with pytest.raises(Invalid, match=re.escape("A100_MIG_3g.20gb.GPU.1x")):
        host.resolve("A100_MIG_3g.20gb", "A100_MIG_3g.20gb.GPU.2x")


def test_build_host_without_nvml_offers_cpu_and_says_why(tmp_path: Path) -> None:
    reason = "NVML not available (test): no NVIDIA driver on this host"
    host = build_host(make_config(tmp_path / "data"), GpuInventory(gpus=[], error=reason))
    assert host.gpu_names() == [CPU]
    assert host.offer_text() == f"CPU (CPU.x1). No NVIDIA GPUs: {reason}"
    no_cpu = make_config(tmp_path / "data", NVCF_LITE_GPUS__CPU_INSTANCE_MAX="0")
    assert build_host(no_cpu, GpuInventory(gpus=[])).gpu_names() == []
