"""Gateway overhead of nvcf-lite: the same load straight at a function container and through pexec.

Starts `nvcf-lite serve` (a temp data dir, a unique Docker namespace, no instances kept on
shutdown) and registers and deploys its test functions on CPU (min = max = 1, each its own
container): `fast` (nvcf-lite-test/fast:1, scripts/fast_function_server.py: a single-threaded
asyncio HTTP/1.1 server, keep-alive, one write per answer; the honest direct baseline) once per
body shape, `echo` (nvcf-lite-test/echo:1, the threaded stdlib echo server; slower) with the
small shape, and for the async-accepts mode `slow` (the fast image on /sleep: answers after
1 s). Load always comes from `wrk`, never from Python, during a timed window; the server's CPU
time comes from /proc (utime+stime of `nvcf-lite serve` and its descendants, the granian
worker, all threads).

    .venv/bin/python scripts/bench_invoke.py [--quick] [--concurrency 1,16,64] [--rounds 2]
        [--duration 5] [--warmup 1] [--functions fast,echo] [--shapes small,64k,sse]
        [--table] [--memory | --no-memory] [--async-accepts | --no-async-accepts] [--strict]
        [--count-sql] [--profile /tmp/profile.json] [--keep-server] [--fast-path on|off]

Modes. With none of --table/--memory/--async-accepts a run does the table, then (unless --quick,
--no-memory or --no-async-accepts) memory and async accepts; naming any of the three runs only
the named ones. Order: memory (its idle figure is taken right after start-up and deploy, before
any load), the table, async accepts last. A full default run takes about 6-7 minutes on 2 CPUs.

Table (direct vs through). Body shapes of the fast function, each its own registration and
container so direct and through hit the same container path:
  small  a ~100 B JSON request body to /echo, a small JSON answer naming the path
  64k    a 64 KiB JSON request body to /big, echoed back (checked: size and end marker)
  sse    `Accept: text/event-stream` to /sse, answered `text/event-stream` with 64 events in one
         write (checked: size and the last event); through nvcf-lite this is the streaming route
`echo` runs the small shape only. wrk: one thread, connections = concurrency, a Lua script for
the body and headers that counts non-2xx answers and answers without the shape's marker. For
each function/shape and concurrency level it alternates direct (`http://127.0.0.1:<container
port><inferenceUrl>`) and through (`POST /v2/nvcf/pexec/functions/{fid}`) runs for --rounds
rounds and prints, per level, the median req/s and p50/p99 of each side, through/direct, the
added p50 and the nvcf-lite CPU ms per forwarded request (server CPU across each through run /
the requests wrk completed: the figure to optimise; it does not depend on how the machine's few
CPUs are shared). PASS/FAIL lines:
  echo/small (the old targets): through/direct >= 0.2 at c=16; added p50 <= 1.5 ms at c=1
  fast/small (issue #12): CPU per forwarded request <= 0.5 ms at c=16; through/direct >= 0.3
  at c=16; added p50 <= 0.8 ms at c=1

Memory (--memory). RSS (VmRSS) and PSS (smaps_rollup) of the server's process and of any
child it has (granian runs embedded, in the one process), each and summed: idle (after
start-up and deploy), after 10k and after 100k requests to fast/small through nvcf-lite (wrk
c=16, stopped by count). PASS/FAIL on the RSS sums, the issue's measure and the stricter one:
idle <= 80 MB, growth 10k -> 100k <= 10 MB (MB = 10^6 bytes; PSS printed beside them).

Async accepts (--async-accepts). Deploys `slow` (maxRequestConcurrency --async-slots, 1024),
sets the server's invocation.max_queue_per_function to --queue-limit (20000) and raises
RLIMIT_NOFILE to its hard limit for wrk and the server. wrk (--async-threads threads,
--async-connections connections, --async-duration s) posts with `NVCF-POLL-SECONDS: 1`: each
connection holds its request up to 1 s and gets 202 (or 200) with NVCF-REQID; its Lua
`response()` appends "<monotonic time> <status> <id>" to a file per thread. Accepted = 200 or
202 carrying NVCF-REQID. All times are answer times: an accepted request is answered when its
1 s poll window ends (`slow` never answers sooner), a 429 (queue full) at once, so the window
runs from 1 s after wrk starts to 1 s after the first 429, or to the end of the run (answers
that come late fall out of it: lateness lowers the rate); accepted/s = accepted answers in it /
its length, and the server CPU over
it (sampled from /proc every 0.1 s, interpolated) / those requests. From its 202 on, beside
wrk, as its own client would, every accepted request is polled to its end with
`GET /v2/nvcf/pexec/status/{id}` (an aiohttp client in a thread of the bench: --poll-concurrency
connections, 6000, each long-poll one id at a time to its end, NVCF-POLL-SECONDS: 30, oldest
first; 1500 more touch the ids waiting for one with NVCF-POLL-SECONDS: 1 before they have gone
7 s unpolled, since the server cancels a detached request nobody polls for 10 s; these polls
are part of the load the window measures). PASS/FAIL:
accepted/s >= 5000; every accepted request completed 200 (a request that did not is a failed
request). The server's `server.backlog` (4096) and `server.max_requests_in_flight` (16384)
bound how many clients can wait at once (with 1 s holds, accepts/s <= requests in flight);
--server-backlog N sets the first (the kernel caps it at net.core.somaxconn).

Exit status: 0 when every request succeeded (no failed, non-2xx or wrong-body answer in the
table and memory runs; in async mode no answer other than 200/202 with an id or 429, no wrk
socket error, every accepted request completed 200); 1 otherwise. A performance FAIL is
reported but fails the exit status only with --strict. wrk shares the machine's CPUs with
nvcf-lite and the containers: trust ratios and CPU/request more than absolutes. Talks only to
127.0.0.1. Cleans up the server and its containers on exit, Ctrl-C or failure. Needs `wrk` on
PATH (Debian: apt-get install -y wrk) and, for async accepts, aiohttp (in the venv).

--count-sql   the server runs with a sitecustomize that counts SQLite statements and aiosqlite
              round trips (thread hops); printed per request for each through run (adds overhead,
              so its throughput figures are not the ones to quote).
--swarm       the cost of an instance on another node: fast/small only, the table run twice,
              first with nvcf-lite and its instance on the local engine, then with
              `docker.runtime = "swarm"` on a three-node swarm of engines in network namespaces
              (tests/swarm_support.py: needs root), its instance on a worker node reached at the
              node's address (127.77.x.0/24, veth and a bridge); prints per level the through
              p50/req/s of each and the added p50 (and the direct p50 of each: the network
              path alone). No PASS/FAIL: the figure is reported.
--fast-path   `off` runs the server with `server.fast_path = false`: pexec goes through the
              Litestar route instead of api/fastpath.py (run once each way to compare).
--profile P   record the server's worker with py-spy (speedscope format) during the first
              target's through run at concurrency 16 (or the first level above 1); needs
              `py-spy` on PATH or in the venv.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import http.client
import importlib.util
import itertools
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGES = {"fast": "nvcf-lite-test/fast:1", "echo": "nvcf-lite-test/echo:1"}
IMAGE = IMAGES["echo"]
INFERENCE_URL = "/echo"
# ~100 B: the small shape's request body.
BODY = json.dumps(
    {
        "prompt": "hello, write one short sentence about the sea",
        "n": 1,
        "max_tokens": 32,
        "temperature": 0.7,
    }
).encode()
CHECK = b'"/echo"'  # every small answer (echo and fast) names the path it was called on
TARGET_RATIO_C = 16
TARGET_RATIO = 0.2
TARGET_ADDED_P50_MS = 1.5
# Issue #12's targets, on fast/small.
FAST_CPU_C = 16
FAST_CPU_MS = 0.5
FAST_RATIO = 0.3
FAST_ADDED_P50_MS = 0.8
ASYNC_TARGET_RPS = 5000.0
MEMORY_IDLE_MB = 80.0
MEMORY_GROWTH_MB = 10.0
MEMORY_STEPS = (10_000, 100_000)
MEMORY_C = 16
SLEEP_PATH = "/sleep"  # scripts/fast_function_server.py answers it after 1 s
HOLD_S = 1.0  # the accept requests' NVCF-POLL-SECONDS
LONG_POLL_S = 30  # a status long-poll of the completion (its client waits for the end)
LONG_POLLS = 6000  # connections long-polling an accepted request each (--poll-concurrency)
KEEPERS = 1500  # connections touching the accepted requests that wait for a long poll
KEEP_TOUCH_S = 7.0  # the server cancels a detached request unpolled for max(2 x 1 s, 10 s)
SERVER_BACKLOG = 4096  # nvcf-lite's server.backlog default (config.toml)
SERVER_IN_FLIGHT = 16384  # nvcf-lite's server.max_requests_in_flight default
DOCKER_SOCK = "/var/run/docker.sock"
MB = 1e6


CPUS = len(os.sched_getaffinity(0))
UNTHROTTLED = {
    "NVCF_LITE_RESOURCES__CPU_CORES": str(16 * CPUS),
    "NVCF_LITE_RESOURCES__INSTANCE_TYPES": json.dumps([{"name": "CPU.x1", "cpu_cores": CPUS}]),
}


def _fast_server_module() -> Any:
    """scripts/fast_function_server.py, for the exact SSE body it answers."""
    path = ROOT / "scripts" / "fast_function_server.py"
    spec = importlib.util.spec_from_file_location("bench_fast_function_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Shape:
    """A request/answer body shape: where it is posted and how its answer is checked."""

    name: str
    path: str  # the function's inferenceUrl (and the direct URL's path)
    body: bytes
    check: bytes  # a marker the answer must carry
    tail: bool = False  # the marker must end the answer
    size: int = 0  # the answer's exact size; 0: not checked
    accept: str = ""


def big_body(size: int = 64 * 1024) -> bytes:
    """A JSON document of exactly `size` bytes ending in the marker the 64k check looks for."""
    head, tail = b'{"pad":"', b'","end":"BIG-END"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def make_shapes() -> dict[str, Shape]:
    sse = _fast_server_module().SSE_BODY
    last_event = sse[sse.rstrip(b"\n").rfind(b"\n\n") + 2 :]
    big = big_body()
    return {
        "small": Shape("small", INFERENCE_URL, BODY, CHECK),
        "64k": Shape("64k", "/big", big, b'"end":"BIG-END"}', tail=True, size=len(big)),
        "sse": Shape(
            "sse", "/sse", BODY, last_event, tail=True, size=len(sse), accept="text/event-stream"
        ),
    }


SHAPES = make_shapes()
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


# -- measurement: wrk ------------------------------------------------------------------------

WRK_LUA = r"""
-- Written by scripts/bench_invoke.py: POST a body, count answers that are not 2xx or do not
-- carry the shape's marker (SIZE > 0: of exactly that size; TAIL: the marker ends the body);
-- with STOP_AFTER > 0 (one thread) the thread stops after that many answers and says so on
-- stdout (the bench then ends wrk with SIGINT); done() prints one JSON line for the bench.
wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
if AUTH ~= "" then wrk.headers["Authorization"] = AUTH end
if ACCEPT ~= "" then wrk.headers["Accept"] = ACCEPT end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

