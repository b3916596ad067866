"""Idempotency keys on a live `nvcf-lite serve` and the echo container, through the public
API, each run of the function counted by the container (`recordTo`): a retry with the same key
gets the same request id and result and never runs it again, synchronously (on the fast path
and the framework's route), after a 202 and a poll, after its first client left, and across a
SIGKILL between accept and completion (one request still queued at the kill, one in its
container); the same key with another body is 409.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from fault_support import RECORDS, runs
from invocation_support import docker_env, live_echo
from server_support import ServerProcess, serving

pytestmark = pytest.mark.docker


def invoke(
    server: ServerProcess,
    fid: str,
    body: Any,
    key: str | None,
    poll: int = 30,
    family: str = "/v2/nvcf",
) -> tuple[int, str, bytes]:
    headers = {"NVCF-POLL-SECONDS": str(poll), **({"Idempotency-Key": key} if key else {})}
    status, got, data = server.call(
        "POST", f"{family}/pexec/functions/{fid}", body, headers=headers
    )
    return status, got.get("nvcf-reqid", ""), data


def until_done(server: ServerProcess, rid: str) -> tuple[int, bytes]:
    """Poll the request's status until it is no longer 202."""
    while True:
        status, _, data = server.call(
            "GET", f"/v2/nvcf/pexec/status/{rid}", headers={"NVCF-POLL-SECONDS": "10"}
        )
        if status != 202:
            return status, data


def echoed(data: bytes) -> Any:
    return json.loads(data)["body"]["n"]


def test_retries_with_a_key_get_the_same_request_and_run_it_once(tmp_path: Path, ns: str) -> None:
    with serving(ServerProcess(tmp_path / "srv", env=docker_env(ns))) as server:
        fid, _ = live_echo(server.json)
        body = {"n": 1, "recordTo": RECORDS}
        # synchronous: the same id and body, one run
        status, rid, first = invoke(server, fid, body, "key-sync")
        assert status == 200, first
        for family in ("/v2/nvcf", "/v2/orgs/local/nvcf"):  # the fast path, the framework's
            again = invoke(server, fid, body, "key-sync", family=family)
            assert again == (200, rid, first)
        # without a key the same body is a new request (the baseline)
        status, plain, _ = invoke(server, fid, body, None)
        assert status == 200 and plain != rid
        # the same key with another body: 409, nothing runs
        status, _, data = invoke(server, fid, {"n": 2, "recordTo": RECORDS}, "key-sync")
        assert status == 409, data
        problem = json.loads(data)
        assert problem["status"] == 409 and rid in problem["detail"]
        # 202 + poll: a retry while it runs is the same request; after it ended, its result
        slow = {"n": 3, "delay": 2, "recordTo": RECORDS}
        status, slow_rid, _ = invoke(server, fid, slow, "key-slow", poll=1)
        assert status == 202 and slow_rid
        status, again_rid, _ = invoke(server, fid, slow, "key-slow", poll=1)
        assert again_rid == slow_rid and status in (200, 202)
        status, polled = until_done(server, slow_rid)
        assert status == 200 and echoed(polled) == 3
        status, again_rid, data = invoke(server, fid, slow, "key-slow", poll=1)
        assert (status, again_rid, echoed(data)) == (200, slow_rid, 3)
        # a client that leaves before its answer does not cancel a keyed request: its retry
        # gets the result of the one run
        gone = {"n": 4, "delay": 2, "recordTo": RECORDS}
        with pytest.raises(OSError):
            server.call(
                "POST",
                f"/v2/nvcf/pexec/functions/{fid}",
                gone,
                headers={"Idempotency-Key": "key-gone"},
                timeout_s=0.5,
            )
        status, gone_rid, data = invoke(server, fid, gone, "key-gone")
        assert (status, echoed(data)) == (200, 4), data
        counts = wait_for(lambda: runs(server) if len(runs(server)) >= 4 else None, what="runs")
        assert counts == {rid: 1, plain: 1, slow_rid: 1, gone_rid: 1}


def test_keys_hold_across_a_sigkill_between_accept_and_completion(tmp_path: Path, ns: str) -> None:
    """One slot: a keyed request in its container at the kill, a keyed one queued behind it.
    After the restart the queued one runs once and its retry gets its result; the running one
    is not sent again (it may have run): it ends with a problem saying so, which its retry
    gets, under the same request id."""
    with serving(ServerProcess(tmp_path / "srv", env=docker_env(ns))) as server:
        fid, _ = live_echo(server.json, maxRequestConcurrency=1)
        running = {"n": 1, "delay": 3, "recordTo": RECORDS}
        queued = {"n": 2, "recordTo": RECORDS}
        status, running_rid, _ = invoke(server, fid, running, "key-running", poll=1)
        assert status == 202
        wait_for(lambda: running_rid in runs(server), what="the first in its container")
        status, queued_rid, _ = invoke(server, fid, queued, "key-queued", poll=1)
        assert status == 202
        server.kill()
        server.start()
        status, rid, data = invoke(server, fid, queued, "key-queued")
        assert (status, rid, echoed(data)) == (200, queued_rid, 2)
        assert invoke(server, fid, queued, "key-queued") == (200, queued_rid, data)
        status, rid, data = invoke(server, fid, running, "key-running")
        assert (status, rid) == (500, running_rid), data
        assert "Idempotency-Key" in json.loads(data)["detail"]
        assert invoke(server, fid, running, "key-running")[:2] == (500, running_rid)
        counts = wait_for(lambda: runs(server) if len(runs(server)) >= 2 else None, what="runs")
        assert counts == {running_rid: 1, queued_rid: 1}
