"""Overhead of nvcf-lite's OpenAI-compatible gateway: chat completions straight at an LLM
function container and through `POST /v1/chat/completions`, in one run.

Starts `nvcf-lite serve` (a temp data dir, a unique Docker namespace, no instances kept; the
server and wrk helpers of scripts/bench_invoke.py) and deploys one LLM function on CPU
(nvcf-lite-test/llm:1, scripts/llm_function_server.py: a deterministic OpenAI-compatible
server; min = max = 1 instance, maxRequestConcurrency 128). Load comes from `wrk` (one thread,
connections = concurrency) during a timed window, alternating direct
(`http://127.0.0.1:<container port>/v1/chat/completions`) and through runs for --rounds rounds;
per level it prints the median req/s, p50/p99 of each side, through/direct, the added p50 and
nvcf-lite's CPU ms per request. Shapes (each answer checked by wrk's Lua script):

  stream  `stream: true`, a 64-token answer (`max_tokens` = `min_tokens` = 64): 64 SSE
          chunks and `data: [DONE]` (checked: the answer ends with it)
  plain   the same 64-token answer as one JSON body (checked: it carries `usage`)

Time to first token (c=1): --ttft-requests sequential streamed calls per side from a plain
socket client, the time from sending the request to the first `data:` chunk; p50/p99 and the
added p50 are printed. PASS/FAIL (the issue's targets): added p50 <= 2 ms at c=1 (stream),
through/direct >= 0.5 at c=16 (stream).

    .venv/bin/python scripts/bench_gateway.py [--quick] [--concurrency 1,16,64] [--rounds 2]
        [--duration 5] [--shapes stream,plain] [--ttft-requests 200] [--strict]

Exit status 0 when every request succeeded (no non-2xx or wrong answer); a performance FAIL
fails it only with --strict. Talks only to 127.0.0.1; removes its server and containers on
exit. Needs `wrk` on PATH (Debian: apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "nvcf-lite-test/llm:1"
MODEL = "bench-llm"
PATH = "/v1/chat/completions"
TOKENS = 64
ADDED_P50_MS = 2.0
RATIO_C = 16
RATIO = 0.5


def _bench_invoke() -> Any:
    """scripts/bench_invoke.py, for its server, wrk and /proc helpers."""
    path = ROOT / "scripts" / "bench_invoke.py"
    spec = importlib.util.spec_from_file_location("bench_invoke", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_invoke"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


bi = _bench_invoke()

WRK_LUA = r"""
-- Written by scripts/bench_gateway.py: POST a chat completion; count answers that are not 2xx
-- or do not carry CHECK (TAIL: at the end); done() prints one JSON line for the bench.
wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
if AUTH ~= "" then wrk.headers["Authorization"] = AUTH end
local threads = {}
function setup(thread) table.insert(threads, thread) end
non2xx = 0
badbody = 0
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif TAIL and string.sub(body, -#CHECK) ~= CHECK then
    badbody = badbody + 1
  elseif not TAIL and string.find(body, CHECK, 1, true) == nil then
    badbody = badbody + 1
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


@dataclass(frozen=True)
class Shape:
    name: str
    stream: bool
    check: str
    tail: bool

    def body(self) -> bytes:
        return json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "tell me about the sea"}],
                "max_tokens": TOKENS,
                "min_tokens": TOKENS,
                "stream": self.stream,
            }
        ).encode()


SHAPES = {
    "stream": Shape("stream", True, "data: [DONE]\n\n", tail=True),
    "plain": Shape("plain", False, f'"completion_tokens": {TOKENS}', tail=False),
}


def wrk_script(workdir: Path, name: str, auth: str, shape: Shape) -> Path:
    path = workdir / f"wrk-{name}.lua"
    head = (
        f"BODY = {bi.lua_string(shape.body().decode())}\n"
        f"AUTH = {bi.lua_string(auth)}\n"
        f"CHECK = {bi.lua_string(shape.check)}\n"
        f"TAIL = {'true' if shape.tail else 'false'}\n"
    )
    path.write_text(head + WRK_LUA)
    return path


