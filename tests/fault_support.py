"""Helpers for the fault tests (tests/test_faults_*): many invocations at once over aiohttp
(the client runs in the test's process, the server in its own), collecting each accepted
request until it ends, the queue's invariants read from the database file opened read-only,
and the one-line `FAULT <name>: key=value ...` summary each test prints.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from report_support import report
from server_support import ServerProcess

RECORDS = "/var/inf/records/runs.log"  # the echo container appends each NVCF-REQID it gets here
STATES = {"queued", "leased", "done", "failed"}


@dataclass
class Answer:
    status: int
    request_id: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def summary(name: str, **counts: Any) -> str:
    """Print (and return) the test's one-line summary, quoted in the issue's closing note."""
    return report(f"FAULT {name}: " + " ".join(f"{k}={v}" for k, v in counts.items()))


def runs(server: ServerProcess) -> Counter[str]:
    """How often each request id reached a container (the echo image's `recordTo` file)."""
    path = server.data_dir / "inf" / "records" / "runs.log"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def _headers(server: ServerProcess, poll: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}", "NVCF-POLL-SECONDS": str(poll)}


async def _post(
    session: aiohttp.ClientSession, server: ServerProcess, path: str, body: Any, poll: int
) -> Answer:
    async with session.post(
        f"{server.url}{path}", json=body, headers=_headers(server, poll), allow_redirects=False
    ) as resp:
        data = await resp.read()
        headers = {k.lower(): v for k, v in resp.headers.items()}
        return Answer(resp.status, headers.get("nvcf-reqid", ""), data, headers)


async def _invoke_all(
    server: ServerProcess, path: str, bodies: Sequence[Any], poll: int, concurrency: int
) -> list[Answer | BaseException]:
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(body: Any) -> Answer:
            async with gate:
                return await _post(session, server, path, body, poll)

        return await asyncio.gather(*(one(b) for b in bodies), return_exceptions=True)


def invoke_all(
    server: ServerProcess, path: str, bodies: Sequence[Any], poll: int = 1, concurrency: int = 200
) -> list[Answer | BaseException]:
    """POST every body to `path` at once (`concurrency` connections); each answer, or the
    exception a request raised (a connection reset by a kill)."""
    return asyncio.run(_invoke_all(server, path, bodies, poll, concurrency))


async def _collect(
    server: ServerProcess, ids: Iterable[str], deadline_s: float, concurrency: int
) -> dict[str, Answer]:
    gate = asyncio.Semaphore(concurrency)
    end = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=max(1, concurrency))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(rid: str) -> Answer:
            async with gate:
                while True:
                    async with session.get(
                        f"{server.url}/v2/nvcf/pexec/status/{rid}", headers=_headers(server, 10)
                    ) as resp:
                        answer = Answer(resp.status, rid, await resp.read())
                    if answer.status != 202 or time.monotonic() > end:
                        return answer

        answers = await asyncio.gather(*(one(rid) for rid in ids))
    return {a.request_id: a for a in answers}


def collect(
    server: ServerProcess, ids: Iterable[str], deadline_s: float = 120
) -> dict[str, Answer]:
    """Poll each request's status until it is no longer 202 (or the deadline passes), every
    one at once as its own client would: polled a few at a time, the rest would go 10 s
    without a poll and the server would cancel them as abandoned (spec §2.3.4), which is
    what a slow CI machine did to 139 of 1004 after a restart."""
    wanted = list(ids)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < len(wanted) + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, len(wanted) + 256), hard))
    return asyncio.run(_collect(server, wanted, deadline_s, len(wanted)))


@dataclass
class QueueState:
    """The requests table as a read-only connection sees it."""

    integrity: str
    states: dict[str, str]  # request id -> state
    duplicates: int  # request ids present more than once
    leased_alive: int  # leases whose holder is expected dead (checked after a kill)


def read_queue(db_path: Path) -> QueueState:
    """integrity_check and the rows of the requests table, without writing to the file."""
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        integrity = ", ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        rows = conn.execute("SELECT request_id, state FROM requests").fetchall()
        dup = conn.execute(
            "SELECT count(*) FROM (SELECT request_id FROM requests GROUP BY request_id"
            " HAVING count(*) > 1)"
        ).fetchone()[0]
        leased = conn.execute("SELECT count(*) FROM requests WHERE state = 'leased'").fetchone()
    finally:
        conn.close()
    states = {str(rid): str(state) for rid, state in rows}
    return QueueState(integrity, states, int(dup), int(leased[0]))


def check_queue(db_path: Path, accepted: Iterable[str]) -> QueueState:
    """The queue invariants: the file passes integrity_check, every id in `accepted` (answered
    202, so its row must outlive any crash) is present once in a legal state."""
    queue = read_queue(db_path)
    assert queue.integrity == "ok", queue.integrity
    assert queue.duplicates == 0
    assert set(queue.states.values()) <= STATES, Counter(queue.states.values())
    missing = [rid for rid in accepted if rid not in queue.states]
    assert not missing, f"{len(missing)} accepted requests have no row: {missing[:5]}"
    return queue
