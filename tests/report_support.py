"""Measured lines a test reports (fault counts, swarm timings): printed as they happen and again
in a `measured` section at the end of the run, so CI shows them when every test passes too
(pytest -q keeps a passing test's output to itself)."""

from __future__ import annotations

LINES: list[str] = []


def report(line: str) -> str:
    LINES.append(line)
    print(line, flush=True)
    return line
