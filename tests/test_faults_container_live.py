"""A function container killed mid-request, on a live `nvcf-lite serve` and the echo image.

The echo container exits at once (code 7, no answer) on a `crash` request while others run
on it and more wait in the queue. The crashing request, and any other the dying process was
answering, ends with the worker's 500 `urn:inference-connection:...` problem ("Inference
connection error while making inference request", spec §4.4, §5.2): it reached the container,
so it is not run again. The instance that lost the connection gets no more requests until its
health check answers again (a refused connection is retried on another instance), so the
queued requests all complete on the other one. None hangs: each
one's status answers within the deadline. The instance is replaced, and the version serves
again. The summary line `FAULT container-killed: ...` counts each outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from fault_support import RECORDS, Answer, collect, invoke_all, runs, summary
from invocation_support import docker_env, live_echo
from server_support import ServerProcess, serving

from nvcf_lite.errors import CONNECTION_ERROR

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    with serving(ServerProcess(tmp_path / "srv", env=docker_env(ns))) as proc:
        yield proc


def ready_instances(server: ServerProcess, fid: str, vid: str) -> dict[str, str]:
    d = server.json("GET", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")["deployment"]
    return {i["instanceId"]: i["containerId"] for i in d["instances"] if i["state"] == "ready"}


def test_a_container_killed_mid_request_fails_it_clearly_and_the_rest_complete(
    server: ServerProcess,
) -> None:
    fid, vid = live_echo(server.json, maxRequestConcurrency=3, minInstances=2, maxInstances=2)
    path = f"/v2/nvcf/pexec/functions/{fid}"
    before = wait_for(lambda: (r := ready_instances(server, fid, vid)) and len(r) == 2 and r)
    slow = [{"n": i, "delay": 1.0, "recordTo": RECORDS} for i in range(5)]
    crash = {"n": "crash", "crash": True, "recordTo": RECORDS}
    queued = [{"n": 100 + i, "recordTo": RECORDS} for i in range(40)]

    def send(bodies: list[dict[str, Any]]) -> list[Answer | BaseException]:
        return invoke_all(server, path, bodies, poll=1, concurrency=50)

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(send, slow)
        wait_for(lambda: len(runs(server)) >= 5, 10, "the slow requests running")
        crashed = pool.submit(send, [crash])
        rest = pool.submit(send, queued)
        answers = [*first.result(), *crashed.result(), *rest.result()]
    bodies = [*slow, crash, *queued]
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    accepted = {
        a.request_id: b for a, b in zip(answers, bodies, strict=True) if isinstance(a, Answer)
    }
    assert len(accepted) == len(bodies)
    pending = [a.request_id for a in answers if isinstance(a, Answer) and a.status == 202]
    ended = {a.request_id: a for a in answers if isinstance(a, Answer) and a.status != 202}
    ended.update(collect(server, pending, deadline_s=60))
    hung = [rid for rid, a in ended.items() if a.status == 202]
    assert not hung, f"{len(hung)} requests still pending"

    outcomes: Counter[str] = Counter()
    crash_id = next(rid for rid, b in accepted.items() if b["n"] == "crash")
    for rid, answer in ended.items():
        body = accepted[rid]
        if answer.status == 200:
            assert answer.json()["body"]["n"] == body["n"]
            outcomes["ok"] += 1
            continue
        assert answer.status == 500, (answer.status, answer.body[:300])
        problem = answer.json()
        assert problem["type"] == CONNECTION_ERROR, problem
        assert "Inference connection error" in problem["detail"], problem
        assert problem["requestId"] == rid
        # the crash, the slow ones the dying process was answering, and any sent to it in the
        # moment before its port closed (docker-proxy accepted, then reset)
        kind = "crash" if body["n"] == "crash" else "slow" if body.get("delay") else "queued"
        outcomes[f"connection_error_{kind}"] += 1
    assert ended[crash_id].status == 500
    # the instance that lost a connection takes no more requests until its health check
    # answers: the queued ones all ran on the other (they were lost to 500s before)
    assert outcomes["connection_error_queued"] == 0, outcomes
    counts = runs(server)
    assert counts[crash_id] == 1  # reached the container once, never retried
    # a failed one ran at most once (one cut by the reset may never have reached the handler)
    assert all(counts[rid] <= 1 for rid, a in ended.items() if a.status == 500)
    assert all(counts[rid] == 1 for rid, a in ended.items() if a.status == 200)

    # the dead instance is replaced and the version serves again
    after = wait_for(
        lambda: (r := ready_instances(server, fid, vid)) and len(r) == 2 and r != before and r,
        60,
        "the killed instance replaced",
    )
    again = invoke_all(server, path, [{"n": i} for i in range(10)], poll=30)
    assert [getattr(a, "status", a) for a in again] == [200] * 10
    summary(
        "container-killed",
        accepted=len(accepted),
        terminal=len(ended),
        hung=len(hung),
        lost=len(accepted) - len(ended),
        ok=outcomes["ok"],
        connection_error_crash=outcomes["connection_error_crash"],
        connection_error_slow=outcomes["connection_error_slow"],
        connection_error_queued=outcomes["connection_error_queued"],
        retried_after_reaching_container=0,
        replaced_instances=len(set(before) - set(after)),
    )
