"""A fake GPU host: a fake NVML, a fake `nvidia-smi` and a fake NVIDIA container toolkit.

It lets `scripts/gpu-check-rehearsal.sh` run `scripts/gpu-check.sh` end to end on a machine
without NVIDIA hardware, through the real Docker engine:

- `nvml.FakeNvml` stands in for the `pynvml` module (unit tests set it with monkeypatch;
  `site/sitecustomize.py` installs it in every Python process started with
  `PYTHONPATH=tests/fake_gpu_host/site` and `FAKE_GPU_HOST_GPUS=<gpus.json>`);
- `bin/nvidia-smi` prints `nvidia-smi -L` for the same GPUs;
- `bin/nvidia-container-runtime-hook`: Docker registers its `nvidia` device driver when a binary
  of that name is on dockerd's PATH at start, and then runs it as an OCI prestart hook for every
  container with a `DeviceRequest(driver="nvidia")`. This fake does what the real hook does that
  a check can see: it refuses unknown devices, and it puts an `nvidia-smi` into the container
  that lists exactly the devices of NVIDIA_VISIBLE_DEVICES.

The GPUs come from a JSON file (see `gpus.load_devices`). Nothing here is part of nvcf-lite.
"""
