"""Webhooks and idempotency keys without Docker: the target policy, the signature (checked
with the README's verification snippet, run as it is), the deliveries and keys on real SQLite
(written in the same transaction as a request's end, read back by another connection), the
sender's retries with backoff and its giving up, and the refusals of the accept path.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from webhook_support import readme_verify

from nvcf_lite.config import ConfigError, WebhooksConfig, load_config
from nvcf_lite.domain import webhooks
from nvcf_lite.domain.idempotency import IdempotencyKeys, check_key, fingerprint
from nvcf_lite.domain.invocations import Invocations, Ticket
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.webhooks import WebhookPolicy
from nvcf_lite.errors import Conflict, Forbidden, Invalid, Unprocessable
from nvcf_lite.models import SCOPES, KeyResource, Outcome, Principal, RequestRecord, new_id
from nvcf_lite.store.idempotency import IdempotencyRepo
from nvcf_lite.store.requests import RequestsRepo
from nvcf_lite.store.sqlite import Database
from nvcf_lite.store.webhooks import DeliveriesRepo, load_webhook_secret
from nvcf_lite.workers.webhooks import WebhookSender

SECRET = "whsec-test-0123456789"
LOOPBACK = WebhookPolicy(WebhooksConfig().allow)


# -- the policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "https://127.8.9.10/x?y=1",
        "http://[::1]:8080/",
        "http://localhost:1234/h",
        " http://127.0.0.1/trimmed ",
    ],
)
def test_loopback_targets_are_allowed_by_default(url: str) -> None:
    assert LOOPBACK.check(url) == url.strip()


@pytest.mark.parametrize(
    "url",
    ["http://10.1.2.3/hook", "http://192.168.0.1/", "http://example.com/hook", "http://[::2]/"],
)
def test_other_targets_are_422_naming_the_allow_list(url: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        LOOPBACK.check(url)
    assert "webhooks.allow" in str(caught.value) and "127.0.0.0/8" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "127.0.0.1:9000", "http:///nohost", "http://127.0.0.1:99999/"]
)
def test_malformed_targets_are_400(url: str) -> None:
    with pytest.raises(Invalid) as caught:
        LOOPBACK.check(url)
    assert "NVCF-WEBHOOK-URL" in str(caught.value)


def test_the_allow_list_is_config() -> None:
    policy = WebhookPolicy(["10.0.0.0/8"])
    assert policy.check("http://10.1.2.3/hook") == "http://10.1.2.3/hook"
    with pytest.raises(Unprocessable):
        policy.check("http://127.0.0.1/hook")
    config = load_config(None, {"NVCF_LITE_WEBHOOKS__ALLOW": '["10.0.0.0/8"]'})
    assert config.webhooks.allow == ["10.0.0.0/8"]
    with pytest.raises(ConfigError, match=r"webhooks\.allow"):
        load_config(None, {"NVCF_LITE_WEBHOOKS__ALLOW": '["not-a-network"]'})
    with pytest.raises(ConfigError, match="max_attempts"):
        load_config(None, {"NVCF_LITE_WEBHOOKS__MAX_ATTEMPTS": "0"})


# -- the signature and the README's check ----------------------------------------------------------


def test_the_readme_snippet_verifies_a_signed_delivery() -> None:
    verify = readme_verify()
    body = webhooks.payload("d1", "r1", "f1", "v1", Outcome(status=200, body=b'{"a":1}'), 1.0)
    now = int(time.time())
    headers = webhooks.signed_headers(SECRET, "d1", "r1", now, body)
    assert verify(SECRET, headers, body)
    assert not verify("another-secret", headers, body)
    assert not verify(SECRET, headers, body + b" ")  # a changed body
    stale = webhooks.signed_headers(SECRET, "d1", "r1", now - 3600, body)
    assert not verify(SECRET, stale, body)  # replayed an hour later
    assert not verify(SECRET, {}, body)
    doc = json.loads(body)
    assert doc["requestId"] == "r1" and doc["status"] == 200 and doc["nvcfStatus"] == "fulfilled"
    assert doc["body"] == '{"a":1}' and doc["bodyEncoding"] == "utf-8"


def test_binary_results_are_base64_and_failures_errored() -> None:
    body = webhooks.payload("d", "r", "f", "v", Outcome(status=500, body=b"\xff\x00"), 2.0)
    doc = json.loads(body)
    assert doc["bodyEncoding"] == "base64" and doc["body"] == "/wA="
    assert doc["nvcfStatus"] == "errored"


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [webhooks.backoff(n, 1.0, 5.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_the_generated_secret_is_made_once_and_private(tmp_path: Path) -> None:
    first = load_webhook_secret(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert load_webhook_secret(tmp_path) == first
    assert (tmp_path / "webhook.key").stat().st_mode & 0o777 == 0o600


# -- deliveries and keys on real SQLite ---------------------------------------------------------


@pytest.fixture
async def store(db: Database) -> AsyncIterator[RequestsRepo]:
    s = RequestsRepo(db, idempotency_ttl_s=60.0)
    s.start()
    yield s
    await s.close()


def record(**overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": new_id(),
        "function_id": new_id(),
        "version_id": new_id(),
        "nca_id": "acct",
        "key_id": "k1",
        "method": "POST",
        "path": "/echo",
        "headers": [],
        "body": b"{}",
        "poll_seconds": 5,
        "mode": "pexec",
        "accepted_at": time.time(),
        **overrides,
    }
    return RequestRecord(**values)


def rows(db: Database, table: str) -> list[dict[str, Any]]:
    """The rows as another process sees them."""
    conn = sqlite3.connect(db.path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
    finally:
        conn.close()


async def test_a_plain_request_writes_no_key_and_no_delivery(
    db: Database, store: RequestsRepo
) -> None:
    rec = record()
    await store.accept(rec)
    await store.finish(rec.request_id, Outcome(status=200), keep=False, record=rec)
    assert rows(db, "idempotency_keys") == [] and rows(db, "webhook_deliveries") == []


async def test_the_key_and_the_delivery_are_written_with_the_accept_and_the_end(
    db: Database, store: RequestsRepo
) -> None:
    rec = record(webhook_url="http://127.0.0.1:1/h", idempotency_key="k-1", fingerprint="fp")
    await store.accept(rec)
    [key] = rows(db, "idempotency_keys")
    assert (key["idem_key"], key["request_id"], key["result"]) == ("k-1", rec.request_id, None)
    assert key["expires_at"] == pytest.approx(rec.accepted_at + 60.0)
    assert rows(db, "webhook_deliveries") == []  # only once it ended
    outcome = Outcome(status=200, body=b"done")
    await store.finish(rec.request_id, outcome, keep=False, record=rec)
    found = await IdempotencyRepo(db).get("acct", "k-1", time.time())
    assert found is not None and found.outcome == outcome and found.fingerprint == "fp"
    assert await IdempotencyRepo(db).get("other-account", "k-1", time.time()) is None
    assert await IdempotencyRepo(db).get("acct", "k-1", time.time() + 61) is None  # expired
    [delivery] = rows(db, "webhook_deliveries")
    assert delivery["request_id"] == rec.request_id and delivery["state"] == "pending"
    assert await IdempotencyRepo(db).expire(time.time() + 61) == 1


async def test_a_keyed_request_that_was_leased_is_failed_not_requeued_after_a_crash(
    store: RequestsRepo,
) -> None:
    keyed, plain = record(idempotency_key="k"), record()
    for rec in (keyed, plain):
        await store.accept(rec)
        fut = store.lease(rec.request_id, time.time() + 60, wait=True)
        assert fut is not None
        await fut
    requeued, failed = await store.expire_leases(float("inf"), max_attempts=3)
    assert (requeued, failed) == (1, [keyed.request_id])


class Receiver:
    """An injected `post`: answers the statuses it is given, in turn, and keeps each POST."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.posts: list[tuple[str, dict[str, str], bytes]] = []

    async def __call__(
        self, url: str, headers: dict[str, str], body: bytes, timeout_s: float
    ) -> int:
        self.posts.append((url, headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 0:
            raise ConnectionRefusedError("nobody listens")
        return status


async def ended_with_webhook(store: RequestsRepo) -> RequestRecord:
    rec = record(webhook_url="http://127.0.0.1:9/hook")
    await store.accept(rec)
    await store.finish(rec.request_id, Outcome(status=200, body=b"ok"), keep=True, record=rec)
    return rec


async def test_the_sender_retries_with_backoff_and_delivers_once(
    db: Database, store: RequestsRepo
) -> None:
    rec = await ended_with_webhook(store)
    receiver = Receiver(500, 0)  # an error answer, then no answer, then 200
    clock = [time.time()]
    settings = WebhooksConfig(backoff_initial_s=10.0, backoff_max_s=15.0)
    metrics = Metrics()
    sender = WebhookSender(
        DeliveriesRepo(db), SECRET, settings, post=receiver, clock=lambda: clock[0], metrics=metrics
    )
    assert await sender.tick() == 0
    [row] = rows(db, "webhook_deliveries")
    assert row["attempts"] == 1 and row["last_error"] == "answered HTTP 500"
    assert row["next_at"] == pytest.approx(clock[0] + 10.0)
    assert await sender.tick() == 0 and len(receiver.posts) == 1  # not due yet
    clock[0] += 10.0
    assert await sender.tick() == 0
    [row] = rows(db, "webhook_deliveries")
    assert row["attempts"] == 2 and "ConnectionRefusedError" in row["last_error"]
    assert row["next_at"] == pytest.approx(clock[0] + 15.0)  # doubled, capped
    clock[0] += 15.0
    assert await sender.tick() == 1
    assert await sender.tick() == 0 and len(receiver.posts) == 3  # delivered: never again
    [row] = rows(db, "webhook_deliveries")
    assert row["state"] == "delivered" and row["attempts"] == 3
    ids = {headers[webhooks.ID_HEADER] for _, headers, _ in receiver.posts}
    assert ids == {row["delivery_id"]}  # the same id on every attempt: receivers dedupe on it
    verify = readme_verify()
    bodies = {body for _, _, body in receiver.posts}
    assert len(bodies) == 1  # the same bytes each time, signed at each attempt's time
    for url, headers, body in receiver.posts:
        assert url == rec.webhook_url and headers["NVCF-REQID"] == rec.request_id
        assert json.loads(body)["requestId"] == rec.request_id
        assert verify(SECRET, headers, body)
    stamps = [int(headers[webhooks.TIMESTAMP_HEADER]) for _, headers, _ in receiver.posts]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] == 25
    text = metrics.render()
    fid = rec.function_id
    assert f'nvcf_lite_webhook_attempts_total{{function_id="{fid}",result="retry"}} 2' in text
    assert f'nvcf_lite_webhook_attempts_total{{function_id="{fid}",result="delivered"}} 1' in text
    assert await DeliveriesRepo(db).next_due() is None


async def test_the_sender_gives_up_after_max_attempts(db: Database, store: RequestsRepo) -> None:
    await ended_with_webhook(store)
    receiver = Receiver(503, 503)
    settings = WebhooksConfig(max_attempts=2, backoff_initial_s=0.001)
    sender = WebhookSender(DeliveriesRepo(db), SECRET, settings, post=receiver)
    await sender.tick()
    await asyncio.sleep(0.01)
    await sender.tick()
    [row] = rows(db, "webhook_deliveries")
    assert row["state"] == "failed" and row["attempts"] == 2
    assert row["last_error"] == "answered HTTP 503"
    await sender.tick()
    assert len(receiver.posts) == 2


# -- the accept path's refusals -------------------------------------------------------------------


class NoDispatch:
    def ticket(self, request_id: str) -> None:
        return None


ALL_FUNCTIONS = (KeyResource(type="account-functions", id="*"),)
PRINCIPAL = Principal(key_id="k1", nca_id="acct", scopes=frozenset(SCOPES), resources=ALL_FUNCTIONS)


def invocations(store: RequestsRepo, db: Database) -> Invocations:
    async def no_versions(fid: str) -> list[Any]:
        return []

    async def nothing_stored(rid: str) -> None:
        return None

    keys = IdempotencyKeys(IdempotencyRepo(db), NoDispatch().ticket, nothing_stored)
    return Invocations(
        store,
        no_versions,
        NoDispatch(),  # type: ignore[arg-type]
        default_poll=1,
        max_poll=10,
        max_queue=10,
        new_request_id=new_id,
        release_request_id=lambda rid: None,
        webhooks=LOOPBACK,
        keys=keys,
    )


async def call(inv: Invocations, headers: list[tuple[str, str]], mode: str = "pexec") -> None:
    await inv.submit(
        PRINCIPAL,
        new_id(),
        None,
        method="POST",
        path="/p",
        headers=headers,
        body=b"{}",
        mode=mode,
        poll=1,
    )


async def test_bad_headers_are_refused_before_anything_is_stored(
    db: Database, store: RequestsRepo
) -> None:
    inv = invocations(store, db)
    with pytest.raises(Unprocessable):
        await call(inv, [("NVCF-WEBHOOK-URL", "http://10.0.0.1/h")])
    with pytest.raises(Invalid, match="NVCF-WEBHOOK-URL"):
        await call(inv, [("nvcf-webhook-url", "not a url")])
    with pytest.raises(Invalid, match="Idempotency-Key must be"):
        await call(inv, [("Idempotency-Key", "x" * 256)])
    with pytest.raises(Invalid, match="streamed or path-preserving"):
        await call(inv, [("Idempotency-Key", "k")], mode="stream")
    assert rows(db, "requests") == [] and rows(db, "idempotency_keys") == []


async def test_a_key_reused_for_another_body_is_409(db: Database, store: RequestsRepo) -> None:
    rec = record(idempotency_key="k", fingerprint=fingerprint("f", None, "/p", b"one"))
    await store.accept(rec)
    keys = IdempotencyKeys(IdempotencyRepo(db), NoDispatch().ticket, lambda rid: asyncio.sleep(0))

    async def never() -> Any:
        raise AssertionError("a key in use must not accept another request")

    with pytest.raises(Conflict, match="different function, path or body"):
        await keys.submit(PRINCIPAL, "k", fingerprint("f", None, "/p", b"two"), never)
    assert check_key("order-1234") == "order-1234"


async def test_concurrent_retries_of_one_key_accept_one_request(
    db: Database, store: RequestsRepo
) -> None:
    live: dict[str, Ticket] = {}
    accepted: list[str] = []

    async def stored(rid: str) -> None:
        return None

    keys = IdempotencyKeys(IdempotencyRepo(db), live.get, stored)
    print_ = fingerprint("f", None, "/p", b"{}")

    async def accept() -> Ticket:
        rec = record(idempotency_key="same", fingerprint=print_)
        accepted.append(rec.request_id)
        ticket = Ticket(record=rec, subject="s", done=asyncio.get_running_loop().create_future())
        live[rec.request_id] = ticket
        await asyncio.sleep(0.05)  # the others arrive while this accept commits
        await store.accept(rec)
        return ticket

    tickets = await asyncio.gather(
        *(keys.submit(PRINCIPAL, "same", print_, accept) for _ in range(5))
    )
    assert len(accepted) == 1
    assert {t.request_id for t in tickets} == set(accepted)
    other = Principal(
        key_id="k2", nca_id="other", scopes=frozenset(SCOPES), resources=ALL_FUNCTIONS
    )
    await keys.submit(other, "same", print_, accept)  # keys are per account
    assert len(accepted) == 2


async def test_a_target_the_allow_list_no_longer_covers_is_failed_unsent(
    db: Database, store: RequestsRepo
) -> None:
    await ended_with_webhook(store)  # accepted while loopback was allowed
    receiver = Receiver()
    settings = WebhooksConfig(allow=["10.0.0.0/8"])  # then the config changed
    await WebhookSender(DeliveriesRepo(db), SECRET, settings, post=receiver).tick()
    [row] = rows(db, "webhook_deliveries")
    assert row["state"] == "failed" and "is not allowed" in row["last_error"]
    assert receiver.posts == []


async def test_a_retry_needs_a_key_that_still_reaches_the_function(
    db: Database, store: RequestsRepo
) -> None:
    rec = record(idempotency_key="k", fingerprint="fp")
    await store.accept(rec)
    await store.finish(rec.request_id, Outcome(status=200, body=b"r"), keep=False, record=rec)

    async def stored(rid: str) -> None:
        return None

    async def never() -> Any:
        raise AssertionError("a used key must not accept another request")

    keys = IdempotencyKeys(IdempotencyRepo(db), NoDispatch().ticket, stored)

    def key(*resources: KeyResource) -> Principal:
        return Principal(key_id="k9", nca_id="acct", scopes=frozenset(SCOPES), resources=resources)

    limited = key(KeyResource(type="function", id=new_id()))  # limited to another function
    with pytest.raises(Forbidden):
        await keys.submit(limited, "k", "fp", never)
    no_scope = Principal(key_id="k8", nca_id="acct", scopes=frozenset(), resources=ALL_FUNCTIONS)
    with pytest.raises(Forbidden, match="invoke_function"):
        await keys.submit(no_scope, "k", "fp", never)
    for ok in (
        key(KeyResource(type="function", id=rec.function_id)),
        key(KeyResource(type="authorized-functions", id="*")),  # shared with its account
        PRINCIPAL,
    ):
        ticket = await keys.submit(ok, "k", "fp", never)
        assert ticket.request_id == rec.request_id and ticket.done.result().body == b"r"
