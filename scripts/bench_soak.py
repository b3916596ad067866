"""A bounded soak of one `nvcf-lite serve` with mixed traffic, loopback only.

Starts the server (its own process, a fresh data_dir, its own Docker namespace) with the echo
test image (scripts/build_test_images.py), then for `--seconds` drives, from this process with
an asyncio aiohttp client, at once:

    sync     pexec invocations answered within their poll window (200)
    async    invocations that outlast a 1 s window (202), then status polls until 200
    sse      streamed invocations (Accept: text/event-stream) read to `data: [DONE]`
    assets   create, upload (64 KiB), read back the metadata, delete
    churn    deploy a second function, wait ACTIVE, invoke it, undeploy it, wait INACTIVE
    keys     `nvcf-lite keys create`, invoke with the key (200), `keys revoke`, invoke (401)

and prints throughput, counts by kind and status, p50/p99 per kind, and the server's open
file descriptors and RSS (its whole process tree) at the start (after a warm-up) and at the
end. `--json PATH` also writes these figures (tests/test_soak_live.py asserts bounds on them).
A request is "lost" when an async invocation never reached a terminal answer.

    .venv/bin/python scripts/bench_soak.py --seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ECHO_IMAGE = "nvcf-lite-test/echo:1"
ADMIN_KEY = "nvapi-" + uuid.uuid4().hex + uuid.uuid4().hex  # 64 characters after nvapi-
HEALTH = {
    "protocol": "HTTP",
    "uri": "/health",
    "port": 8000,
    "timeout": "PT2S",
    "expectedStatusCode": 200,
}
EXPECTED = {200, 202, 401}  # 401: a request with a key revoked on purpose
FAST = {
    "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "1",
    "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "false",
    "NVCF_LITE_SCHEDULER__TICK_INTERVAL_S": "0.3",
    "NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S": "0.3",
    "NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S": "30",
    "NVCF_LITE_GPUS__USE_NVML": "false",
    "NVCF_LITE_AUTH__KEY_CACHE_SECONDS": "0",  # a revoked key is refused at once
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nvcf_lite() -> list[str]:
    script = Path(sys.executable).with_name("nvcf-lite")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nvcf_lite"]


def process_tree(pid: int) -> list[int]:
    found, i = [pid], 0
    while i < len(found):
        try:
            tasks = os.listdir(f"/proc/{found[i]}/task")
        except OSError:
            tasks = []
        for tid in tasks:
            try:
                children = Path(f"/proc/{found[i]}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            found += [int(c) for c in children if int(c) not in found]
        i += 1
    return found


def rss_mib(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def open_fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in process_tree(pid))


class Server:
    """`nvcf-lite serve` in its own session over `workdir`/data; stop() ends its group."""

    def __init__(self, workdir: Path, namespace: str) -> None:
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NVCF_LITE_", "NGC_"))},
            **FAST,
            "NVCF_LITE_SYSTEM_CONFIG": "/nonexistent/nvcf-lite/config.toml",
            "NVCF_LITE_STORE__DATA_DIR": str(workdir / "data"),
            "NVCF_LITE_AUTH__BOOTSTRAP_KEY": ADMIN_KEY,
            "NVCF_LITE_ACCOUNT__ORG_NAME": "local",
            "NVCF_LITE_DOCKER__NAMESPACE": namespace,
        }
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*nvcf_lite(), "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"nvcf-lite exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                with opener.open(f"{self.url}/health", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"nvcf-lite not ready:\n{self.log_path.read_text()[-4000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def keys(self, *args: str) -> str:
        out = subprocess.run(
            [*nvcf_lite(), "keys", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        self.process = None


class Soak:
    """The traffic, its tallies and its latencies."""

    def __init__(self, server: Server, session: aiohttp.ClientSession, seconds: float) -> None:
        self.server, self.session = server, session
        self.end = time.monotonic() + seconds
        self.counts: Counter[tuple[str, int]] = Counter()
        self.latency: defaultdict[str, list[float]] = defaultdict(list)
        self.lost = 0
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []  # the first few unexpected answers, for the report

    def auth(self, key: str = ADMIN_KEY, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", **extra}

    def tally(self, kind: str, status: int, started: float, body: bytes = b"") -> None:
        self.counts[(kind, status)] += 1
        self.latency[kind].append(time.monotonic() - started)
        if status not in EXPECTED and len(self.samples) < 10:
            self.samples.append(f"{kind} {status} {body[:300]!r}")

    async def call(
        self, method: str, path: str, *, key: str = ADMIN_KEY, **kw: Any
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {**self.auth(key), **kw.pop("headers", {})}
        async with self.session.request(
            method, f"{self.server.url}{path}", headers=headers, allow_redirects=False, **kw
        ) as resp:
            body = await resp.read()
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body

    async def loop(self, name: str, step: Callable[[int], Awaitable[None]]) -> None:
        n = 0
        while time.monotonic() < self.end:
            try:
                await step(n)
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.errors[f"{name}: {type(exc).__name__}"] += 1
            n += 1

    # -- the kinds of traffic ----------------------------------------------------------------

    async def sync(self, fid: str, n: int) -> None:
        started = time.monotonic()
        status, _, body = await self.call(
            "POST",
            f"/v2/nvcf/pexec/functions/{fid}",
            json={"n": n},
            headers={"NVCF-POLL-SECONDS": "30"},
        )
        self.tally("sync", status, started, body)

    async def async_(self, fid: str, n: int) -> None:
        started = time.monotonic()
        status, headers, body = await self.call(
            "POST",
            f"/v2/nvcf/pexec/functions/{fid}",
            json={"n": n, "delay": 1.5},
            headers={"NVCF-POLL-SECONDS": "1"},
        )
        self.tally("async", status, started, body)
        rid = headers.get("nvcf-reqid", "")
        give_up = time.monotonic() + 120
        while status == 202 and time.monotonic() < give_up:
            polled = time.monotonic()
            status, _, body = await self.call(
                "GET", f"/v2/nvcf/pexec/status/{rid}", headers={"NVCF-POLL-SECONDS": "5"}
            )
            self.tally("status-poll", status, polled, body)
        if status == 202:
            self.lost += 1
        else:
            self.latency["async-total"].append(time.monotonic() - started)

    async def sse(self, fid: str, n: int) -> None:
        started = time.monotonic()
        async with self.session.post(
            f"{self.server.url}/v2/nvcf/pexec/functions/{fid}",
            json={"events": 3, "interval": 0.05},
            headers=self.auth(Accept="text/event-stream"),
        ) as resp:
            body = await resp.read()
            status = resp.status if b"data: [DONE]" in body or resp.status != 200 else 599
        self.tally("sse", status, started, body)

    async def asset(self, n: int) -> None:
        started = time.monotonic()
        status, _, body = await self.call(
            "POST", "/v2/nvcf/assets", json={"contentType": "image/png", "description": "soak"}
        )
        self.tally("asset-create", status, started, body)
        if status != 200:
            return
        asset = json.loads(body)
        upload = asset["uploadUrl"].split("://", 1)[1].split("/", 1)[1]
        put = time.monotonic()
        async with self.session.put(
            f"{self.server.url}/{upload}",
            data=os.urandom(64 * 1024),
            headers={"Content-Type": "image/png", "x-amz-meta-nvcf-asset-description": "soak"},
        ) as resp:
            self.tally("asset-upload", resp.status, put, await resp.read())
        got = time.monotonic()
        status, _, body = await self.call("GET", f"/v2/nvcf/assets/{asset['assetId']}")
        self.tally("asset-get", status, got, body)
        gone = time.monotonic()
        status, _, body = await self.call("DELETE", f"/v2/nvcf/assets/{asset['assetId']}")
        self.tally("asset-delete", 200 if status in (200, 204) else status, gone, body)

    async def churn(self, fid: str, vid: str, n: int) -> None:
        path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
        started = time.monotonic()
        status, _, body = await self.call("POST", path, json=deploy_body(1))
        self.tally("deploy", status, started, body)
        if status == 200 and await self.until_status(fid, vid, "ACTIVE"):
            invoked = time.monotonic()
            status, _, body = await self.call(
                "POST",
                f"/v2/nvcf/pexec/functions/{fid}",
                json={"churn": n},
                headers={"NVCF-POLL-SECONDS": "30"},
            )
            self.tally("churn-invoke", status, invoked, body)
        undeploy = time.monotonic()
        status, _, body = await self.call("DELETE", path)
        self.tally("undeploy", status, undeploy, body)
        await self.until_status(fid, vid, "INACTIVE")

    async def until_status(self, fid: str, vid: str, want: str) -> bool:
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up:
            status, _, body = await self.call("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")
            if status == 200 and json.loads(body)["function"]["status"] == want:
                return True
            await asyncio.sleep(0.2)
        self.errors[f"churn: never {want}"] += 1
        return False

    async def keys(self, fid: str, n: int) -> None:
        token = await asyncio.to_thread(self.server.keys, "create", "--scope", "all")
        started = time.monotonic()
        status, _, body = await self.call(
            "POST",
            f"/v2/nvcf/pexec/functions/{fid}",
            key=token,
            json={"key": n},
            headers={"NVCF-POLL-SECONDS": "30"},
        )
        self.tally("key-invoke", status, started, body)
        listed = await asyncio.to_thread(self.server.keys, "list")
        key_id = next(line.split()[0] for line in listed.splitlines() if token[:12] in line)
        await asyncio.to_thread(self.server.keys, "revoke", key_id)
        refused = time.monotonic()
        status, _, body = await self.call(
            "POST", f"/v2/nvcf/pexec/functions/{fid}", key=token, json={"revoked": n}
        )
        self.tally("revoked-key-invoke", status, refused, body)
        if status != 401:
            self.errors["a revoked key was accepted"] += 1
        await asyncio.sleep(1.0)


def deploy_body(slots: int) -> dict[str, Any]:
    spec = {
        "gpu": "CPU",
        "instanceType": "CPU.x1",
        "minInstances": 1,
        "maxInstances": 1,
        "maxRequestConcurrency": slots,
    }
    return {"deploymentSpecifications": [spec]}


async def register(soak: Soak, name: str) -> tuple[str, str]:
    body = {"name": name, "inferenceUrl": "/echo", "containerImage": ECHO_IMAGE, "health": HEALTH}
    status, _, data = await soak.call("POST", "/v2/nvcf/functions", json=body)
    if status != 200:
        raise SystemExit(f"register failed: {status} {data[:300]!r}")
    fn = json.loads(data)["function"]
    return fn["id"], fn["versionId"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def traffic(soak: Soak, concurrency: int) -> list[Awaitable[None]]:
    """Register and deploy the soak's function (and the churn one): the loops to run."""
    fid, vid = await register(soak, "soak-echo")
    await soak.call(
        "POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", json=deploy_body(16)
    )
    if not await soak.until_status(fid, vid, "ACTIVE"):
        raise SystemExit("the soak function never became ACTIVE")
    churn_fid, churn_vid = await register(soak, "soak-churn")
    return [
        *(soak.loop("sync", lambda n: soak.sync(fid, n)) for _ in range(concurrency)),
        *(soak.loop("async", lambda n: soak.async_(fid, n)) for _ in range(4)),
        *(soak.loop("sse", lambda n: soak.sse(fid, n)) for _ in range(2)),
        soak.loop("assets", soak.asset),
        soak.loop("churn", lambda n: soak.churn(churn_fid, churn_vid, n)),
        soak.loop("keys", lambda n: soak.keys(fid, n)),
    ]