local function body_ok(body)
  if CHECK == "" then return true end
  if SIZE > 0 and #body ~= SIZE then return false end
  if TAIL then return string.sub(body, -#CHECK) == CHECK end
  return string.find(body, CHECK, 1, true) ~= nil
end

non2xx = 0
badbody = 0
local answers = 0
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif not body_ok(body) then
    badbody = badbody + 1
  end
  if STOP_AFTER > 0 then
    answers = answers + 1
    if answers == STOP_AFTER then
      io.write("BENCH_STOPPED\n")
      io.stdout:flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local n, b = 0, 0
  for _, t in ipairs(threads) do
    n = n + t:get("non2xx")
    b = b + t:get("badbody")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "bad_body": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "mean_us": %f}\n',
    summary.requests, summary.duration, n, b, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""

ASYNC_LUA = r"""
-- Written by scripts/bench_invoke.py (async accepts): POST with NVCF-POLL-SECONDS: 1; each
-- answer that accepts the request (200 or 202 with NVCF-REQID) appends
-- "<CLOCK_MONOTONIC s> <status> <id>" to OUTDIR/ids.<thread>.txt (opened once per thread,
-- line-buffered, so nothing is lost when wrk stops); the first 429 of each thread and every
-- other answer append "<time> <status> -". done() prints one JSON line for the bench.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC, the clock of Python's time.monotonic()
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = AUTH
wrk.headers["NVCF-POLL-SECONDS"] = HOLD

local threads = {}
local made = 0
function setup(thread)
  made = made + 1
  thread:set("thread_no", made)
  table.insert(threads, thread)
end

local out
function init(args)
  out = io.open(OUTDIR .. "/ids." .. thread_no .. ".txt", "w")
  out:setvbuf("line")
end

accepted = 0
noid = 0
badbody = 0
q429 = 0
other = 0
local function request_id(headers)
  local rid = headers["nvcf-reqid"] or headers["NVCF-REQID"] or headers["Nvcf-Reqid"]
  if rid == nil then
    for k, v in pairs(headers) do
      if string.lower(k) == "nvcf-reqid" then return v end
    end
  end
  return rid
end

function response(status, headers, body)
  if status == 200 or status == 202 then
    local rid = request_id(headers)
    if rid == nil then
      noid = noid + 1
      out:write(string.format("%.6f %d -\n", now(), status))
    else
      accepted = accepted + 1
      if status == 200 and not string.find(body, CHECK, 1, true) then
        badbody = badbody + 1
        out:write(string.format("%.6f bad %s\n", now(), rid))
      else
        out:write(string.format("%.6f %d %s\n", now(), status, rid))
      end
    end
  elseif status == 429 then
    q429 = q429 + 1
    if q429 == 1 then out:write(string.format("%.6f 429 -\n", now())) end
  else
    other = other + 1
    out:write(string.format("%.6f %d -\n", now(), status))
  end
end

function done(summary, latency, requests)
  local a, n, b, q, o = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    n = n + t:get("noid")
    b = b + t:get("badbody")
    q = q + t:get("q429")
    o = o + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "accepted": %d, "no_id": %d, ' ..
    '"bad_body": %d, "q429": %d, "other": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d}\n',
    summary.requests, summary.duration, a, n, b, q, o, e.connect, e.read, e.write, e.timeout))
end
"""


