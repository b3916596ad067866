"""The gateway's rules without containers: container paths from llmConfig.uris, token limits
and their windows, usage found in SSE streams, queue priority between accounts, and the OpenAI
error shape on the /v1 paths of the app (the Docker tests: test_gateway_docker.py)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest
from conftest import bearer
from litestar.testing import TestClient

from nvcf_lite.domain.gateway import Gateway, container_path
from nvcf_lite.domain.invocations import Ticket, priority_of
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.token_limits import (
    BodyUsage,
    TokenLimiter,
    Usage,
    UsageScanner,
    prompt_estimate,
    usage_of,
)
from nvcf_lite.errors import NotFound, TooManyRequests
from nvcf_lite.models import SCOPES, FunctionVersion, LlmConfig, Principal, Priority, RequestRecord
from nvcf_lite.workers.dispatcher import enqueue

# -- container paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uris", "endpoint", "path"),
    [
        (None, "chat/completions", "/v1/chat/completions"),
        (("/v1/chat/completions",), "chat/completions", "/v1/chat/completions"),
        (("/v1/chat/completions",), "embeddings", "/v1/embeddings"),  # not named: the default
        (("/v1/chat/completions",), "completions", "/v1/completions"),  # chat/ is not it
        (("/x/v1/chat/completions", "/x/v1/completions"), "completions", "/x/v1/completions"),
        (("/api/v1",), "embeddings", "/api/v1/embeddings"),  # a base path
        (("/api/v1/",), "chat/completions", "/api/v1/chat/completions"),
    ],
)
def test_container_path_follows_the_uris(
    uris: tuple[str, ...] | None, endpoint: str, path: str
) -> None:
    assert container_path(uris, endpoint) == path


# -- the model index ---------------------------------------------------------------------------


def test_a_burst_of_calls_reads_the_model_index_once() -> None:
    reads = 0

    async def llm_versions() -> list[FunctionVersion]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return []

    async def versions_of(fid: str) -> list[Any]:
        return []

    async def scenario() -> None:
        gateway = Gateway(llm_versions, versions_of, Metrics())
        caller = Principal(key_id="k", nca_id="n", scopes=frozenset(SCOPES), resources=())
        calls = [gateway.target(caller, "m", "chat/completions") for _ in range(20)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, NotFound) for r in results)
        assert reads == 1
        await gateway.models(caller)
        assert reads == 1  # within the TTL
        gateway.clear()
        await gateway.models(caller)
        assert reads == 2

    asyncio.run(scenario())


# -- token limits ------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_window_refuses_once_used_up_and_rolls_over() -> None:
    clock = Clock(1_000_040.0)  # 20 s into a minute (1_000_020 is a minute)
    limiter = TokenLimiter(clock)
    config = LlmConfig(token_rate_limit="10-M")
    limiter.check("f", "m", "nca", config)
    limiter.add("f", "m", "nca", config, Usage(input_tokens=4, output_tokens=7))  # crosses it
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("f", "m", "nca", config)
    assert refused.value.headers == {"Retry-After": "40"}
    assert "tokenRateLimit of 10 tokens per minute (10-M)" in refused.value.detail
    limiter.check("f", "m", "other-account", config)  # each account has its own allowance
    limiter.check("f", "other-model", "nca", config)
    clock.now += 40
    limiter.check("f", "m", "nca", config)  # a new minute


def test_input_and_output_limits_count_their_own_tokens() -> None:
    limiter = TokenLimiter(Clock(0.0))
    config = LlmConfig(input_token_rate_limit="5-H", output_token_rate_limit="100-H, 3-S")
    limiter.add("f", "m", "a", config, Usage(input_tokens=4, output_tokens=2))
    limiter.check("f", "m", "a", config)
    limiter.add("f", "m", "a", config, Usage(input_tokens=1, output_tokens=0))
    with pytest.raises(TooManyRequests, match="inputTokenRateLimit"):
        limiter.check("f", "m", "a", config)
    other = TokenLimiter(Clock(0.0))
    other.add("f", "m", "a", config, Usage(input_tokens=0, output_tokens=3))
    with pytest.raises(TooManyRequests, match="outputTokenRateLimit of 3 tokens per second"):
        other.check("f", "m", "a", config)


def test_no_limits_no_counting() -> None:
    limiter = TokenLimiter(Clock(0.0))
    for config in (None, LlmConfig(), LlmConfig(token_rate_limit=" ")):
        limiter.add("f", "m", "a", config, Usage(input_tokens=10**9, output_tokens=10**9))
        limiter.check("f", "m", "a", config)


def test_a_week_window() -> None:
    limiter = TokenLimiter(Clock(604800.0 * 3 + 5))
    config = LlmConfig(token_rate_limit="1-W")
    limiter.add("f", "m", "a", config, Usage(input_tokens=1))
    with pytest.raises(TooManyRequests, match="per week") as refused:
        limiter.check("f", "m", "a", config)
    assert refused.value.headers["Retry-After"] == str(604800 - 5)


# -- usage -------------------------------------------------------------------------------------


def test_usage_of_a_body() -> None:
    body = b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}'
    assert usage_of(body) == Usage(input_tokens=3, output_tokens=5)
    assert usage_of(b'{"usage": {"prompt_tokens": 2, "total_tokens": 2}}') == Usage(2, 0)
    assert usage_of(b"not json") is None
    assert usage_of(b'{"usage": null}') is None
    assert usage_of(b"[1]") is None


def test_usage_in_a_stream_split_anywhere() -> None:
    stream = (
        b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "b"}}], '
        b'"usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'
        b"data: [DONE]\n\n"
    )
    for size in (1, 3, 17, 64, len(stream)):
        scanner = UsageScanner()
        for i in range(0, len(stream), size):
            scanner.feed(stream[i : i + size])
        assert scanner.usage == Usage(input_tokens=7, output_tokens=2), size


def test_usage_of_a_plain_body_in_chunks_and_its_cap() -> None:
    body = b'{"data": [], "usage": {"prompt_tokens": 4, "total_tokens": 4}}'
    reader = BodyUsage()
    for i in range(0, len(body), 5):
        reader.feed(body[i : i + 5])
    assert reader.usage == Usage(input_tokens=4)
    big = BodyUsage()
    big.feed(b" " * BodyUsage.MAX_BODY)
    big.feed(body)  # over the cap: not kept, not counted
    assert big.usage == Usage()


def test_a_stream_without_usage_is_counted_by_estimate() -> None:
    """vLLM and OpenAI send no usage in a stream unless the client asked for it: a token per
    event and the prompt's estimate, so a token limit still holds."""
    stream = b"".join(
        b'data: {"choices": [{"delta": {"content": "t%d"}}]}\n\n' % i for i in range(5)
    )
    scanner = UsageScanner(input_estimate=12)
    for event in stream.split(b"\n\n")[:-1]:  # as a server sends them: one event a chunk
        scanner.feed(event + b"\n\n")
    scanner.feed(b"data: [DONE]\n\n")
    assert scanner.usage == Usage(input_tokens=12, output_tokens=5)
    assert prompt_estimate(b'{"messages": [{"content": "four words in it"}]}') == 11
    assert prompt_estimate(b"") == 1