def resources(server: Server) -> dict[str, float]:
    return {"rss_mib": rss_mib(server.pid), "fds": open_fds(server.pid)}


async def drive(
    server: Server, seconds: float, concurrency: int, warmup_s: float
) -> dict[str, Any]:
    """The soak: `warmup_s` of traffic, then `seconds` measured; its figures."""
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency * 4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        soak = Soak(server, session, seconds + warmup_s)
        running = [asyncio.ensure_future(t) for t in await traffic(soak, concurrency)]
        await asyncio.sleep(warmup_s)
        start = resources(server)
        soak.counts.clear()
        soak.latency.clear()
        measured = time.monotonic()
        await asyncio.gather(*running)
        elapsed = time.monotonic() - measured
        end = resources(server)
    return figures_of(soak, elapsed, start, end)


def figures_of(
    soak: Soak, elapsed: float, start: dict[str, float], end: dict[str, float]
) -> dict[str, Any]:
    total = sum(soak.counts.values())
    by_status = Counter[int]()
    for (_, status), count in soak.counts.items():
        by_status[status] += count
    return {
        "seconds": round(elapsed, 1),
        "requests": total,
        "throughput_rps": round(total / elapsed, 1) if elapsed else 0.0,
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "by_kind": {f"{kind} {status}": v for (kind, status), v in sorted(soak.counts.items())},
        "latency_ms": {
            kind: {
                "p50": round(percentile(v, 0.5) * 1000, 1),
                "p99": round(percentile(v, 0.99) * 1000, 1),
                "n": len(v),
            }
            for kind, v in sorted(soak.latency.items())
        },
        "status_5xx": sum(v for k, v in by_status.items() if k >= 500),
        "unexpected": sum(v for k, v in by_status.items() if k not in EXPECTED),
        "unexpected_samples": soak.samples,
        "lost": soak.lost,
        "client_errors": dict(soak.errors),
        "start": start,
        "end": end,
        "rss_growth_mib": round(end["rss_mib"] - start["rss_mib"], 1),
        "fd_growth": int(end["fds"] - start["fds"]),
    }


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"soak: {figures['seconds']} s, {figures['requests']} requests, "
        f"{figures['throughput_rps']} req/s",
        f"by status: {figures['by_status']}  5xx={figures['status_5xx']} "
        f"unexpected={figures['unexpected']} lost={figures['lost']}",
    ]
    lines += [f"  {k:<26} {v}" for k, v in figures["by_kind"].items()]
    lines += [
        f"  {k:<26} p50={v['p50']} ms  p99={v['p99']} ms  n={v['n']}"
        for k, v in figures["latency_ms"].items()
    ]
    s, e = figures["start"], figures["end"]
    lines.append(
        f"server: RSS {s['rss_mib']:.1f} -> {e['rss_mib']:.1f} MiB "
        f"({figures['rss_growth_mib']:+.1f}), fds {s['fds']} -> {e['fds']} "
        f"({figures['fd_growth']:+d})"
    )
    lines.append(f"server log tracebacks: {figures.get('server_log_tracebacks', 0)}")
    if figures["client_errors"]:
        lines.append(f"client errors: {figures['client_errors']}")
    lines += [f"unexpected: {sample}" for sample in figures["unexpected_samples"]]
    return "\n".join(lines)


def remove_containers(namespace: str) -> None:
    """Whatever of this soak's namespace outlived the server (a crash)."""
    try:
        import docker

        client = docker.from_env()
        label = f"nvcf-lite.namespace={namespace}"
        for c in client.containers.list(all=True, filters={"label": label}):
            c.remove(force=True)
    except Exception as exc:  # cleanup must not hide the soak's own result
        print(f"warning: removing soak containers failed: {exc}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=5.0, help="traffic before measuring")
    parser.add_argument("--concurrency", type=int, default=8, help="sync invocation loops")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="nvcf-lite-soak-"))
    namespace = f"soak-{uuid.uuid4().hex[:8]}"
    server = Server(workdir, namespace)
    try:
        server.start()
        figures = asyncio.run(drive(server, args.seconds, args.concurrency, args.warmup))
        server.stop()
        figures["server_log_tracebacks"] = server.log_path.read_text().count("Traceback")
    except BaseException:
        print(f"--- server log ---\n{server.log_path.read_text()[-6000:]}", file=sys.stderr)
        raise
    finally:
        server.stop()
        remove_containers(namespace)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