def lua_string(text: str) -> str:
    """A Lua string literal (JSON string escapes are valid Lua for this ASCII text)."""
    return json.dumps(text)


def wrk_script(workdir: Path, name: str, auth: str, shape: Shape, stop_after: int = 0) -> Path:
    path = workdir / f"wrk-{name}.lua"
    head = (
        f"BODY = {lua_string(shape.body.decode())}\n"
        f"AUTH = {lua_string(auth)}\n"
        f"ACCEPT = {lua_string(shape.accept)}\n"
        f"CHECK = {lua_string(shape.check.decode())}\n"
        f"TAIL = {'true' if shape.tail else 'false'}\n"
        f"SIZE = {shape.size}\n"
        f"STOP_AFTER = {stop_after}\n"
    )
    path.write_text(head + WRK_LUA)
    return path


def find_wrk() -> str:
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("error: `wrk` is not on PATH; install it (Debian: apt-get install -y wrk)")
    return exe


@dataclass
class Run:
    label: str
    concurrency: int
    requests: int = 0
    elapsed_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float | None = None  # nvcf-lite CPU time (all its processes) across the run
    sql: dict[str, float] | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        if self.cpu_s is None or not self.requests:
            return float("nan")
        return self.cpu_s * 1000 / self.requests


def wrk_json(cmd: list[str], timeout_s: float) -> tuple[dict[str, Any], str]:
    """Runs wrk; a `BENCH_STOPPED` line (a thread hit STOP_AFTER) ends it early with SIGINT
    (wrk then reports as at the end of its duration). Returns (its BENCH_JSON, its output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None
        lines = []
        for ln in proc.stdout:
            lines.append(ln)
            if ln.startswith("BENCH_STOPPED"):
                proc.send_signal(signal.SIGINT)
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    finally:
        killer.cancel()
    out = "".join(lines)
    line = next((ln for ln in lines if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {shlex.join(cmd)}\n{out}\n{err}")
    return json.loads(line.removeprefix("BENCH_JSON ")), out


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    concurrency: int,
    seconds: int,
    label: str,
) -> Run:
    """One wrk run: `concurrency` keep-alive connections on one thread for `seconds` (or until
    the script's STOP_AFTER answers)."""
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    cmd += ["-s", str(script), url]
    got, _ = wrk_json(cmd, seconds + 60)
    errors = {
        k: int(got[k])
        for k in ("non2xx", "bad_body", "connect", "read", "write", "timeout")
        if got[k]
    }
    return Run(
        label,
        concurrency,
        requests=int(got["requests"]),
        elapsed_s=got["duration_us"] / 1e6,
        p50_ms=got["p50_us"] / 1000,
        p99_ms=got["p99_us"] / 1000,
        errors=errors,
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and every descendant (all threads each), from /proc/<pid>/stat."""
    return cpu_seconds_of([pid, *descendants(pid)])


def cpu_seconds_of(pids: list[int]) -> float:
    """utime + stime of these processes (all threads each), from /proc/<pid>/stat."""
    ticks = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line
    return ticks / os.sysconf("SC_CLK_TCK")


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
    """The process that runs the app: the server itself (granian embedded), or a descendant
    python process when it is run with a granian supervisor (--server-pythonpath at an older
    checkout)."""
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
        granian_backlog: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.granian_backlog = granian_backlog
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
                # The functions run unthrottled, as before instance types had limits: a
                # CPU.x1 quota of every core (the baseline must not be slowed down), and
                # totals large enough that every deployment of the run is placed.
                **UNTHROTTLED,
            }
        )
        env.update(self.extra_env)
        paths = list(self.pythonpath)
        site_code = []
        if self.sql_dir is not None:
            self.sql_dir.mkdir(parents=True, exist_ok=True)
            site_code.append(SQL_COUNTER)
            env["NVCF_BENCH_SQL_DIR"] = str(self.sql_dir)
        if self.granian_backlog:
            env["NVCF_LITE_SERVER__BACKLOG"] = str(self.granian_backlog)
        if site_code:
            site = self.workdir / "site"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text("\n".join(site_code))
            paths.insert(0, str(site))
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


@dataclass
class Deployment:
    """One registered and deployed function: a target of the table, memory or async mode."""

    key: str  # "fast/small", "echo/small", "slow"
    name: str  # the function's name
    image: str
    path: str  # its inferenceUrl
    slots: int  # maxRequestConcurrency
    fid: str = ""
    vid: str = ""
    port: int = 0  # the container's host port (direct runs)
    address: str = "127.0.0.1"  # where that port is published (a swarm node's address)


def register_and_deploy(server: Server, dep: Deployment) -> None:
    status, got = server.call(
        "POST",
        "/v2/nvcf/functions",
        {
            "name": dep.name,
            "inferenceUrl": dep.path,
            "inferencePort": 8000,
            "containerImage": dep.image,
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
        raise RuntimeError(f"register {dep.key} failed: HTTP {status}: {got}")
    dep.fid, dep.vid = got["function"]["id"], got["function"]["versionId"]
    path = f"/v2/nvcf/deployments/functions/{dep.fid}/versions/{dep.vid}"
    spec = {
        "gpu": "CPU",
        "minInstances": 1,
        "maxInstances": 1,
        "maxRequestConcurrency": dep.slots,
    }
    status, got = server.call("POST", path, {"deploymentSpecifications": [spec]})
    if status != 200:
        raise RuntimeError(f"deploy {dep.key} failed: HTTP {status}: {got}")


def deploy_all(server: Server, deps: list[Deployment], timeout_s: float) -> None:
    """Registers and deploys every function, then waits until each is ACTIVE with its port."""
    for dep in deps:
        register_and_deploy(server, dep)
    deadline = time.monotonic() + timeout_s
    waiting = list(deps)
    state = "?"
    while waiting and time.monotonic() < deadline:
        for dep in list(waiting):
            path = f"/v2/nvcf/deployments/functions/{dep.fid}/versions/{dep.vid}"
            _, got = server.call("GET", path)
            info = got.get("deployment", {}) if isinstance(got, dict) else {}
            state = info.get("functionStatus", "?")
            instances = info.get("instances") or []
            if state == "ACTIVE" and instances and instances[0].get("hostPort"):
                dep.port = int(instances[0]["hostPort"])
                dep.address = instances[0].get("hostAddress") or "127.0.0.1"
                waiting.remove(dep)
            elif state == "ERROR":
                raise RuntimeError(f"deployment of {dep.key} failed: {json.dumps(info)[:2000]}")
        if waiting:
            time.sleep(0.2)
    if waiting:
        names = ", ".join(d.key for d in waiting)
        raise RuntimeError(f"not ACTIVE after {timeout_s:.0f} s: {names} (last status {state})")


def deploy_function(
    server: Server, name: str, image: str, slots: int, timeout_s: float, path: str = INFERENCE_URL
) -> tuple[str, int]:
    """Register and deploy a test function; returns (function id, container host port)."""
    dep = Deployment(name, f"bench-{name}", image, path, slots)
    deploy_all(server, [dep], timeout_s)
    return dep.fid, dep.port


def deploy_echo(server: Server, slots: int, timeout_s: float) -> tuple[str, int]:
    """Register and deploy the echo function; returns (function id, container host port)."""
    return deploy_function(server, "echo", IMAGE, slots, timeout_s)


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


# -- the benchmark: direct vs through ----------------------------------------------------------


@dataclass
class Level:
    function: str
    shape: str
    concurrency: int
    direct: list[Run] = field(default_factory=list)
    through: list[Run] = field(default_factory=list)

    @staticmethod
    def median(runs: list[Run], key: str = "rps") -> float:
        values = sorted(float(getattr(r, key)) for r in runs)
        if not values:
            return float("nan")
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


@dataclass
class Target:
    function: str
    shape: Shape
    fid: str
    port: int
    address: str = "127.0.0.1"

    @property
    def key(self) -> str:
        return f"{self.function}/{self.shape.name}"


def bench(args: argparse.Namespace, server: Server, targets: list[Target]) -> list[Level]:
    wrk = find_wrk()
    profile_c = next((c for c in args.levels if c == TARGET_RATIO_C), None) or next(
        (c for c in args.levels if c > 1), args.levels[0]
    )
    levels: list[Level] = []
    for target in targets:
        shape = target.shape
        scripts = {
            "direct": wrk_script(server.workdir, f"direct-{shape.name}", "", shape),
            "through": wrk_script(
                server.workdir, f"through-{shape.name}", f"Bearer {server.key}", shape
            ),
        }
        urls = {
            "direct": f"http://{target.address}:{target.port}{shape.path}",
            "through": f"{server.url}/v2/nvcf/pexec/functions/{target.fid}",
        }
        for name in ("direct", "through"):
            warm = run_wrk(wrk, urls[name], scripts[name], 16, 2, "warm")
            if warm.errors:
                raise RuntimeError(f"warm-up {target.key} {name} failed: {warm.errors}")
        for c in args.levels:
            level = Level(target.function, shape.name, c)
            levels.append(level)
            for rnd in range(args.rounds):
                # alternate which side goes first from round to round
                order = ("direct", "through") if rnd % 2 == 0 else ("through", "direct")
                for name in order:
                    if args.warmup > 0:
                        run_wrk(wrk, urls[name], scripts[name], c, args.warmup, "warm")
                    through = name == "through"
                    sql_before = server.sql_snapshot() if through else None
                    prof = None
                    if (
                        args.profile
                        and through
                        and c == profile_c
                        and rnd == 0
                        and target is targets[0]
                    ):
                        prof = start_profile(
                            worker_pid(server.pid), args.profile, args.profile_args
                        )
                        time.sleep(0.5)
                    cpu_before = cpu_seconds(server.pid)
                    run = run_wrk(wrk, urls[name], scripts[name], c, args.duration, name)
                    if through:
                        run.cpu_s = cpu_seconds(server.pid) - cpu_before
                    if prof is not None:
                        stop_profile(prof, args.profile)
                    if sql_before is not None and server.sql_dir is not None:
                        after = server.sql_snapshot()
                        run.sql = sql_per_request(sql_before, after, run.requests)
                    (level.through if through else level.direct).append(run)
                    errs = f", ERRORS {run.errors}" if run.errors else ""
                    cpu = f", nvcf-lite CPU {run.cpu_ms_per_request:.3f} ms/req" if through else ""
                    print(
                        f"  {target.key:<10} round {rnd + 1} c={c:<3} {name:<7}"
                        f" {run.requests:>7} in {run.elapsed_s:5.2f} s = {run.rps:8.0f} req/s,"
                        f" p50 {run.p50_ms:6.2f} ms, p99 {run.p99_ms:7.2f} ms{cpu}{errs}",
                        flush=True,
                    )
    return levels


def sql_per_request(
    before: tuple[Counter[str], int], after: tuple[Counter[str], int], requests: int
) -> dict[str, float]:
    stmts = after[0] - before[0]
    out = {k: v / max(1, requests) for k, v in stmts.most_common()}
    out["= statements"] = sum(stmts.values()) / max(1, requests)
    out["= aiosqlite round trips"] = (after[1] - before[1]) / max(1, requests)
    return out


@dataclass
class Verdict:
    """What a mode found: failed requests (always fail the run) and performance FAILs."""

    failed_requests: int = 0
    perf_fails: int = 0

    def check(self, passed: bool, text: str) -> None:
        print(f"{'PASS' if passed else 'FAIL'}: {text}")
        if not passed:
            self.perf_fails += 1

    def add(self, other: Verdict) -> None:
        self.failed_requests += other.failed_requests
        self.perf_fails += other.perf_fails


def report(levels: list[Level], args: argparse.Namespace) -> Verdict:
    header = (
        f"{'function/shape':<14} | {'c':>3} | {'direct req/s':>12} | {'through req/s':>13} |"
        f" {'ratio':>5} | {'direct p50/p99 ms':>17} | {'through p50/p99 ms':>18} |"
        f" {'added p50 ms':>12} | {'CPU ms/req':>10}"
    )
    print()
    print(header)
    print("-" * len(header))
    verdict = Verdict()
    # (function/shape, c) -> (ratio, added p50, CPU ms/req)
    found: dict[tuple[str, int], tuple[float, float, float]] = {}
    m = Level.median
    for level in levels:
        d_rps, t_rps = m(level.direct), m(level.through)
        ratio = t_rps / d_rps if d_rps else 0.0
        d50, t50 = m(level.direct, "p50_ms"), m(level.through, "p50_ms")
        d99, t99 = m(level.direct, "p99_ms"), m(level.through, "p99_ms")
        cpu = m(level.through, "cpu_ms_per_request")
        key = f"{level.function}/{level.shape}"
        found[(key, level.concurrency)] = (ratio, t50 - d50, cpu)
        verdict.failed_requests += sum(sum(r.errors.values()) for r in level.direct + level.through)
        print(
            f"{key:<14} | {level.concurrency:>3} | {d_rps:>12.0f} | {t_rps:>13.0f} |"
            f" {ratio:>5.2f} | {d50:>7.2f} / {d99:>7.2f} | {t50:>8.2f} / {t99:>7.2f} |"
            f" {t50 - d50:>12.2f} | {cpu:>10.3f}"
        )
    print(
        f"(medians of {args.rounds} round(s) of {args.duration} s wrk runs, 1 wrk thread;"
        " CPU ms/req: utime+stime of the nvcf-lite process (and any child) per"
        " completed through request)"
    )
    for level in levels:
        sqls = [r.sql for r in level.through if r.sql]
        if sqls:
            parts = ", ".join(f"{k}: {v:.2f}" for k, v in sqls[len(sqls) // 2].items())
            print(
                f"SQLite per through request, {level.function}/{level.shape}"
                f" c={level.concurrency}: {parts}"
            )
    print()
    # The old targets, against the (slow, threaded) echo function they were set for.
    if ("echo/small", TARGET_RATIO_C) in found:
        ratio = found[("echo/small", TARGET_RATIO_C)][0]
        verdict.check(
            ratio >= TARGET_RATIO,
            f"echo/small through/direct at c={TARGET_RATIO_C} = {ratio:.2f}"
            f" (target >= {TARGET_RATIO})",
        )
    if ("echo/small", 1) in found:
        added = found[("echo/small", 1)][1]
        verdict.check(
            added <= TARGET_ADDED_P50_MS,
            f"echo/small added p50 at c=1 = {added:.2f} ms (target <= {TARGET_ADDED_P50_MS} ms)",
        )
    # Issue #12's targets, on the fast function with the small shape.
    if ("fast/small", FAST_CPU_C) in found:
        ratio, _, cpu = found[("fast/small", FAST_CPU_C)]
        verdict.check(
            cpu <= FAST_CPU_MS,
            f"fast/small nvcf-lite CPU per forwarded request at c={FAST_CPU_C} = {cpu:.3f} ms"
            f" (target <= {FAST_CPU_MS} ms)",
        )
        verdict.check(
            ratio >= FAST_RATIO,
            f"fast/small through/direct at c={FAST_CPU_C} = {ratio:.2f} (target >= {FAST_RATIO})",
        )
    if ("fast/small", 1) in found:
        added = found[("fast/small", 1)][1]
        verdict.check(
            added <= FAST_ADDED_P50_MS,
            f"fast/small added p50 at c=1 = {added:.2f} ms (target <= {FAST_ADDED_P50_MS} ms)",
        )
    if verdict.failed_requests:
        print(
            f"FAIL: {verdict.failed_requests} request(s) failed, answered non-2xx or without"
            " the expected body"
        )
    return verdict


# -- memory ----------------------------------------------------------------------------------


@dataclass
class ProcMemory:
    pid: int
    role: str
    rss: int  # bytes
    pss: int  # bytes


def _kb_field(path: str, name: str) -> int:
    """A `Name:  N kB` field of a /proc file, in bytes (0 when absent)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_snapshot(server: Server) -> list[ProcMemory]:
    """RSS and PSS of the server's process and every descendant (none but containers' tools)."""
    out = []
    for pid in [server.pid, *descendants(server.pid)]:
        rss = _kb_field(f"/proc/{pid}/status", "VmRSS")
        pss = _kb_field(f"/proc/{pid}/smaps_rollup", "Pss")
        role = "main (nvcf-lite serve)" if pid == server.pid else "granian worker (older serve)"
        if pid != server.pid and not _is_python(pid):
            role = "child"
        out.append(ProcMemory(pid, role, rss, pss))
    return out


def _sums(snap: list[ProcMemory]) -> tuple[float, float]:
    return sum(p.rss for p in snap) / MB, sum(p.pss for p in snap) / MB


def print_memory(title: str, snap: list[ProcMemory]) -> None:
    print(f"memory {title}:")
    for p in snap:
        print(f"  pid {p.pid:<7} {p.role:<24} RSS {p.rss / MB:7.1f} MB   PSS {p.pss / MB:7.1f} MB")
    rss, pss = _sums(snap)
    print(f"  {'sum':<37} RSS {rss:7.1f} MB   PSS {pss:7.1f} MB", flush=True)


def memory_mode(
    args: argparse.Namespace, server: Server, target: Deployment, idle: list[ProcMemory]
) -> Verdict:
    """Drives fast/small through nvcf-lite (wrk c=16, stopped by count) to 10k and 100k
    requests; prints RSS/PSS at each and the growth; PASS/FAIL on the RSS sums."""
    wrk = find_wrk()
    verdict = Verdict()
    url = f"{server.url}/v2/nvcf/pexec/functions/{target.fid}"
    done = 0
    snaps: dict[int, list[ProcMemory]] = {}
    for step in MEMORY_STEPS:
        want = step - done
        script = wrk_script(
            server.workdir, f"memory-{step}", f"Bearer {server.key}", SHAPES["small"], want
        )
        seconds = 900  # stopped by count long before
        run = run_wrk(wrk, url, script, MEMORY_C, seconds, f"memory-{step}")
        done += run.requests
        verdict.failed_requests += sum(run.errors.values())
        errs = f", ERRORS {run.errors}" if run.errors else ""
        print(
            f"  memory load: {run.requests} requests in {run.elapsed_s:.1f} s"
            f" ({run.rps:.0f} req/s, c={MEMORY_C}) -> {done} in all{errs}",
            flush=True,
        )
        time.sleep(0.5)
        snaps[step] = memory_snapshot(server)
        print_memory(f"after {done} requests to fast/small through nvcf-lite", snaps[step])
    first, last = snaps[MEMORY_STEPS[0]], snaps[MEMORY_STEPS[-1]]
    rss0, pss0 = _sums(first)
    rss1, pss1 = _sums(last)
    idle_rss, idle_pss = _sums(idle)
    print()
    print(
        f"memory: idle RSS {idle_rss:.1f} MB / PSS {idle_pss:.1f} MB; growth"
        f" {MEMORY_STEPS[0] // 1000}k -> {MEMORY_STEPS[-1] // 1000}k requests:"
        f" RSS {rss1 - rss0:+.1f} MB, PSS {pss1 - pss0:+.1f} MB"
    )
    verdict.check(
        idle_rss <= MEMORY_IDLE_MB,
        f"idle RSS (all the server's processes) = {idle_rss:.1f} MB"
        f" (target <= {MEMORY_IDLE_MB:.0f} MB; PSS {idle_pss:.1f} MB)",
    )
    verdict.check(
        rss1 - rss0 <= MEMORY_GROWTH_MB,
        f"RSS growth {MEMORY_STEPS[0] // 1000}k -> {MEMORY_STEPS[-1] // 1000}k requests ="
        f" {rss1 - rss0:+.1f} MB (target <= {MEMORY_GROWTH_MB:.0f} MB; PSS {pss1 - pss0:+.1f} MB)",
    )
    if verdict.failed_requests:
        print(f"FAIL: {verdict.failed_requests} request(s) of the memory load failed")
    return verdict


# -- async accepts ---------------------------------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    """RLIMIT_NOFILE soft := hard for this process and what it starts (wrk, the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return "?"


class CpuSampler(threading.Thread):
    """The server's CPU seconds every `every` s while a timed window runs (a few /proc reads,
    nothing the server would notice)."""

    def __init__(self, pids: list[int], every: float = 0.1) -> None:
        super().__init__(daemon=True, name="bench-cpu-sampler")
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), cpu_seconds_of(self.pids)))
            if self.stopping.wait(self.every):
                self.samples.append((time.monotonic(), cpu_seconds_of(self.pids)))
                return

    def at(self, t: float) -> float:
        """CPU seconds at monotonic time t, interpolated between samples."""
        s = self.samples
        if t <= s[0][0]:
            return s[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(s):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return s[-1][1]


@dataclass
class Completion:
    statuses: Counter[int] = field(default_factory=Counter)
    samples: dict[int, str] = field(default_factory=dict)  # a body per unexpected status
    polls: int = 0
    client_errors: int = 0
    unfinished: int = 0
    seconds: float = 0.0  # from the end of wrk's run to the last end
    accepted_202: int = 0


class IdTail:
    """The rows the wrk threads have appended to OUTDIR/ids.<thread>.txt since the last read
    (the Lua script writes them line-buffered, one per answer)."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.offsets: dict[Path, int] = {}

    def read(self) -> list[tuple[float, str, str]]:
        rows = []
        for path in sorted(self.outdir.glob("ids.*.txt")):
            with path.open("rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read()
            whole = data[: data.rfind(b"\n") + 1]  # a line being written waits for its end
            self.offsets[path] = self.offsets.get(path, 0) + len(whole)
            for line in whole.decode().splitlines():
                parts = line.split()
                if len(parts) == 3:
                    rows.append((float(parts[0]), parts[1], parts[2]))
        return rows


async def complete_all(
    url: str,
    key: str,
    tail: IdTail,
    fed: threading.Event,
    long_polls: int,
    keepers: int,
    limit_s: float,
) -> Completion:
    """Polls every request wrk got 202 for to its end, from the moment it was answered (this
    runs beside wrk, as the requests' own clients would), until `fed` is set (wrk is done)
    and every one has ended, or `limit_s` after `fed`.

    Up to `long_polls` connections each long-poll one id to its end (NVCF-POLL-SECONDS: 30,
    oldest first: the queue is FIFO, so those finish first; a waiting status poll keeps the
    server from taking its request for abandoned). The ids waiting for one of them are touched
    by `keepers` connections (NVCF-POLL-SECONDS: 1) before they go KEEP_TOUCH_S without a
    poll: the server cancels a detached request nobody polls for 10 s (spec §2.3.4).
    """
    import aiohttp

    result = Completion()
    started = time.monotonic()
    # id -> [last touch, polls on their way, long-polled]
    state: dict[str, list[Any]] = {}
    fifo: deque[str] = deque()  # ids no long poll has taken yet, oldest first
    by_due: list[tuple[float, str]] = []
    total = 0
    fed_at: list[float] = []

    def feed() -> None:
        nonlocal total
        for t, status, rid in tail.read():
            if status == "202" and rid != "-":
                state[rid] = [t, 0, False]
                fifo.append(rid)
                heapq.heappush(by_due, (t + KEEP_TOUCH_S, rid))
                total += 1
        if fed.is_set() and not fed_at:
            fed_at.append(time.monotonic())

    def over() -> bool:
        if not fed_at:
            return False
        return not state or time.monotonic() > fed_at[0] + limit_s

    async def poll(session: aiohttp.ClientSession, rid: str, seconds: int) -> bool:
        """Whether the request has ended (its final answer is counted)."""
        st = state[rid]
        st[1] += 1  # polls of it on their way (a keeper's touch may meet the long poll)
        status, body = None, b""
        try:
            async with session.get(
                f"{url}/v2/nvcf/pexec/status/{rid}", headers={"NVCF-POLL-SECONDS": str(seconds)}
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            result.client_errors += 1
        finally:
            st[1] -= 1
        result.polls += 1
        if rid not in state:
            return True  # the other poll of it saw its end
        if status == 202:
            st[0] = time.monotonic()
            if not st[2]:
                heapq.heappush(by_due, (st[0] + KEEP_TOUCH_S, rid))
            return False
        if status is None:
            if not st[2]:
                heapq.heappush(by_due, (st[0] + KEEP_TOUCH_S, rid))  # its last touch stands
            return False
        del state[rid]
        result.statuses[status] += 1
        if status != 200 and status not in result.samples:
            result.samples[status] = body[:300].decode(errors="replace")
        return True

    async def feeder() -> None:
        while not over():
            feed()
            await asyncio.sleep(0.1)

    async def long_worker(session: aiohttp.ClientSession) -> None:
        while not over():
            if not fifo:
                await asyncio.sleep(0.05)
                continue
            rid = fifo.popleft()
            st = state.get(rid)
            if st is None:
                continue
            st[2] = True
            while rid in state and not over():
                if await poll(session, rid, LONG_POLL_S):
                    break

    async def keep_worker(session: aiohttp.ClientSession) -> None:
        while not over():
            while by_due:
                rid = by_due[0][1]
                st = state.get(rid)
                if (
                    st is not None
                    and not st[1]
                    and not st[2]
                    and by_due[0][0] == st[0] + KEEP_TOUCH_S
                ):
                    break
                heapq.heappop(by_due)  # ended, long-polled, or touched since
            if not by_due:
                await asyncio.sleep(0.05)
                continue
            wait = by_due[0][0] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.2))
                continue
            _, rid = heapq.heappop(by_due)
            await poll(session, rid, 1)

    async def progress() -> None:
        while True:
            await asyncio.sleep(5)
            print(
                f"  completing: {total - len(state)} of {total} answered 202 done after"
                f" {time.monotonic() - started:.0f} s ({result.polls} polls)",
                flush=True,
            )

    connector = aiohttp.TCPConnector(limit=long_polls + keepers, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=LONG_POLL_S + 60)
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        tasks = [asyncio.ensure_future(feeder())]
        tasks += [asyncio.ensure_future(keep_worker(session)) for _ in range(max(1, keepers))]
        tasks += [asyncio.ensure_future(long_worker(session)) for _ in range(max(1, long_polls))]
        reporter = asyncio.ensure_future(progress())
        await asyncio.gather(*tasks)
        reporter.cancel()
    result.unfinished = len(state)
    result.seconds = time.monotonic() - (fed_at[0] if fed_at else started)
    result.accepted_202 = total
    return result


def read_id_files(outdir: Path) -> list[tuple[float, str, str]]:
    """Every row the wrk threads wrote, oldest first."""
    return sorted(IdTail(outdir).read())


def async_mode(args: argparse.Namespace, server: Server, slow: Deployment) -> Verdict:
    wrk = find_wrk()
    verdict = Verdict()
    outdir = server.workdir / "async"
    outdir.mkdir(exist_ok=True)
    script = server.workdir / "wrk-async.lua"
    head = (
        f"BODY = {lua_string(BODY.decode())}\n"
        f"AUTH = {lua_string('Bearer ' + server.key)}\n"
        f"CHECK = {lua_string(json.dumps(SLEEP_PATH))}\n"
        f"OUTDIR = {lua_string(str(outdir))}\n"
        f"HOLD = {lua_string(str(int(HOLD_S)))}\n"
    )
    script.write_text(head + ASYNC_LUA)
    url = f"{server.url}/v2/nvcf/pexec/functions/{slow.fid}"
    backlog = args.server_backlog or SERVER_BACKLOG
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    print()
    print(
        f"async accepts: `slow` ({SLEEP_PATH}, answers after 1 s) maxRequestConcurrency"
        f" {slow.slots}, queue limit {args.queue_limit}; wrk -t{args.async_threads}"
        f" -c{args.async_connections} -d{args.async_duration}s, NVCF-POLL-SECONDS: 1;"
        f" server.backlog {backlog}{' (--server-backlog)' if args.server_backlog else ''},"
        f" server.max_requests_in_flight {SERVER_IN_FLIGHT},"
        f" net.core.somaxconn {_sysctl('net.core.somaxconn')}, RLIMIT_NOFILE {nofile[0]}",
        flush=True,
    )
    if nofile[0] < args.async_connections + 1024:
        print(f"warning: RLIMIT_NOFILE {nofile[0]} is low for {args.async_connections} connections")
    pids = [server.pid, *descendants(server.pid)]
    sampler = CpuSampler(pids)
    sampler.start()
    cmd = [
        wrk,
        f"-t{args.async_threads}",
        f"-c{args.async_connections}",
        f"-d{args.async_duration}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    # the accepted requests are polled from their 202 on, beside wrk, as their clients would
    fed = threading.Event()
    completion: list[Completion] = []
    long_polls = args.poll_concurrency or LONG_POLLS
    completer = threading.Thread(
        target=lambda: completion.append(
            asyncio.run(
                complete_all(
                    server.url,
                    server.key,
                    IdTail(outdir),
                    fed,
                    long_polls,
                    KEEPERS,
                    args.complete_timeout,
                )
            )
        ),
        name="completion",
        daemon=True,
    )
    completer.start()
    t_start = time.monotonic()
    try:
        got, _ = wrk_json(cmd, args.async_duration + 120)
    finally:
        sampler.stopping.set()
        sampler.join()
        fed.set()
    t_stop = time.monotonic()
    rows = read_id_files(outdir)
    accepted = [(t, s, rid) for t, s, rid in rows if rid != "-"]
    first_429 = min((t for t, s, _ in rows if s == "429"), default=None)
    others = Counter(s for t, s, rid in rows if rid == "-" and s != "429")
    if not accepted:
        print("FAIL: no request was accepted")
        verdict.failed_requests += 1
        return verdict
    # All in answer time: an accepted request is answered when its 1 s poll window ends (`slow`
    # never completes sooner), a 429 at once. A request accepted in [start, end - HOLD_S] is
    # answered in [start + HOLD_S, end] if the server answers on time (a late answer counts
    # only if it still lands in the window: lateness lowers the rate, as it should); the
    # accepts made before the queue filled are answered by HOLD_S after the first 429.
    run_end = min(t_stop, t_start + args.async_duration)
    t_end = min(first_429 + HOLD_S, run_end) if first_429 is not None else run_end
    t_from = t_start + HOLD_S
    in_window = sum(1 for t, _, _ in accepted if t_from <= t <= t_end)
    span = t_end - t_from
    rate = in_window / span if span > 0 else float("nan")
    cpu_window = sampler.at(t_end) - sampler.at(t_from) if span > 0 else float("nan")
    cpu_ms = cpu_window * 1000 / in_window if in_window else float("nan")
    by_status = Counter(s for _, s, _ in accepted)
    socket_errors = {k: int(got[k]) for k in ("connect", "read", "write", "timeout") if got[k]}
    ended = (
        f"the first 429 (at +{first_429 - t_start:.2f} s) + {HOLD_S:.0f} s"
        if first_429 is not None and first_429 + HOLD_S < run_end
        else "the run's end (no 429 before)"
    )
    print(
        f"  window {span:.2f} s of answers, from +{HOLD_S:.0f} s (the first accepted one at"
        f" +{accepted[0][0] - t_start:.2f} s) to {ended}: {in_window} accepted ="
        f" {rate:.0f} accepted/s; nvcf-lite CPU {cpu_ms:.3f} ms per accepted request"
        f" ({cpu_window:.2f} s CPU in it)"
    )
    if span <= 0:
        print(
            f"  note: the queue filled within the first {HOLD_S:.0f} s (the connection burst):"
            " no window to measure; raise --queue-limit"
        )
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))
    print(
        f"  whole run: {len(accepted)} accepted ({statuses}),"
        f" 429 (queue full): {got['q429']}, answers without NVCF-REQID: {got['no_id']},"
        f" other statuses: {dict(others) or 'none'}, wrk socket errors: {socket_errors or 'none'}",
        flush=True,
    )
    verdict.failed_requests += got["no_id"] + got["other"] + sum(socket_errors.values())
    done_200 = by_status.get("200", 0)
    completer.join(args.complete_timeout + LONG_POLL_S + 90)
    comp = completion[0] if completion else Completion(unfinished=by_status.get("202", 0))
    completed = done_200 + comp.statuses.get(200, 0)
    not_200 = {k: v for k, v in comp.statuses.items() if k != 200}
    print(
        f"  completion: {comp.accepted_202} answered 202 polled from their 202 on, all ended"
        f" {comp.seconds:.1f} s after the run ({comp.polls} polls; {long_polls} long-poll and"
        f" {KEEPERS} touch connections): 200: {comp.statuses.get(200, 0)},"
        f" other: {not_200 or 'none'}, unfinished at the {args.complete_timeout:.0f} s limit:"
        f" {comp.unfinished}, client errors (retried): {comp.client_errors};"
        f" {done_200} answered 200 at once"
    )
    for status, sample in comp.samples.items():
        print(f"    {status}: {sample}")
    all_done = completed == len(accepted)  # an accepted 200 without its body did not complete
    verdict.failed_requests += len(accepted) - completed
    print()
    verdict.check(
        rate >= ASYNC_TARGET_RPS,
        f"async accepts: {rate:.0f} accepted/s (target >= {ASYNC_TARGET_RPS:.0f}/s);"
        f" nvcf-lite CPU {cpu_ms:.3f} ms per accepted request",
    )
    print(
        f"{'PASS' if all_done else 'FAIL'}: every accepted request completed:"
        f" {completed} of {len(accepted)} answered 200"
    )
    return verdict


# -- the command -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", default="1,16,64", help="levels, comma-separated")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up before each run")
    p.add_argument("--rounds", type=int, default=2, help="direct/through rounds, report medians")
    p.add_argument("--functions", default="fast,echo", help="which functions: fast, echo")
    p.add_argument(
        "--shapes",
        default="small,64k,sse",
        help="body shapes of the fast function: small, 64k, sse (echo: small only)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="2 s runs, no per-run warm-up, 1 round; the table only unless a mode is named",
    )
    p.add_argument("--table", action="store_true", help="the direct/through table (see Modes)")
    p.add_argument(
        "--memory",
        action="store_true",
        help="RSS/PSS idle, at 10k and at 100k requests (naming a mode runs only those named)",
    )
    p.add_argument("--no-memory", action="store_true", help="no memory mode in a full run")
    p.add_argument(
        "--async-accepts",
        action="store_true",
        help="accepted/s with NVCF-POLL-SECONDS: 1, then every accepted request completed",
    )
    p.add_argument("--no-async-accepts", action="store_true", help="no async mode in a full run")
    p.add_argument("--strict", action="store_true", help="a performance FAIL fails the exit status")
    p.add_argument(
        "--async-duration",
        type=int,
        default=10,
        help="seconds of the async wrk run (the first burst of connections takes a few)",
    )
    p.add_argument("--async-connections", type=int, default=6000, help="wrk connections")
    p.add_argument("--async-threads", type=int, default=2, help="wrk threads in async mode")
    p.add_argument("--async-slots", type=int, default=1024, help="maxRequestConcurrency of `slow`")
    p.add_argument(
        "--queue-limit",
        type=int,
        default=20000,
        help="the server's invocation.max_queue_per_function (async mode)",
    )
    p.add_argument(
        "--poll-concurrency",
        type=int,
        default=0,
        help="connections long-polling the accepted requests to their end (default: 6000)",
    )
    p.add_argument(
        "--complete-timeout",
        type=float,
        default=300.0,
        help="seconds allowed to complete every accepted request",
    )
    p.add_argument(
        "--server-backlog",
        type=int,
        default=0,
        metavar="N",
        help="the server's server.backlog (default: its own, 4096)",
    )
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
    p.add_argument(
        "--swarm", action="store_true", help="local instance vs one on a swarm worker (root)"
    )
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
    args.function_names = [f.strip() for f in args.functions.split(",") if f.strip()]
    unknown = set(args.function_names) - set(IMAGES)
    if unknown:
        p.error(f"unknown function(s) {sorted(unknown)}; known: {', '.join(IMAGES)}")
    args.shape_names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = set(args.shape_names) - set(SHAPES)
    if unknown:
        p.error(f"unknown shape(s) {sorted(unknown)}; known: {', '.join(SHAPES)}")
    if (args.memory and args.no_memory) or (args.async_accepts and args.no_async_accepts):
        p.error("--memory/--no-memory and --async-accepts/--no-async-accepts exclude each other")
    if args.table or args.memory or args.async_accepts:
        args.run_table, args.run_memory, args.run_async = (
            args.table,
            args.memory,
            args.async_accepts,
        )
    else:
        args.run_table = True
        args.run_memory = not (args.quick or args.no_memory)
        args.run_async = not (args.quick or args.no_async_accepts)
    if args.quick:
        args.duration, args.warmup, args.rounds = min(args.duration, 2), 0, 1
    return args


def plan(args: argparse.Namespace) -> tuple[list[Deployment], list[tuple[str, str]]]:
    """The functions to deploy, and the table's (function, shape) targets."""
    slots = max(64, max(args.levels))
    targets: list[tuple[str, str]] = []
    if args.run_table:
        for fn in args.function_names:
            shapes = args.shape_names if fn == "fast" else ["small"]
            targets += [(fn, s) for s in shapes]
    keys = {f"{fn}/{s}" for fn, s in targets}
    if args.run_memory:
        keys.add("fast/small")
    deps = []
    for key in sorted(keys, key=lambda k: (k.split("/")[0] != "fast", k)):
        fn, shape = key.split("/")
        deps.append(Deployment(key, f"bench-{fn}-{shape}", IMAGES[fn], SHAPES[shape].path, slots))
    if args.run_async:
        deps.append(Deployment("slow", "bench-slow", IMAGES["fast"], SLEEP_PATH, args.async_slots))
    return deps, targets


def one_table(args: argparse.Namespace, extra: dict[str, str]) -> list[Level]:
    """A server of its own, fast/small deployed on it, the table; everything removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="nvcf-bench-"))
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    key = "nvapi-" + uuid.uuid4().hex + uuid.uuid4().hex
    server = Server(workdir, key, namespace, False, extra)
    try:
        server.start()
        dep = Deployment("fast/small", "bench-fast-small", IMAGES["fast"], SHAPES["small"].path, 64)
        deploy_all(server, [dep], args.deploy_timeout)
        print(f"fast/small on {dep.address}:{dep.port}", flush=True)
        target = Target("fast", SHAPES["small"], dep.fid, dep.port, dep.address)
        return bench(args, server, [target])
    finally:
        server.stop()
        remove_containers(namespace)
        shutil.rmtree(workdir, ignore_errors=True)


def swarm_mode(args: argparse.Namespace) -> int:
    """--swarm: the table with the instance on this engine, then on a swarm worker node."""
    sys.path.insert(0, str(ROOT / "tests"))
    from swarm_support import SwarmCluster  # the tests' three-node swarm

    cluster = SwarmCluster(Path(f"/run/nvcf-bench-swarm-{os.getpid()}"))
    tables: dict[str, list[Level]] = {}
    try:
        cluster.up([IMAGES["fast"]])
        print(f"swarm formed in {cluster.timings['swarm formation']:.1f} s", flush=True)
        tables["local"] = one_table(args, {})
        swarm = {"NVCF_LITE_DOCKER__RUNTIME": "swarm", "NVCF_LITE_DOCKER__BASE_URL": cluster.url}
        tables["worker"] = one_table(args, swarm)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up")
        return 1
    finally:
        cluster.close()
    print("\nfast/small through nvcf-lite: instance on this engine vs on a swarm worker node")
    failed = 0
    for local, remote in zip(tables["local"], tables["worker"], strict=True):
        lp, rp = local.median(local.through, "p50_ms"), remote.median(remote.through, "p50_ms")
        lr, rr = local.median(local.through), remote.median(remote.through)
        dl, dr = local.median(local.direct, "p50_ms"), remote.median(remote.direct, "p50_ms")
        failed += sum(sum(r.errors.values()) for r in [*local.through, *remote.through])
        print(
            f"  c={local.concurrency:<3} local {lr:8.0f} req/s p50 {lp:6.2f} ms | worker {rr:8.0f}"
            f" req/s p50 {rp:6.2f} ms | added p50 {rp - lp:+.2f} ms, worker/local {rr / lr:.2f}"
            f" | direct p50 local {dl:.2f} ms, worker {dr:.2f} ms"
        )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    find_wrk()  # fail before starting anything
    if not os.path.exists(DOCKER_SOCK):
        print(f"error: no Docker engine at {DOCKER_SOCK} (see scripts/start-dockerd.sh)")
        return 2
    if args.run_async:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            print("error: async accepts need aiohttp (run with the project venv)")
            return 2
    if not args.skip_build:
        build = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_test_images.py")])
        if build.returncode != 0:
            print("error: building the test images failed")
            return 2
    raise_nofile()  # wrk and the server inherit it
    if args.swarm:
        return swarm_mode(args)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="nvcf-bench-"))
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    key = "nvapi-" + uuid.uuid4().hex + uuid.uuid4().hex
    extra = {"NVCF_LITE_SERVER__FAST_PATH": "true" if args.fast_path == "on" else "false"}
    if args.run_async:
        extra["NVCF_LITE_INVOCATION__MAX_QUEUE_PER_FUNCTION"] = str(args.queue_limit)
    extra.update(kv.split("=", 1) for kv in args.server_env)
    server = Server(
        workdir,
        key,
        namespace,
        args.count_sql,
        extra,
        args.server_pythonpath,
        granian_backlog=args.server_backlog or None,
    )
    verdict = Verdict()
    finished = False
    started = time.monotonic()
    try:
        server.start()
        deps, table_targets = plan(args)
        deploy_all(server, deps, args.deploy_timeout)
        by_key = {d.key: d for d in deps}
        where = ", ".join(f"{d.key} on 127.0.0.1:{d.port}" for d in deps)
        print(
            f"nvcf-lite {server.url} (pid {server.pid}, app in pid {worker_pid(server.pid)}),"
            f" {where}; ready in {time.monotonic() - started:.1f} s, fast path {args.fast_path};"
            f" {os.cpu_count()} CPUs shared by server, containers and wrk",
            flush=True,
        )
        if args.run_memory:
            time.sleep(1.0)  # let start-up's last writes and health probes settle
            idle = memory_snapshot(server)
            print_memory(f"idle (after start-up and deploy of {len(deps)} function(s))", idle)
            verdict.add(memory_mode(args, server, by_key["fast/small"], idle))
        if args.run_table:
            targets = [
                Target(fn, SHAPES[shape], by_key[f"{fn}/{shape}"].fid, by_key[f"{fn}/{shape}"].port)
                for fn, shape in table_targets
            ]
            levels = bench(args, server, targets)
            verdict.add(report(levels, args))
        if args.run_async:
            verdict.add(async_mode(args, server, by_key["slow"]))
        finished = True
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
    if not finished:
        return 1
    print(
        f"\n{verdict.failed_requests} failed request(s), {verdict.perf_fails} performance"
        f" FAIL(s){' (--strict: they fail the run)' if args.strict else ''};"
        f" {time.monotonic() - started:.0f} s in all"
    )
    if verdict.failed_requests:
        return 1
    return 1 if args.strict and verdict.perf_fails else 0


if __name__ == "__main__":
    sys.exit(main())
