"""The fake `nvidia-smi` and the fake `nvidia-container-runtime-hook` (see __init__.py).

    toolkit.py smi [-L]        # the host's nvidia-smi -L, from $FAKE_GPU_HOST_GPUS
    toolkit.py hook prestart   # the OCI prestart hook; the container state JSON on stdin

Standard library only: dockerd runs the hook with its own environment and python3.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fake_gpu_host

from fake_gpu_host.gpus import FakeDevice, known_ids, load_devices, smi_listing

NO_VISIBLE = {"", "void", "none"}


def devices() -> list[FakeDevice]:
    path = os.environ.get("FAKE_GPU_HOST_GPUS")
    if not path:
        sys.exit("fake nvidia toolkit: FAKE_GPU_HOST_GPUS is not set")
    return load_devices(path)


def smi(args: list[str]) -> int:
    if args and args != ["-L"]:
        print(f"fake nvidia-smi: only -L is implemented (got {' '.join(args)})", file=sys.stderr)
        return 2
    sys.stdout.write(smi_listing(devices()))
    return 0


def hook(args: list[str]) -> int:
    """What the real prestart hook does that a check can see from outside the container."""
    if args[:1] != ["prestart"]:
        return 0  # poststart / poststop: nothing to do
    state = json.load(sys.stdin)
    bundle = Path(state["bundle"])
    config = json.loads((bundle / "config.json").read_text())
    env = dict(e.split("=", 1) for e in config["process"].get("env", []) if "=" in e)
    wanted = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if wanted in NO_VISIBLE:
        return 0
    all_devices = devices()
    ids = [i.strip() for i in wanted.split(",") if i.strip()]
    unknown = [i for i in ids if i not in known_ids(all_devices)]
    if unknown:
        # The real hook's words, so that nvcf-lite reports what a user would see.
        print(f"nvidia-container-cli: device error: {unknown[0]}: unknown device", file=sys.stderr)
        return 1
    visible = None if "all" in ids else ids
    root = Path(config["root"]["path"])
    rootfs = root if root.is_absolute() else bundle / root
    install_smi(rootfs, env.get("PATH", ""), smi_listing(all_devices, visible))
    return 0


def install_smi(rootfs: Path, path: str, listing: str) -> None:
    """An /usr/bin/nvidia-smi in the container that prints `listing` (the real toolkit mounts
    the host's binary and driver libraries instead); needs a python3 or a /bin/sh in the image."""
    dirs = [d for d in path.split(":") if d.startswith("/")]
    python = next((f"{d}/python3" for d in dirs if (rootfs / d[1:] / "python3").exists()), None)
    target = rootfs / "usr/bin/nvidia-smi"
    target.parent.mkdir(parents=True, exist_ok=True)
    if python:
        script = f"#!{python}\nimport sys\nsys.stdout.write({listing!r})\n"
    elif (rootfs / "bin/sh").exists():
        script = "#!/bin/sh\ncat <<'NVIDIA_SMI_EOF'\n" + listing + "NVIDIA_SMI_EOF\n"
    else:
        print("fake nvidia toolkit: no python3 or /bin/sh in the image", file=sys.stderr)
        return
    target.write_text(script)
    target.chmod(0o755)


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    return smi(args) if command == "smi" else hook(args)


if __name__ == "__main__":
    sys.exit(main())