# -- priority ----------------------------------------------------------------------------------


def test_priority_of_an_account() -> None:
    config = Priority(default_priority=5, per_account_priority={"vip": 9, "low": 0})
    assert priority_of(config, "vip") == 9
    assert priority_of(config, "low") == 0  # named with 0: not the default
    assert priority_of(config, "anyone") == 5
    assert priority_of(None, "anyone") == 0
    assert priority_of(Priority(), "anyone") == 0


def _ticket(name: str, priority: int) -> Ticket:
    record = RequestRecord(
        request_id=name,
        function_id="f",
        version_id="v",
        nca_id="n",
        key_id="k",
        method="POST",
        path="/",
        headers=[],
        body=b"",
        poll_seconds=1,
        mode="pexec",
        accepted_at=0.0,
    )
    loop = asyncio.new_event_loop()
    try:
        return Ticket(record=record, subject="s", done=loop.create_future(), priority=priority)
    finally:
        loop.close()


def test_the_queue_serves_higher_priority_first_and_equal_ones_in_order() -> None:
    queue: deque[Ticket] = deque()
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", 9), ("f", 1)]:
        enqueue(queue, _ticket(name, priority))
    assert [t.request_id for t in queue] == ["e", "b", "d", "f", "a", "c"]


def test_without_priorities_the_queue_is_fifo() -> None:
    queue: deque[Ticket] = deque()
    for name in "abcd":
        enqueue(queue, _ticket(name, 0))
    assert [t.request_id for t in queue] == list("abcd")


# -- the OpenAI error shape on the app's /v1 paths --------------------------------------------


