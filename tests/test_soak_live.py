"""The soak, shortened: scripts/bench_soak.py for SOAK_SECONDS of mixed traffic (sync and async
invocations, status polls, SSE, asset uploads, deploy/undeploy churn, key revocations) against
a live `nvcf-lite serve` (its own process; the client is the script's), and its bounds:

* no 5xx and no answer outside what each kind expects (200, 202, and 401 for a revoked key);
  no client-side error (reset, timeout), no async request lost, no traceback in the log;
* every kind of traffic ran;
* the server's RSS grew at most RSS_GROWTH_MIB and its open file descriptors at most
  FD_GROWTH from the start (after a 5 s warm-up) to the end.

The figures are printed (`pytest -s`) for the closing note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_soak.py"
SOAK_SECONDS = 60
RSS_GROWTH_MIB = 32.0  # measured: +2 MiB over 30-60 s
FD_GROWTH = 16  # measured: +0
KINDS = (
    "sync 200",
    "async 202",
    "status-poll 200",
    "sse 200",
    "asset-upload 200",
    "deploy 200",
    "undeploy 200",
    "churn-invoke 200",
    "key-invoke 200",
    "revoked-key-invoke 401",
)


def test_a_one_minute_soak_stays_within_its_bounds(tmp_path: Path, dock: object) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", str(SOAK_SECONDS), "--json", str(out)],
        env={k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")},
        capture_output=True,
        text=True,
        timeout=SOAK_SECONDS + 180,
        check=False,
    )
    print(run.stdout)
    assert run.returncode == 0, run.stderr[-6000:]
    figures = json.loads(out.read_text())
    assert figures["status_5xx"] == 0, figures["unexpected_samples"]
    assert figures["unexpected"] == 0, figures["unexpected_samples"]
    assert figures["lost"] == 0
    assert figures["client_errors"] == {}
    assert figures["server_log_tracebacks"] == 0
    missing = [kind for kind in KINDS if not figures["by_kind"].get(kind)]
    assert not missing, (missing, figures["by_kind"])
    assert figures["rss_growth_mib"] <= RSS_GROWTH_MIB, (figures["start"], figures["end"])
    assert figures["fd_growth"] <= FD_GROWTH, (figures["start"], figures["end"])
    print(
        f"SOAK: seconds={figures['seconds']} requests={figures['requests']}"
        f" rps={figures['throughput_rps']} 5xx=0 lost=0"
        f" rss_mib={figures['start']['rss_mib']:.1f}->{figures['end']['rss_mib']:.1f}"
        f" fds={figures['start']['fds']}->{figures['end']['fds']}"
    )
