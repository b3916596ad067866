"""gRPC invocation overhead: unary calls and a 64-message server stream, straight at the
grpc-echo instance and through nvcf-lite's gRPC endpoint, alternating, in one run.

Starts `nvcf-lite serve` with `invocation.grpc_port`, deploys nvcf-lite-test/grpc-echo (build it
with scripts/build_test_images.py), and drives both targets with grpcio's asyncio client at
each concurrency for `--seconds`; prints req/s, p50/p99, the ratio and the added p50.

    .venv/bin/python scripts/bench_grpc.py [--seconds 5] [--concurrency 1 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import grpc.aio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_invoke import Server, free_port, remove_containers

IMAGE = "nvcf-lite-test/grpc-echo:1"
KEY = "nvapi-" + "B" * 60 + "bnch"
STREAM = json.dumps({"count": 64, "interval": 0}).encode()


def deploy(server: Server, slots: int) -> tuple[str, int]:
    """The grpc-echo function, ACTIVE: its id and its instance's published port."""
    body = {"name": "grpc-bench", "inferenceUrl": "/grpc", "inferencePort": 8001}
    status, got = server.call("POST", "/v2/nvcf/functions", {**body, "containerImage": IMAGE})
    assert status == 200, got
    fid, vid = got["function"]["id"], got["function"]["versionId"]
    spec = {"gpu": "CPU", "instanceType": "CPU.x1", "minInstances": 1, "maxInstances": 1}
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    spec["maxRequestConcurrency"] = slots
    status, got = server.call("POST", path, {"deploymentSpecifications": [spec]})
    assert status == 200, got
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, got = server.call("GET", path)
        info = got.get("deployment", {})
        instances = info.get("instances") or []
        if info.get("functionStatus") == "ACTIVE" and instances and instances[0].get("hostPort"):
            return fid, int(instances[0]["hostPort"])
        time.sleep(0.2)
    raise RuntimeError(f"grpc-echo not ACTIVE: {json.dumps(got)[:1000]}")


async def drive(address: str, metadata: list[tuple[str, str]], shape: str, c: int, s: float):
    """(calls per second, latencies in seconds) of `c` workers for `s` seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        unary = channel.unary_unary("/nvcf.test.Echo/Unary")
        stream = channel.unary_stream("/nvcf.test.Echo/ServerStream")
        latencies: list[float] = []
        end = time.perf_counter() + s

        async def worker() -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                if shape == "unary":
                    await unary(b'{"x": 1}', metadata=metadata)
                else:
                    got = [m async for m in stream(STREAM, metadata=metadata)]
                    assert len(got) == 64
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        return len(latencies) / (time.perf_counter() - started), latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args(argv)
    namespace = f"bench-grpc-{uuid.uuid4().hex[:8]}"
    grpc_port = free_port()
    with tempfile.TemporaryDirectory(prefix="nvcf-lite-bench-grpc-") as tmp:
        env = {"NVCF_LITE_INVOCATION__GRPC_PORT": str(grpc_port)}
        server = Server(Path(tmp), KEY, namespace, count_sql=False, extra_env=env)
        server.start()
        try:
            fid, direct_port = deploy(server, max(args.concurrency))
            through = [("function-id", fid), ("authorization", f"Bearer {KEY}")]
            print(f"{'shape':8} {'c':>3} {'direct/s':>9} {'through/s':>10} {'ratio':>6}"
                  f" {'p50 d':>8} {'p50 t':>8} {'p99 t':>8} {'added p50':>10}")  # fmt: skip
            for shape in ("unary", "stream64"):
                for c in args.concurrency:
                    d_rate, d_lat = asyncio.run(
                        drive(f"127.0.0.1:{direct_port}", [], shape, c, args.seconds)
                    )
                    t_rate, t_lat = asyncio.run(
                        drive(f"127.0.0.1:{grpc_port}", through, shape, c, args.seconds)
                    )
                    d50, t50, t99 = pct(d_lat, 50), pct(t_lat, 50), pct(t_lat, 99)
                    print(
                        f"{shape:8} {c:>3} {d_rate:>9.0f} {t_rate:>10.0f} {t_rate / d_rate:>6.2f}"
                        f" {d50 * 1e3:>6.2f}ms {t50 * 1e3:>6.2f}ms {t99 * 1e3:>6.2f}ms"
                        f" {(t50 - d50) * 1e3:>8.2f}ms"
                    )
        finally:
            server.stop()
            remove_containers(namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
