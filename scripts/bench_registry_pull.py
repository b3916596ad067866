#!/usr/bin/env python3
"""What a pull from a local registry costs, anonymous and with credentials.

Two real registries (Debian's `docker-registry`) on 127.0.0.1: one open, one behind htpasswd
(bcrypt) auth. n times each, a fresh copy of the echo test image (new layer digests, so every
byte is downloaded) is uploaded, then pulled by nvcf-lite's DockerRuntime.ensure_image:
anonymous from the open one, with a RegistryAuth from the other; the image is removed after
each pull. Then the same image under a second tag is pulled while the first is still present:
nothing but the manifest is fetched, so that pull is the registry round trips alone, where
the credentials' own cost (a 401 challenge first, a bcrypt check on every request) shows.
Prints the medians and the ratios with/without credentials.

    .venv/bin/python scripts/bench_registry_pull.py [-n 5]

Needs Docker, the test images (scripts/build_test_images.py) and
`apt-get install docker-registry apache2-utils`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the test suite's registry support

from docker_registry_support import LocalRegistry  # noqa: E402
from docker_support import ECHO_IMAGE, docker_client_or_skip, ensure_test_images  # noqa: E402

from nvcf_lite.runtime.base import RegistryAuth  # noqa: E402
from nvcf_lite.runtime.docker import DockerRuntime  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


async def timed_pull(runtime: DockerRuntime, image: str, auth: RegistryAuth | None) -> float:
    t0 = time.perf_counter()
    pulled = await runtime.ensure_image(image, auth)
    took = time.perf_counter() - t0
    assert pulled, f"{image} was already present"
    return took


async def measure(n: int, folder: Path) -> dict[str, list[float]]:
    client = docker_client_or_skip()
    ensure_test_images()
    runtime = DockerRuntime.connect(None, pull_timeout_s=60)
    times: dict[str, list[float]] = {
        "anonymous": [],
        "credentials": [],
        "anonymous, manifest only": [],
        "credentials, manifest only": [],
    }
    try:
        with (
            LocalRegistry(client, folder / "open") as open_registry,
            LocalRegistry(client, folder / "auth", {USER: PASSWORD}) as auth_registry,
        ):
            auth = RegistryAuth(registry=auth_registry.host, username=USER, password=PASSWORD)
            for i in range(n):
                for kind, registry, sent in (
                    ("anonymous", open_registry, None),
                    ("credentials", auth_registry, auth),
                ):
                    image = registry.push(ECHO_IMAGE, f"bench/echo-{i}")
                    times[kind].append(await timed_pull(runtime, image, sent))
                    size_mb = client.images.get(image).attrs["Size"] / 1e6
                    again = registry.retag(f"bench/echo-{i}", "1", "2")
                    times[f"{kind}, manifest only"].append(await timed_pull(runtime, again, sent))
                    registry.forget(again)
                    registry.forget(image)
            print(f"image: {ECHO_IMAGE} re-layered, {size_mb:.1f} MB unpacked")
    finally:
        await runtime.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="pulls of each kind (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nvcf-lite-pull-bench-") as tmp:
        times = asyncio.run(measure(args.n, Path(tmp)))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    for kind, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{kind:>26}: median {medians[kind]:.3f} s  (each: {shown})")
    for suffix in ("", ", manifest only"):
        ratio = medians["credentials" + suffix] / medians["anonymous" + suffix]
        print(f"credentials / anonymous{suffix}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