def _error(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert set(doc) == {"error"} and doc["error"]["code"] == code, doc
    assert doc["error"]["type"] and isinstance(doc["error"]["message"], str)
    return str(doc["error"]["message"])


def test_errors_on_the_gateway_paths_take_the_openai_shape(client: TestClient[Any]) -> None:
    _error(client.get("/v1/models"), 401, "invalid_api_key")
    _error(client.post("/v1/chat/completions", json={"model": "m"}), 401, "invalid_api_key")
    r = client.post("/v1/chat/completions", content=b"{not json", headers=bearer())
    assert "not valid JSON" in _error(r, 400, "bad_request")
    r = client.post("/v1/embeddings", json=["a list"], headers=bearer())
    _error(r, 400, "bad_request")
    r = client.post("/v1/completions", json={"model": "nothing-serves-it"}, headers=bearer())
    assert "nothing-serves-it" in _error(r, 404, "model_not_found")
    r = client.get("/v1/models", headers=bearer())
    assert r.status_code == 200 and r.json() == {"object": "list", "data": []}


def test_problem_json_stays_elsewhere_and_for_path_preserving_calls(
    client: TestClient[Any],
) -> None:
    r = client.get("/v2/nvcf/functions")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    headers = {"Function-ID": "not-a-uuid", **bearer()}
    r = client.post("/v1/chat/completions", json={"model": "m"}, headers=headers)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert "Function-ID" in r.json()["detail"]
    # I5 by host on a /v1 path: the host's function, problem+json too
    by_host = {"Host": "not-a-uuid.invocation.localhost", **bearer()}
    r = client.post("/v1/chat/completions", json={"model": "m"}, headers=by_host)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


def test_every_other_v1_path_stays_a_path_preserving_invocation(client: TestClient[Any]) -> None:
    """A parameter route under /v1 would stop the router falling back to the I5 catch-all for
    every other /v1 path (Litestar does not backtrack): a Function-ID reaches the catch-all,
    which checks it, on any of them; one model is read there too."""
    headers = {"Function-ID": "not-a-uuid", **bearer()}
    for method, path in [
        ("POST", "/v1/chat/x"),
        ("GET", "/v1/models/org/name"),
        ("POST", "/v1/chat/completions/more"),
        ("GET", "/v1/x"),
        ("DELETE", "/v1/models"),
    ]:
        r = client.request(method, path, headers=headers)
        assert r.status_code == 400 and "Function-ID" in r.json()["detail"], (method, path, r.text)
    r = client.get("/v1/models/org/name", headers=bearer())
    assert "'org/name'" in _error(r, 404, "model_not_found")
    _error(client.get("/v1/models/org/name"), 401, "invalid_api_key")
    for path in ("/v1/chat/x", "/v1/models/x"):  # no Function-ID, not the gateway's: 404
        assert client.post(path, headers=bearer()).status_code == 404


# -- plain answers: one write, or a stream when they are large -------------------------------


class _Invocations:
    """What `_plain` uses of Invocations: the word that the client has its answer."""

    def __init__(self) -> None:
        self.answered: list[str] = []

    def delivered(self, ticket: Any) -> None:
        self.answered.append(ticket.request_id)


def _reply(parts: list[bytes]) -> tuple[Any, list[bool]]:
    from nvcf_lite.domain.invocations import StreamReply

    closed: list[bool] = []

    async def chunks() -> Any:
        for part in parts:
            yield part

    async def close() -> None:
        closed.append(True)

    headers = [("content-type", "application/json")]
    return StreamReply(200, headers, chunks(), close), closed


def test_a_plain_answer_goes_whole_and_a_large_one_streams_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from litestar.response import Stream

    from nvcf_lite.api.gateway import _plain

    inv: Any = _Invocations()
    ticket: Any = type("T", (), {"request_id": "r1"})()

    async def scenario() -> None:
        reply, closed = _reply([b'{"a": ', b"1}"])
        whole = await _plain(inv, ticket, reply, reply.chunks)
        assert not isinstance(whole, Stream)
        assert whole.content == b'{"a": 1}' and whole.headers["NVCF-REQID"] == "r1"
        assert closed == [True] and inv.answered == ["r1"]

        monkeypatch.setattr(BodyUsage, "MAX_BODY", 4)
        reply, closed = _reply([b"abc", b"def", b"ghi"])
        streamed = await _plain(inv, ticket, reply, reply.chunks)
        assert isinstance(streamed, Stream)
        assert b"".join([c async for c in streamed.iterator]) == b"abcdefghi"  # type: ignore[union-attr]
        assert closed == [True] and inv.answered == ["r1", "r1"]

    asyncio.run(scenario())


def test_usage_of_a_body_nested_past_the_decoders_depth_is_none() -> None:
    from nvcf_lite.domain.token_limits import usage_of

    assert usage_of(b'{"usage":' * 3000 + b"1" + b"}" * 3000) is None
