"""Gateway overhead of nvcf-lite: the same load straight at the echo container and through pexec.

Starts `nvcf-lite serve` (a temp data dir, a unique Docker namespace, no instances kept on
shutdown), registers and deploys `nvcf-lite-test/echo:1` on CPU (min = max = 1, a
maxRequestConcurrency that does not limit), finds the container's published 127.0.0.1 port and,
for each concurrency level, drives a small JSON POST once directly at `http://127.0.0.1:<port>/echo`
and once through `POST /v2/nvcf/pexec/functions/{fid}`, back to back, with a keep-alive aiohttp
client. Prints requests/s, p50/p99 and through/direct per level, and PASS/FAIL for the targets:
through/direct >= 0.2 at concurrency 16 and added p50 <= 1.5 ms at concurrency 1.

The load generator shares the machine's CPUs with nvcf-lite and the container: trust ratios
more than absolutes. Talks only to 127.0.0.1. Cleans up the server and its containers on exit,
Ctrl-C or failure.

    .venv/bin/python scripts/bench_invoke.py [--quick] [--concurrency 1,16,64]
        [--requests-c1 2000] [--requests 5000] [--max-seconds 60] [--rounds 1]
        [--count-sql] [--profile /tmp/profile.json] [--keep-server] [--fast-path on|off]

--count-sql   the server runs with a sitecustomize that counts SQLite statements and aiosqlite
              round trips (thread hops); printed per request for each through run (adds overhead,
              so its throughput figures are not the ones to quote).
--fast-path   `off` runs the server with `server.fast_path = false`: pexec goes through the
              Litestar route instead of api/fastpath.py (run once each way to compare).
--profile P   record the server's worker with py-spy (speedscope format) during the through run at
              concurrency 16 (or the first level above 1); needs `py-spy` on PATH or in the venv.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shlex
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "nvcf-lite-test/echo:1"
BODY = json.dumps({"prompt": "hello", "n": 1}).encode()
CHECK = b'"/echo"'  # every echo answer names the path it was called on
TARGET_RATIO_C = 16
TARGET_RATIO = 0.2
TARGET_ADDED_P50_MS = 1.5
DOCKER_SOCK = "/var/run/docker.sock"

SQL_COUNTER = r'''
"""Bench-only: count SQLite statements and aiosqlite round trips; dump to $NVCF_BENCH_SQL_DIR."""
import json, os, sqlite3, threading, time
_dir = os.environ.get("NVCF_BENCH_SQL_DIR")
if _dir:
    _lock = threading.Lock()
    _stmts = {}
    _hops = [0]
    _orig_connect = sqlite3.connect

    def _trace(sql):
        key = " ".join(sql.split()[:3])[:60]
        with _lock:
            _stmts[key] = _stmts.get(key, 0) + 1

    def _connect(*a, **kw):
        conn = _orig_connect(*a, **kw)
        conn.set_trace_callback(_trace)
        return conn

    sqlite3.connect = _connect

    def _patch_aiosqlite():
        try:
            import aiosqlite.core as core
        except Exception:
            return
        orig = core.Connection._execute

        async def _execute(self, fn, *a, **kw):
            _hops[0] += 1
            return await orig(self, fn, *a, **kw)

        core.Connection._execute = _execute
        core.sqlite3.connect = _connect

    def _dump():
        path = os.path.join(_dir, f"sql.{os.getpid()}.json")
        while True:
            time.sleep(0.2)
            with _lock:
                data = {"statements": dict(_stmts), "hops": _hops[0]}
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)

    import builtins
    _orig_import = builtins.__import__
    _done = [False]

    def _import(name, *a, **kw):
        mod = _orig_import(name, *a, **kw)
        if not _done[0] and name.startswith("aiosqlite"):
            _done[0] = True
            _patch_aiosqlite()
        return mod

    builtins.__import__ = _import

    def _start():
        threading.Thread(target=_dump, daemon=True, name="bench-sql-dump").start()

    _start()
    os.register_at_fork(after_in_child=_start)  # granian forks its worker
'''


# -- measurement ---------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    concurrency: int
    ok: int = 0
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sql: dict[str, float] | None = None

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in ms (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank] * 1000


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    n: int,
    concurrency: int,
    max_seconds: float,
    label: str,
) -> Run:
    """n POSTs with `concurrency` workers on one keep-alive session, or until max_seconds."""
    run = Run(label, concurrency)
    issued = 0
    deadline = time.perf_counter() + max_seconds
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal issued
        while issued < n and clock() < deadline:
            issued += 1
            t0 = clock()
            try:
                async with session.post(url, data=BODY, headers=headers) as resp:
                    data = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                run.errors[type(exc).__name__] += 1
                continue
            if status != 200:
                run.errors[f"HTTP {status}"] += 1
            elif CHECK not in data:
                run.errors["bad body"] += 1
            else:
                run.latencies.append(clock() - t0)
                run.ok += 1

    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.elapsed_s = clock() - start
    return run


# -- the server and its containers -----------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


def docker_api(method: str, path: str) -> tuple[int, Any]:
    conn = UnixHTTPConnection(DOCKER_SOCK)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw.strip().startswith((b"[", b"{")) else raw
    finally:
        conn.close()


def remove_containers(namespace: str) -> int:
    filters = json.dumps({"label": [f"nvcf-lite.namespace={namespace}"]})
    try:
        _, found = docker_api("GET", f"/containers/json?all=1&filters={_quote(filters)}")
        for c in found or []:
            docker_api("DELETE", f"/containers/{c['Id']}?force=1&v=1")
        return len(found or [])
    except OSError as exc:
        print(f"warning: could not clean up containers of namespace {namespace}: {exc}")
        return 0


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def descendants(pid: int) -> list[int]:
    """Child processes (recursively) of pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def worker_pid(server_pid: int) -> int:
    """The granian worker: the descendant python process (the server itself with workers=1
    in-process)."""
    kids = [p for p in descendants(server_pid) if _is_python(p)]
    return kids[-1] if kids else server_pid


