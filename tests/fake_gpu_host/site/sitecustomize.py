"""Installs the fake NVML in this Python process when FAKE_GPU_HOST_GPUS names a GPU file.

Used with `PYTHONPATH=tests/fake_gpu_host/site` by scripts/gpu-check-rehearsal.sh, so that
`nvcf-lite serve`, `nvcf-lite gpus` and `pytest -m gpu` all see the same fake GPUs.
"""

import os
import sys
from pathlib import Path

_GPUS = os.environ.get("FAKE_GPU_HOST_GPUS")
if _GPUS:
    _TESTS = str(Path(__file__).resolve().parents[2])
    sys.path.insert(0, _TESTS)
    try:
        from fake_gpu_host.gpus import load_devices
        from fake_gpu_host.nvml import FakeNvml

        sys.modules["pynvml"] = FakeNvml(load_devices(_GPUS))  # type: ignore[assignment]
    except ModuleNotFoundError as exc:
        if exc.name != "pynvml":
            raise
        # A Python without nvidia-ml-py (the fake nvidia-smi's python3): nothing to fake.
    finally:
        sys.path.remove(_TESTS)
