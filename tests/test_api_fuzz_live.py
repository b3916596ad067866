"""Schema-driven fuzzing of every endpoint (scripts/fuzz_api.py, schemathesis against the served
OpenAPI document) finds no 500, no hang and no answer the document does not name: a bounded
run here, the longer one by running the script itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_api.py"


def test_a_bounded_fuzz_run_over_every_operation_finds_nothing() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--examples", "3", "--seed", "20261203"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "Coverage" in out and "Fuzzing" in out and "Stateful" in out, out[-3000:]
    assert "errors logged: 0" in out and "server alive: True" in out, out[-3000:]