def _is_python(pid: int) -> bool:
    try:
        return "python" in os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False


class Server:
    def __init__(
        self,
        workdir: Path,
        key: str,
        namespace: str,
        count_sql: bool,
        extra_env: dict[str, str] | None = None,
        pythonpath: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.extra_env = extra_env or {}
        self.pythonpath = pythonpath or []
        self.key = key
        self.namespace = namespace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.sql_dir: Path | None = workdir / "sql" if count_sql else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")}
        env.update(
            {
                "NVCF_LITE_SYSTEM_CONFIG": "/nonexistent/nvcf-lite/config.toml",
                "NVCF_LITE_STORE__DATA_DIR": str(self.workdir / "data"),
                "NVCF_LITE_AUTH__BOOTSTRAP_KEY": self.key,
                "NVCF_LITE_DOCKER__NAMESPACE": self.namespace,
                "NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN": "false",
                "NVCF_LITE_DOCKER__STOP_TIMEOUT_S": "2",
                "NVCF_LITE_SERVER__LOG_LEVEL": "warning",
                "NVCF_LITE_SERVER__ACCESS_LOG": "false",
                "NVCF_LITE_SERVER__HOST": "127.0.0.1",
                "NVCF_LITE_GPUS__USE_NVML": "false",
            }
        )
        env.update(self.extra_env)
        paths = list(self.pythonpath)
        if self.sql_dir is not None:
            self.sql_dir.mkdir(parents=True, exist_ok=True)
            site = self.workdir / "site"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text(SQL_COUNTER)
            paths.insert(0, str(site))
            env["NVCF_BENCH_SQL_DIR"] = str(self.sql_dir)
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH")]))
        exe = Path(sys.executable).with_name("nvcf-lite")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "nvcf_lite"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*cmd, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nvcf-lite exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # 503 (degraded) is up too
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nvcf-lite did not start in {timeout_s:.0f} s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def sql_snapshot(self) -> tuple[Counter[str], int]:
        """Statements by kind and aiosqlite round trips so far, over every server process."""
        stmts: Counter[str] = Counter()
        hops = 0
        if self.sql_dir is None:
            return stmts, hops
        time.sleep(0.45)  # the counters are dumped every 0.2 s
        for path in self.sql_dir.glob("sql.*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            stmts.update(data["statements"])
            hops += data["hops"]
        return stmts, hops


def deploy_echo(server: Server, slots: int, timeout_s: float) -> tuple[str, int]:
    """Register and deploy the echo function; returns (function id, container host port)."""
    status, got = server.call(
        "POST",
        "/v2/nvcf/functions",
        {
            "name": "bench-echo",
            "inferenceUrl": "/echo",
            "inferencePort": 8000,
            "containerImage": IMAGE,
            "health": {
                "protocol": "HTTP",
                "uri": "/health",
                "port": 8000,
                "timeout": "PT2S",
                "expectedStatusCode": 200,
            },
        },
    )
    if status != 200:
        raise RuntimeError(f"register failed: HTTP {status}: {got}")
    fid, vid = got["function"]["id"], got["function"]["versionId"]
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    spec = {"gpu": "CPU", "minInstances": 1, "maxInstances": 1, "maxRequestConcurrency": slots}
    status, got = server.call("POST", path, {"deploymentSpecifications": [spec]})
    if status != 200:
        raise RuntimeError(f"deploy failed: HTTP {status}: {got}")
    deadline = time.monotonic() + timeout_s
    state = "?"
    while time.monotonic() < deadline:
        _, got = server.call("GET", path)
        dep = got.get("deployment", {}) if isinstance(got, dict) else {}
        state = dep.get("functionStatus", "?")
        instances = dep.get("instances") or []
        if state == "ACTIVE" and instances and instances[0].get("hostPort"):
            return fid, int(instances[0]["hostPort"])
        if state == "ERROR":
            raise RuntimeError(f"deployment failed: {json.dumps(dep)[:2000]}")
        time.sleep(0.2)
    raise RuntimeError(f"deployment not ACTIVE after {timeout_s:.0f} s (status {state})")


# -- profiling ---------------------------------------------------------------------------------


def find_pyspy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profile(pid: int, out: Path, extra: str = "") -> subprocess.Popen[bytes] | None:
    exe = find_pyspy()
    if exe is None:
        print("warning: --profile given but py-spy was not found; not profiling")
        return None
    cmd = [exe, "record", "--pid", str(pid), "--format", "speedscope", "-o", str(out)]
    cmd += ["--rate", "200", "--nonblocking", *shlex.split(extra)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_profile(proc: subprocess.Popen[bytes] | None, out: Path) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if out.exists():
        print(f"profile of the through run written to {out}")
    else:
        print(f"warning: py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")


# -- the benchmark -----------------------------------------------------------------------------


@dataclass
class Level:
    concurrency: int
    direct: list[Run] = field(default_factory=list)
    through: list[Run] = field(default_factory=list)

    @staticmethod
    def median(runs: list[Run]) -> Run:
        return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


async def bench(args: argparse.Namespace, server: Server, fid: str, port: int) -> list[Level]:
    direct_url = f"http://127.0.0.1:{port}/echo"
    through_url = f"{server.url}/v2/nvcf/pexec/functions/{fid}"
    plain = {"Content-Type": "application/json"}
    authed = {**plain, "Authorization": f"Bearer {server.key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    profile_c = next((c for c in args.levels if c == TARGET_RATIO_C), None) or next(
        (c for c in args.levels if c > 1), args.levels[0]
    )
    levels = [Level(c) for c in args.levels]
    targets = (("direct", direct_url, plain), ("through", through_url, authed))
    # One keep-alive session per target for the whole run; a fresh connector would count
    # TCP handshakes in the first requests.
    sessions = {
        name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, force_close=False),
            timeout=timeout,
            auto_decompress=False,
        )
        for name, _, _ in targets
    }
    try:
        for name, url, headers in targets:
            warm = await drive(sessions[name], url, headers, args.warmup, 8, 30, f"warm {name}")
            if warm.errors:
                raise RuntimeError(f"warm-up {name} failed: {dict(warm.errors)}")
        for rnd in range(args.rounds):
            for level in levels:
                c = level.concurrency
                n = args.requests_c1 if c == 1 else args.requests
                # alternate which side goes first from round to round
                order = targets if rnd % 2 == 0 else targets[::-1]
                for name, url, headers in order:
                    await drive(sessions[name], url, headers, max(c * 4, 50), c, 10, "warm")
                    before = server.sql_snapshot() if name == "through" else None
                    prof = None
                    if args.profile and name == "through" and c == profile_c and rnd == 0:
                        pid = worker_pid(server.pid)
                        prof = start_profile(pid, args.profile, args.profile_args)
                        await asyncio.sleep(0.5)
                    run = await drive(sessions[name], url, headers, n, c, args.max_seconds, name)
                    if prof is not None:
                        stop_profile(prof, args.profile)
                    if before is not None and server.sql_dir is not None:
                        after = server.sql_snapshot()
                        run.sql = sql_per_request(before, after, run.ok + sum(run.errors.values()))
                    (level.direct if name == "direct" else level.through).append(run)
                    errs = f", errors {dict(run.errors)}" if run.errors else ""
                    print(
                        f"  round {rnd + 1} c={c:<3} {name:<7} {run.ok:>6} ok in"
                        f" {run.elapsed_s:6.2f} s = {run.rps:8.0f} req/s,"
                        f" p50 {run.pct(50):6.2f} ms, p99 {run.pct(99):7.2f} ms{errs}",
                        flush=True,
                    )
    finally:
        for s in sessions.values():
            await s.close()
    return levels


def sql_per_request(
    before: tuple[Counter[str], int], after: tuple[Counter[str], int], requests: int
) -> dict[str, float]:
    stmts = after[0] - before[0]
    out = {k: v / max(1, requests) for k, v in stmts.most_common()}
    out["= statements"] = sum(stmts.values()) / max(1, requests)
    out["= aiosqlite round trips"] = (after[1] - before[1]) / max(1, requests)
    return out


def report(levels: list[Level], args: argparse.Namespace) -> bool:
    header = (
        f"{'conc':>4} | {'direct req/s':>12} | {'through req/s':>13} | {'ratio':>5} |"
        f" {'direct p50/p99 ms':>17} | {'through p50/p99 ms':>18} | {'added p50 ms':>12} |"
        f" {'errors d/t':>10}"
    )
    print()
    print(header)
    print("-" * len(header))
    ratio_at: dict[int, float] = {}
    added_at: dict[int, float] = {}
    errors = 0
    for level in levels:
        d, t = Level.median(level.direct), Level.median(level.through)
        ratio = t.rps / d.rps if d.rps else 0.0
        added = t.pct(50) - d.pct(50)
        ratio_at[level.concurrency], added_at[level.concurrency] = ratio, added
        de = sum(sum(r.errors.values()) for r in level.direct)
        te = sum(sum(r.errors.values()) for r in level.through)
        errors += de + te
        print(
            f"{level.concurrency:>4} | {d.rps:>12.0f} | {t.rps:>13.0f} | {ratio:>5.2f} |"
            f" {d.pct(50):>7.2f} / {d.pct(99):>7.2f} | {t.pct(50):>8.2f} / {t.pct(99):>7.2f} |"
            f" {added:>12.2f} | {de:>4} / {te:<4}"
        )
    if args.rounds > 1:
        print(f"(median of {args.rounds} rounds by req/s)")
    for level in levels:
        t = Level.median(level.through)
        if t.sql:
            parts = ", ".join(f"{k}: {v:.2f}" for k, v in t.sql.items())
            print(f"SQLite per through request at c={level.concurrency}: {parts}")
    print()
    ok = True
    if TARGET_RATIO_C in ratio_at:
        passed = ratio_at[TARGET_RATIO_C] >= TARGET_RATIO
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'}: through/direct at c={TARGET_RATIO_C} ="
            f" {ratio_at[TARGET_RATIO_C]:.2f} (target >= {TARGET_RATIO})"
        )
    if 1 in added_at:
        passed = added_at[1] <= TARGET_ADDED_P50_MS
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'}: added p50 at c=1 = {added_at[1]:.2f} ms"
            f" (target <= {TARGET_ADDED_P50_MS} ms)"
        )
    if errors:
        ok = False
        print(f"FAIL: {errors} request(s) failed or answered other than 200 with the echo")
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", default="1,16,64", help="levels, comma-separated")
    p.add_argument("--requests-c1", type=int, default=2000, help="requests per run at c=1")
    p.add_argument("--requests", type=int, default=5000, help="requests per run at c>1")
    p.add_argument("--max-seconds", type=float, default=60.0, help="time bound of one run")
    p.add_argument("--warmup", type=int, default=300, help="warm-up requests per target")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole sweep, report medians")
    p.add_argument("--quick", action="store_true", help="300 / 1000 requests, 15 s per run")
    p.add_argument("--deploy-timeout", type=float, default=120.0)
    p.add_argument("--count-sql", action="store_true", help="count SQLite statements per request")
    p.add_argument("--profile", type=Path, help="py-spy speedscope output for the c=16 through run")
    p.add_argument(
        "--profile-args",
        default="",
        help="extra py-spy record flags, e.g. '--gil' (only the GIL holder: CPU time) or '--idle'",
    )
    p.add_argument(
        "--fast-path", choices=("on", "off"), default="on", help="the server's server.fast_path"
    )
    p.add_argument("--keep-server", action="store_true", help="leave the temp dir for inspection")
    p.add_argument("--skip-build", action="store_true", help="do not run build_test_images.py")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra server environment (repeatable), e.g. NVCF_LITE_AUTH__KEY_CACHE_SECONDS=5",
    )
    p.add_argument(
        "--server-pythonpath",
        action="append",
        default=[],
        metavar="DIR",
        help="prepend DIR to the server's PYTHONPATH (A/B a patched copy, or add uvloop)",
    )
    args = p.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.quick:
        args.requests_c1, args.requests = min(args.requests_c1, 300), min(args.requests, 1000)
        args.max_seconds, args.warmup = min(args.max_seconds, 15.0), min(args.warmup, 100)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.path.exists(DOCKER_SOCK):
        print(f"error: no Docker engine at {DOCKER_SOCK} (see scripts/start-dockerd.sh)")
        return 2
    if not args.skip_build:
        build = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_test_images.py")])
        if build.returncode != 0:
            print("error: building the test images failed")
            return 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="nvcf-bench-"))
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    key = "nvapi-" + uuid.uuid4().hex + uuid.uuid4().hex
    extra = {"NVCF_LITE_SERVER__FAST_PATH": "true" if args.fast_path == "on" else "false"}
    extra.update(kv.split("=", 1) for kv in args.server_env)
    server = Server(workdir, key, namespace, args.count_sql, extra, args.server_pythonpath)
    ok = False
    try:
        started = time.monotonic()
        server.start()
        fid, port = deploy_echo(server, max(64, max(args.levels)), args.deploy_timeout)
        print(
            f"nvcf-lite {server.url} (worker pid {worker_pid(server.pid)}), echo function"
            f" {fid} on 127.0.0.1:{port}, ready in {time.monotonic() - started:.1f} s,"
            f" fast path {args.fast_path};"
            f" {os.cpu_count()} CPUs shared by server, container and this load generator"
        )
        levels = asyncio.run(bench(args, server, fid, port))
        ok = report(levels, args)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up")
    except Exception as exc:
        print(f"error: {exc}")
        print(f"--- server log (tail) ---\n{server.log()}")
    finally:
        server.stop()
        left = remove_containers(namespace)
        if left:
            print(f"removed {left} leftover container(s) of namespace {namespace}")
        if args.keep_server:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
