"""Webhooks on a live `nvcf-lite serve` and the echo container, through the public API: a
request's final result is POSTed once, signed (checked with the README's snippet); a receiver
that fails first gets it again until it answers 2xx; a delivery pending at a SIGKILL, and a
request accepted but not finished at it, are delivered after the restart.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from fault_support import RECORDS, runs
from invocation_support import docker_env, live_echo
from server_support import ServerProcess, serving
from webhook_support import Post, Receiver, readme_verify

pytestmark = pytest.mark.docker

SECRET = "whsec-live-test"
QUICK_RETRIES = {
    "NVCF_LITE_WEBHOOKS__BACKOFF_INITIAL_S": "0.2",
    "NVCF_LITE_WEBHOOKS__BACKOFF_MAX_S": "0.5",
}


def deliveries(server: ServerProcess) -> dict[str, dict[str, Any]]:
    """The deliveries table by request id, as another process reads it."""
    conn = sqlite3.connect(
        f"{(server.data_dir / 'nvcf-lite.db').resolve().as_uri()}?mode=ro", uri=True
    )
    conn.row_factory = sqlite3.Row
    try:
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM webhook_deliveries")}
    finally:
        conn.close()


def invoke(server: ServerProcess, fid: str, body: Any, **headers: str) -> tuple[int, str, bytes]:
    status, got, data = server.call(
        "POST", f"/v2/nvcf/pexec/functions/{fid}", body, headers=dict(headers)
    )
    return status, got.get("nvcf-reqid", ""), data


def check_signed(post: Post, secret: str, request_id: str, fid: str) -> dict[str, Any]:
    assert readme_verify()(secret, post.headers, post.body), post.headers
    doc: dict[str, Any] = post.json()
    assert doc["requestId"] == request_id and doc["functionId"] == fid
    return doc


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_a_result_is_delivered_once_signed_and_again_after_the_receiver_failed(
    tmp_path: Path, ns: str, receiver: Receiver
) -> None:
    env = docker_env(ns, NVCF_LITE_WEBHOOKS__SECRET=SECRET, **QUICK_RETRIES)
    with serving(ServerProcess(tmp_path / "srv", env=env)) as server:
        fid, vid = live_echo(server.json)
        # 1. delivered once, with a valid signature, carrying the result the client got
        status, rid, data = invoke(server, fid, {"n": 1}, **{"NVCF-WEBHOOK-URL": receiver.url})
        assert status == 200, data
        [post] = wait_for(lambda: receiver.delivered(rid), what="the webhook POST")
        doc = check_signed(post, SECRET, rid, fid)
        assert doc["versionId"] == vid and doc["status"] == 200
        assert doc["nvcfStatus"] == "fulfilled" and doc["body"] == data.decode()
        wait_for(lambda: deliveries(server)[rid]["state"] == "delivered", what="row delivered")
        assert len(receiver.of(rid)) == 1  # once: nothing more after its 2xx
        # 2. a failure result too; the receiver fails twice first: three attempts, one id
        receiver.fail = 2
        status, rid2, data = invoke(
            server, fid, {"status": 503}, **{"NVCF-WEBHOOK-URL": receiver.url}
        )
        assert status == 503, data
        [post] = wait_for(lambda: receiver.delivered(rid2), what="the redelivered webhook")
        attempts = receiver.of(rid2)
        assert [p.status for p in attempts] == [500, 500, 204]
        assert len({p.headers["NVCF-Webhook-Id"] for p in attempts}) == 1
        assert len({p.body for p in attempts}) == 1  # the same bytes, signed per attempt
        doc = check_signed(post, SECRET, rid2, fid)
        assert doc["status"] == 503 and doc["nvcfStatus"] == "errored"
        wait_for(lambda: deliveries(server)[rid2]["state"] == "delivered", what="delivered")
        assert deliveries(server)[rid2]["attempts"] == 3
        _, _, metrics = server.call("GET", "/metrics")
        counted = f'nvcf_lite_webhook_attempts_total{{function_id="{fid}",result='
        assert f'{counted}"retry"}} 2' in metrics.decode()
        assert f'{counted}"delivered"}} 2' in metrics.decode()
        # 3. a target off the allow-list is refused before anything runs
        status, _, data = invoke(
            server, fid, {"n": 3}, **{"NVCF-WEBHOOK-URL": "http://10.9.8.7/hook"}
        )
        assert status == 422 and b"webhooks.allow" in data, data
        assert len(deliveries(server)) == 2


def test_deliveries_survive_a_sigkill(tmp_path: Path, ns: str, receiver: Receiver) -> None:
    """One delivery failing at the kill (its result recorded), one request still running at
    it: after the restart both are delivered, signed with the generated secret."""
    env = docker_env(ns, **QUICK_RETRIES)
    with serving(ServerProcess(tmp_path / "srv", env=env)) as server:
        fid, _ = live_echo(server.json)
        secret = (server.data_dir / "webhook.key").read_text().strip()
        receiver.down = True
        status, done_rid, _ = invoke(server, fid, {"n": 1}, **{"NVCF-WEBHOOK-URL": receiver.url})
        assert status == 200
        wait_for(lambda: len(receiver.of(done_rid)) >= 2, what="failed attempts before the kill")
        status, running_rid, _ = invoke(
            server,
            fid,
            {"n": 2, "delay": 3, "recordTo": RECORDS},
            **{"NVCF-WEBHOOK-URL": receiver.url, "NVCF-POLL-SECONDS": "1"},
        )
        assert status == 202
        wait_for(lambda: running_rid in runs(server), what="the slow request in its container")
        server.kill()
        assert deliveries(server)[done_rid]["state"] == "pending"
        assert running_rid not in deliveries(server)  # not ended: nothing to deliver yet
        failed_before = len(receiver.of(done_rid))
        receiver.down = False
        server.start()
        [first] = wait_for(lambda: receiver.delivered(done_rid), what="delivery after restart")
        check_signed(first, secret, done_rid, fid)
        assert len(receiver.of(done_rid)) == failed_before + 1
        [second] = wait_for(
            lambda: receiver.delivered(running_rid), 60, "the re-run request's delivery"
        )
        doc = check_signed(second, secret, running_rid, fid)
        assert doc["status"] == 200
        wait_for(
            lambda: {r["state"] for r in deliveries(server).values()} == {"delivered"},
            what="every delivery recorded as delivered",
        )
