"""Invocation rules without Docker: NVCF-POLL-SECONDS, header filtering, the container request
headers (§4.3), error wrapping (§4.4), version choice (§2.3.1) and partial-response order (§4.5)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from multidict import CIMultiDict

from nvcf_lite.domain.invocation_rules import (
    container_error,
    forwardable,
    poll_seconds,
    problem,
    status_header,
)
from nvcf_lite.domain.invocations import (
    MAX_UNREAD_PROGRESS,
    Invocations,
    Pending,
    Ticket,
    VersionInfo,
)
from nvcf_lite.errors import Forbidden, Invalid, NotFound
from nvcf_lite.models import (
    SCOPES,
    FunctionStatus,
    KeyResource,
    Outcome,
    Principal,
    RequestRecord,
    new_id,
)
from nvcf_lite.workers.forwarding import container_headers, instance_headers
from nvcf_lite.workers.instances import Instance

FID, VID = new_id(), new_id()


# -- NVCF-POLL-SECONDS (§2.3.3) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 60),
        ("", 60),
        ("  ", 60),
        ("5", 5),
        (" 7 ", 7),
        ("+9", 9),
        ("0", 1),
        ("-30", 1),
        ("3600", 3600),
    ],
)
def test_poll_seconds_values(value: str | None, expected: int) -> None:
    headers = {} if value is None else {"nvcf-poll-seconds": value}
    assert poll_seconds(headers, 60, 3600) == expected


@pytest.mark.parametrize("value", ["3601", "99999999999", "1.5", "abc", "1_0", "٣", "5s", "0x10"])
def test_bad_poll_seconds_are_400(value: str) -> None:
    with pytest.raises(Invalid) as caught:
        poll_seconds({"nvcf-poll-seconds": value}, 60, 3600)
    assert caught.value.status == 400
    assert "NVCF-POLL-SECONDS" in caught.value.detail


def test_poll_seconds_underscore_spelling_of_ngcsdk3() -> None:
    assert poll_seconds({"nvcf-poll_seconds": "300"}, 60, 3600) == 300
    # the dashed spelling wins when both are sent
    both = {"nvcf-poll-seconds": "4", "nvcf-poll_seconds": "300"}
    assert poll_seconds(both, 60, 3600) == 4
    with pytest.raises(Invalid):
        poll_seconds({"nvcf-poll_seconds": "4000"}, 60, 3600)


# -- headers: what the client may pass on (§2.3.1) ---------------------------------------------


def test_forwardable_drops_authorization_hop_by_hop_and_platform_headers() -> None:
    given = [
        ("Authorization", "Bearer nvapi-secret"),
        ("Connection", "keep-alive, X-Hop-Custom"),
        ("X-Hop-Custom", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authenticate", "x"),
        ("Proxy-Authorization", "Basic abc"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("Host", "example"),
        ("Content-Length", "10"),
        ("NVCF-REQID", "forged"),
        ("nvcf-function-id", "forged"),
        ("NVCF-POLL-SECONDS", "5"),
        ("NVCF-POLL_SECONDS", "5"),
        ("NVCF-INVOCATION-REGION", "forged"),
        ("X-Custom", "kept"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("x-custom", "second value"),
        ("NVCF-INPUT-ASSET-REFERENCES", "x"),
    ]
    kept = forwardable(given)
    assert kept == [
        ("X-Custom", "kept"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("x-custom", "second value"),
        ("NVCF-INPUT-ASSET-REFERENCES", "x"),
    ]


def _record(**overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": new_id(),
        "function_id": FID,
        "version_id": VID,
        "nca_id": "acct",
        "key_id": "k1",
        "method": "POST",
        "path": f"/v2/nvcf/pexec/functions/{FID}",
        "headers": [],
        "body": b"{}",
        "poll_seconds": 30,
        "mode": "pexec",
        "accepted_at": time.time(),
        **overrides,
    }
    return RequestRecord(**values)


def _instance() -> Instance:
    inst = Instance(
        instance_id=new_id(),
        deployment_id=new_id(),
        function_id=FID,
        version_id=VID,
        spec_id=new_id(),
        gpu="CPU",
        instance_type="CPU.x1",
        units=[],
    )
    inst.function_name = "echo"
    return inst


def _parsed(block: bytes) -> CIMultiDict[str]:
    """The header block as the container reads it (each line `Name: value`, CRLF-ended)."""
    assert block.endswith(b"\r\n") and b"\r\n\r\n" not in block
    headers: CIMultiDict[str] = CIMultiDict()
    for line in block.decode("latin-1").split("\r\n")[:-1]:
        name, sep, value = line.partition(": ")
        assert sep and name and "\n" not in value, line
        headers.add(name, value)
    return headers


async def test_container_headers_are_the_platform_set_plus_the_clients() -> None:
    rec = _record(
        headers=[("x-custom", "a"), ("x-custom", "b"), ("accept", "text/plain")],
        assets=["a1", "a2"],
        accepted_at=time.time() - 10,
    )
    loop = asyncio.get_running_loop()
    ticket = Ticket(record=rec, subject="apikey:k1", done=loop.create_future())
    headers = _parsed(
        container_headers(ticket, instance_headers(_instance(), 5242880), time.time())
    )
    rid = rec.request_id
    expected = {
        "NVCF-REQID": rid,
        "NVCF-SUB": "apikey:k1",
        "NVCF-NCAID": "acct",
        "NVCF-FUNCTION-NAME": "echo",
        "NVCF-FUNCTION-ID": FID,
        "NVCF-FUNCTION-VERSION-ID": VID,
        "NVCF-ASSET-DIR": f"/var/inf/inputAssets/{rid}",
        "NVCF-LARGE-OUTPUT-DIR": f"/var/inf/response/{rid}",
        "NVCF-MAX-RESPONSE-SIZE-BYTES": "5242880",
        "NVCF-INSTANCETYPE": "CPU.x1",
        "NVCF-FUNCTION-ASSET-IDS": "a1,a2",
        "Content-Type": "application/json",  # the client sent none
        "Accept": "text/plain",
    }
    for name, value in expected.items():
        assert headers[name] == value, name
    for name in ("NVCF-NSPECTID", "NVCF-BACKEND", "NVCF-REGION", "NVCF-ENV"):
        assert headers[name]
    assert headers["NVCF-INVOCATION-REGION"]
    assert headers.getall("x-custom") == ["a", "b"]  # repeated headers all reach the container
    assert 19 <= int(headers["nvcf-poll-seconds"]) <= 20  # what is left of the 30 s window
    assert headers["Accept-Encoding"] == "identity"


async def test_container_headers_keep_the_clients_content_type() -> None:
    rec = _record(headers=[("content-type", "text/plain"), ("accept-encoding", "gzip")])
    loop = asyncio.get_running_loop()
    ticket = Ticket(record=rec, subject="s", done=loop.create_future())
    headers = _parsed(container_headers(ticket, instance_headers(_instance(), 100), time.time()))
    assert headers.getall("Content-Type") == ["text/plain"]
    assert headers["Accept-Encoding"] == "gzip"
    assert "NVCF-FUNCTION-ASSET-IDS" not in headers


# -- statuses and error wrapping (§2.3.2, §4.4, §5.2) -----------------------------------------


def test_status_header() -> None:
    assert [status_header(s) for s in (200, 204, 302, 202, 400, 404, 500, 503)] == [
        "fulfilled",
        "fulfilled",
        "fulfilled",
        "in-progress",
        "errored",
        "errored",
        "errored",
        "errored",
    ]


def _doc(outcome: Outcome) -> dict[str, Any]:
    assert outcome.error
    assert outcome.headers == [("content-type", "application/problem+json")]
    doc: dict[str, Any] = json.loads(outcome.body)
    return doc


@pytest.mark.parametrize(
    ("status", "body", "kind", "title", "detail"),
    [
        (500, b'{"error": "kaboom"}', "internal-server-error", "Internal Server Error", "kaboom"),
        (400, b'{"error": "bad input"}', "bad-request", "Bad Request", "bad input"),
        (404, b"not json at all", "not-found", "Not Found", "Inference error"),
        (422, b'{"error": {"nested": 1}}', "unprocessable-entity", "Unprocessable Entity",
         "Inference error"),
        (418, b"", "im-a-teapot", "I'm a Teapot", "Inference error"),
        (599, b'{"error": "odd"}', "error", "Error", "odd"),
    ],
)  # fmt: skip
def test_container_errors_are_wrapped_as_problems(
    status: int, body: bytes, kind: str, title: str, detail: str
) -> None:
    rid = new_id()
    doc = _doc(container_error(status, body, f"/v2/nvcf/pexec/functions/{FID}", rid))
    assert doc == {
        "type": f"urn:inference-service:problem-details:{kind}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": f"/v2/nvcf/pexec/functions/{FID}",
        "requestId": rid,
    }


def test_worker_problem() -> None:
    outcome = problem(503, "urn:nvcf-worker-service:problem-details:x", "why", "/p", "r")
    assert outcome.status == 503
    assert _doc(outcome)["title"] == "Service Unavailable"


# -- choosing the version (§2.3.1) -------------------------------------------------------------


class NoDispatch:
    def submit(self, ticket: Ticket) -> None:
        raise AssertionError("not reached")

    def ticket(self, request_id: str) -> Ticket | None:
        return None

    def forget(self, request_id: str) -> None:
        pass

    def cancel(self, request_id: str, reason: str) -> None:
        pass

    def depth(self, version_id: str) -> int:
        return 0

    def position(self, request_id: str) -> int | None:
        return None

    def queued_for_function(self, function_id: str) -> int:
        return 0

    async def record(self, ticket: Ticket) -> None:
        pass  # before a 202: the row is not what these tests look at


def _invocations(versions: list[VersionInfo]) -> Invocations:
    async def versions_of(fid: str) -> list[VersionInfo]:
        return [v for v in versions if v.function_id == fid]

    return Invocations(
        store=None,  # type: ignore[arg-type]
        versions_of=versions_of,
        dispatch=NoDispatch(),
        default_poll=60,
        max_poll=3600,
        max_queue=10,
        new_request_id=new_id,
        release_request_id=lambda request_id: None,
    )


def _principal(scopes: tuple[str, ...] = SCOPES, resources: tuple[str, ...] = ()) -> Principal:
    res = tuple(KeyResource(type="function", id=r) for r in resources) or (
        KeyResource(type="account-functions", id="*"),
    )
    return Principal(key_id="k", nca_id="acct", scopes=frozenset(scopes), resources=res)


def _version(status: FunctionStatus, vid: str | None = None) -> VersionInfo:
    return VersionInfo(FID, vid or new_id(), "echo", status, nca_id="acct")


async def test_any_active_or_degrading_version_is_chosen_at_random() -> None:
    active, degrading = _version(FunctionStatus.ACTIVE), _version(FunctionStatus.DEGRADING)
    others = [_version(s) for s in (FunctionStatus.INACTIVE, FunctionStatus.DEPLOYING)]
    inv = _invocations([active, degrading, *others])
    chosen = {(await inv.choose(_principal(), FID, None)).version_id for _ in range(60)}
    assert chosen == {active.version_id, degrading.version_id}
    one = await inv.choose(_principal(), FID, degrading.version_id)
    assert one.version_id == degrading.version_id


@pytest.mark.parametrize(
    "status",
    [FunctionStatus.INACTIVE, FunctionStatus.DEPLOYING, FunctionStatus.ERROR],
)
async def test_versions_not_invocable_are_404(status: FunctionStatus) -> None:
    v = _version(status)
    inv = _invocations([v])
    for vid in (None, v.version_id):
        with pytest.raises(NotFound) as caught:
            await inv.choose(_principal(), FID, vid)
        assert "is not found" in caught.value.detail and FID in caught.value.detail
    with pytest.raises(NotFound):
        await inv.choose(_principal(), new_id(), None)


async def test_degraded_is_400() -> None:
    v = _version(FunctionStatus.DEGRADED)
    inv = _invocations([v])
    for vid in (None, v.version_id):
        with pytest.raises(Invalid) as caught:
            await inv.choose(_principal(), FID, vid)
        assert "DEGRADED" in caught.value.detail


async def test_choose_checks_scope_and_key_resources() -> None:
    v = _version(FunctionStatus.ACTIVE)
    inv = _invocations([v])
    with pytest.raises(Forbidden):
        await inv.choose(_principal(scopes=("list_functions",)), FID, None)
    with pytest.raises(Forbidden):
        await inv.choose(_principal(resources=(f"{new_id()}/*",)), FID, None)
    ok = await inv.choose(_principal(resources=(f"{FID}/{v.version_id}",)), FID, v.version_id)
    assert ok.version_id == v.version_id


# -- partial responses: in order, each once, the latest again when nothing is new (§4.5) -------


async def _ticket() -> Ticket:
    loop = asyncio.get_running_loop()
    return Ticket(record=_record(), subject="s", done=loop.create_future())


def _progress_of(result: Outcome | Pending) -> tuple[int, bytes] | None:
    assert isinstance(result, Pending)
    p = result.progress
    return None if p is None else (p.percent, p.body)


async def test_partial_responses_come_in_order_then_the_latest_repeats() -> None:
    inv = _invocations([])
    ticket = await _ticket()
    started = time.monotonic()
    assert _progress_of(await inv.wait(ticket, 1)) is None  # nothing yet: empty 202
    assert time.monotonic() - started >= 0.95
    ticket.add_progress(10, b'{"s":1}')
    ticket.add_progress(150, b'{"s":2}')  # clamped to 100
    started = time.monotonic()
    assert _progress_of(await inv.wait(ticket, 5)) == (10, b'{"s":1}')
    assert _progress_of(await inv.wait(ticket, 5)) == (100, b'{"s":2}')
    assert time.monotonic() - started < 0.5  # unread ones answer at once
    assert _progress_of(await inv.wait(ticket, 1)) == (100, b'{"s":2}')  # nothing new: again


async def test_a_new_partial_response_ends_a_long_poll_and_the_result_wins() -> None:
    inv = _invocations([])
    ticket = await _ticket()
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, ticket.add_progress, 50, b"{}")
    started = time.monotonic()
    assert _progress_of(await inv.wait(ticket, 10)) == (50, b"{}")
    assert time.monotonic() - started < 2
    ticket.add_progress(60, b"{}")
    ticket.done.set_result(Outcome(status=200, body=b"final"))
    result = await inv.wait(ticket, 10)
    assert isinstance(result, Outcome) and result.body == b"final"
    assert ticket.waiters == 0


async def test_unread_partial_responses_are_bounded() -> None:
    ticket = await _ticket()
    for i in range(MAX_UNREAD_PROGRESS + 10):
        ticket.add_progress(i % 100, str(i).encode())
    assert len(ticket.unread) == MAX_UNREAD_PROGRESS
    assert ticket.unread[0].body == b"10"


async def test_a_window_ending_while_the_outcome_is_recorded_answers_with_it() -> None:
    """The dispatcher deletes the row of a request it finishes undetached (the client gets the
    answer on its connection). A handler whose window ends during that write must not answer
    202: the client would poll for a row already gone (lost if the server died meanwhile)."""
    inv = _invocations([])
    ticket = await _ticket()
    loop = asyncio.get_running_loop()
    assert ticket.finishing() is False  # Dispatcher._finish began: not detached, writing
    loop.call_later(0.3, ticket.done.set_result, Outcome(status=200, body=b"late"))
    started = time.monotonic()
    result = await inv.wait(ticket, 0.05)
    assert isinstance(result, Outcome) and result.body == b"late"
    assert not ticket.detached
    assert time.monotonic() - started >= 0.25


async def test_a_client_header_of_a_platform_name_never_reaches_the_container() -> None:
    """The accept filters them already (`forwardable`); the block builder drops them again,
    so a record from an older queue cannot forge them either."""
    rec = _record(headers=[("NVCF-REQID", "forged"), ("Host", "evil"), ("x-ok", "1")])
    loop = asyncio.get_running_loop()
    ticket = Ticket(record=rec, subject="s", done=loop.create_future())
    headers = _parsed(container_headers(ticket, instance_headers(_instance(), 100), time.time()))
    assert headers.getall("NVCF-REQID") == [rec.request_id]
    assert "Host" not in headers and headers["x-ok"] == "1"