def deploy_llm(server: Any, timeout_s: float) -> int:
    """Register and deploy the LLM function; the container's host port once it is ACTIVE."""
    health = {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT2S"}
    body = {
        "name": "bench-llm",
        "functionType": "LLM",
        "inferenceUrl": PATH,
        "containerImage": IMAGE,
        "health": {**health, "expectedStatusCode": 200},
        "models": [{"name": MODEL, "llmConfig": {"uris": [PATH]}}],
    }
    status, got = server.call("POST", "/v2/nvcf/functions", body)
    if status != 200:
        raise RuntimeError(f"register failed: HTTP {status}: {got}")
    fid, vid = got["function"]["id"], got["function"]["versionId"]
    spec = {"gpu": "CPU", "minInstances": 1, "maxInstances": 1, "maxRequestConcurrency": 128}
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    status, got = server.call("POST", path, {"deploymentSpecifications": [spec]})
    if status != 200:
        raise RuntimeError(f"deploy failed: HTTP {status}: {got}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, got = server.call("GET", path)
        info = got.get("deployment", {}) if isinstance(got, dict) else {}
        instances = info.get("instances") or []
        if info.get("functionStatus") == "ACTIVE" and instances and instances[0].get("hostPort"):
            return int(instances[0]["hostPort"])
        if info.get("functionStatus") == "ERROR":
            raise RuntimeError(f"deployment failed: {json.dumps(info)[:2000]}")
        time.sleep(0.2)
    raise RuntimeError(f"not ACTIVE after {timeout_s:.0f} s")


def first_token_ms(port: int, auth: str, body: bytes) -> float:
    """One streamed call on a fresh connection: ms from the request to the first `data:`."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        + (f"Authorization: {auth}\r\n" if auth else "")
        + "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        sock.sendall(head + body)
        seen = b""
        while b"data:" not in seen:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"the stream ended before its first chunk: {seen[:300]!r}")
            seen += chunk
        took = (time.perf_counter() - started) * 1000
        if not seen.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"not 200: {seen[:300]!r}")
        while sock.recv(65536):
            pass
    return took


def ttft(server: Any, port: int, n: int) -> dict[str, list[float]]:
    body = SHAPES["stream"].body()
    auth = f"Bearer {server.key}"
    out: dict[str, list[float]] = {"direct": [], "through": []}
    for _ in range(n):  # interleaved: both sides see the same machine
        out["direct"].append(first_token_ms(port, "", body))
        out["through"].append(first_token_ms(server.port, auth, body))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Level:
    shape: str
    concurrency: int
    direct: list[Any]
    through: list[Any]

    def med(self, side: str, attr: str) -> float:
        runs = self.direct if side == "direct" else self.through
        return statistics.median(getattr(r, attr) for r in runs)

    @property
    def ratio(self) -> float:
        direct = self.med("direct", "rps")
        return self.med("through", "rps") / direct if direct else float("nan")

    @property
    def added_p50_ms(self) -> float:
        return self.med("through", "p50_ms") - self.med("direct", "p50_ms")


def table(args: argparse.Namespace, server: Any, port: int, workdir: Path) -> list[Level]:
    wrk = bi.find_wrk()
    levels: list[Level] = []
    for shape in (SHAPES[s] for s in args.shapes):
        direct_lua = wrk_script(workdir, f"{shape.name}-direct", "", shape)
        through_lua = wrk_script(workdir, f"{shape.name}-through", f"Bearer {server.key}", shape)
        for c in args.concurrency:
            level = Level(shape.name, c, [], [])
            for _ in range(args.rounds):
                url = f"http://127.0.0.1:{port}{PATH}"
                level.direct.append(bi.run_wrk(wrk, url, direct_lua, c, args.duration, "direct"))
                before = bi.cpu_seconds(server.pid)
                run = bi.run_wrk(
                    wrk, f"{server.url}{PATH}", through_lua, c, args.duration, "through"
                )
                run.cpu_s = bi.cpu_seconds(server.pid) - before
                level.through.append(run)
            levels.append(level)
            print_level(level)
    return levels


def print_level(level: Level) -> None:
    errors = [r.errors for r in (*level.direct, *level.through) if r.errors]
    print(
        f"{level.shape:6} c={level.concurrency:<3}"
        f" direct {level.med('direct', 'rps'):8.0f} req/s"
        f" p50 {level.med('direct', 'p50_ms'):7.2f} p99 {level.med('direct', 'p99_ms'):7.2f} ms |"
        f" through {level.med('through', 'rps'):8.0f} req/s"
        f" p50 {level.med('through', 'p50_ms'):7.2f} p99 {level.med('through', 'p99_ms'):7.2f} ms |"
        f" ratio {level.ratio:5.2f} added p50 {level.added_p50_ms:+6.2f} ms"
        f" cpu {level.med('through', 'cpu_ms_per_request'):5.2f} ms/req"
        + (f"  ERRORS {errors}" if errors else ""),
        flush=True,
    )


def verdict(levels: list[Level], firsts: dict[str, list[float]] | None) -> tuple[bool, bool]:
    """(every request succeeded, every target met), with PASS/FAIL lines."""
    ok = all(not r.errors for lv in levels for r in (*lv.direct, *lv.through))
    met = True
    for lv in levels:
        if lv.shape != "stream":
            continue
        if lv.concurrency == 1:
            good = lv.added_p50_ms <= ADDED_P50_MS
            met &= good
            print(
                f"{'PASS' if good else 'FAIL'}: stream added p50 at c=1 {lv.added_p50_ms:.2f} ms"
                f" (target <= {ADDED_P50_MS} ms)"
            )
        if lv.concurrency == RATIO_C:
            good = lv.ratio >= RATIO
            met &= good
            print(
                f"{'PASS' if good else 'FAIL'}: stream through/direct at c={RATIO_C}"
                f" {lv.ratio:.2f} (target >= {RATIO})"
            )
    if firsts:
        d50, t50 = pct(firsts["direct"], 0.5), pct(firsts["through"], 0.5)
        print(
            f"time to first token (c=1, {len(firsts['direct'])} calls each): direct p50"
            f" {d50:.2f} p99 {pct(firsts['direct'], 0.99):.2f} ms | through p50 {t50:.2f} p99"
            f" {pct(firsts['through'], 0.99):.2f} ms | added p50 {t50 - d50:+.2f} ms"
        )
    return ok, met


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--shapes", default="stream,plain")
    p.add_argument("--ttft-requests", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="1 round of 3 s, 50 TTFT calls")
    p.add_argument("--strict", action="store_true", help="a missed target fails the exit status")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c]
    args.shapes = [s for s in str(args.shapes).split(",") if s]
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shapes {unknown}; choose from {sorted(SHAPES)}")
    if args.quick:
        args.rounds, args.duration, args.ttft_requests = 1, 3, 50
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bi.find_wrk()
    namespace = f"bench-gw-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="nvcf-lite-bench-gw-") as tmp:
        workdir = Path(tmp)
        server = bi.Server(workdir, "nvapi-" + uuid.uuid4().hex * 2, namespace, False)
        try:
            server.start()
            port = deploy_llm(server, 90)
            print(f"nvcf-lite on {server.url}; {IMAGE} on 127.0.0.1:{port}", flush=True)
            firsts = ttft(server, port, args.ttft_requests) if args.ttft_requests else None
            levels = table(args, server, port, workdir)
            ok, met = verdict(levels, firsts)
        finally:
            server.stop()
            bi.remove_containers(namespace)
    if not ok:
        print("FAILED: some requests failed (see ERRORS)")
    return 0 if ok and (met or not args.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
