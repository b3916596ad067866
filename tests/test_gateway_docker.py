"""The OpenAI-compatible gateway through the public API of a live `nvcf-lite serve`, against
real LLM function containers (the deterministic `nvcf-lite-test/llm` image: the answer to a
prompt is "echo:" and its words, one token per word, with `usage`).

One server per module, with two LLM functions (model-a on the default paths; org/model-b, a
name with a slash as NGC's are, on paths its llmConfig.uris names) and one registered but
never deployed (model-idle). Tests that need a function of their own (scale from zero, token
limits) register it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import metric_samples, wait_for
from docker_support import SLOW_READY_IMAGE
from gateway_support import (
    SseReader,
    chat_body,
    live_llm,
    llm_server,
    post,
    register_llm,
)
from sdk_support import admin, mint_key
from server_support import ServerProcess

pytestmark = pytest.mark.docker

MAX_QUEUE = 4
CUSTOM_URIS = ["/custom/v1/chat/completions", "/custom/v1/completions", "/custom/v1/embeddings"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # a queue of 4 per function: the overload test fills it (no other test has 4 in flight)
    env = {"NVCF_LITE_INVOCATION__MAX_QUEUE_PER_FUNCTION": str(MAX_QUEUE)}
    with llm_server(tmp_path_factory.mktemp("gateway"), **env) as live:
        yield live


@pytest.fixture(scope="module")
def fns(server: ServerProcess) -> dict[str, str]:
    a, _ = live_llm(server, "llm-a", "model-a")
    b, _ = live_llm(server, "llm-b", "org/model-b", uris=CUSTOM_URIS)
    idle, _ = register_llm(server, "llm-idle", "model-idle")
    return {"model-a": a, "org/model-b": b, "model-idle": idle}


def metrics(server: ServerProcess) -> dict[str, float]:
    code, _, body = server.call("GET", "/metrics")
    assert code == 200
    return metric_samples(body.decode())


def openai_error(answer: Any, code: str) -> str:
    """The message of an OpenAI-shaped error with this code."""
    assert set(answer) == {"error"}, answer
    error = answer["error"]
    assert {"message", "type", "code"} <= set(error) and error["code"] == code, error
    return str(error["message"])


def open_gate(server: ServerProcess, fid: str, gate: str) -> None:
    """Open a gate of the function's (one) container straight at its published port."""
    path = f"/v2/nvcf/deployments/functions/{fid}"
    versions = server.json("GET", f"/v2/nvcf/functions/{fid}/versions")["functions"]
    d = server.json("GET", f"{path}/versions/{versions[0]['versionId']}")
    port = d["deployment"]["instances"][0]["hostPort"]
    url = f"http://127.0.0.1:{port}/gate/{gate}"
    with urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=10) as answer:
        assert answer.status == 200


def test_models_lists_the_callers_active_llm_models(server: ServerProcess, fns: dict) -> None:
    code, _, body = server.call("GET", "/v1/models")
    assert code == 200
    listed = json.loads(body)
    assert listed["object"] == "list"
    ids = [m["id"] for m in listed["data"]]
    assert ids == ["model-a", "org/model-b"]  # model-idle is not deployed
    for entry in listed["data"]:
        assert entry["object"] == "model" and entry["root"] == entry["id"]
        assert isinstance(entry["created"], int) and entry["owned_by"]


def test_one_model_by_its_name_slashes_included(server: ServerProcess, fns: dict) -> None:
    for name in ("model-a", "org/model-b"):
        code, _, body = server.call("GET", f"/v1/models/{name}")
        assert code == 200
        entry = json.loads(body)
        assert entry["id"] == name and entry["object"] == "model" and entry["root"] == name
    for missing in ("/v1/models/model-idle", "/v1/models/org/no-such-model"):
        code, _, body = server.call("GET", missing)
        assert code == 404
        error = json.loads(body)["error"]
        assert error["code"] == "model_not_found" and "does not exist" in error["message"]


def test_chat_routes_by_model_to_the_path_its_uris_name(server: ServerProcess, fns: dict) -> None:
    code, headers, out = post(server, "/v1/chat/completions", chat_body("model-a", "hello there"))
    assert code == 200, out
    assert out["choices"][0]["message"]["content"] == "echo: hello there"
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert headers["x-served-path"] == "/v1/chat/completions" and headers["nvcf-reqid"]

    code, headers, out = post(server, "/v1/chat/completions", chat_body("org/model-b", "to b"))
    assert code == 200, out
    assert out["model"] == "org/model-b" and out["choices"][0]["message"]["content"] == "echo: to b"
    assert headers["x-served-path"] == "/custom/v1/chat/completions"
    # an invocation like any other: counted where pexec calls are
    counted = metrics(server)
    ended = [
        v
        for k, v in counted.items()
        if k.startswith("nvcf_lite_invocations_total{")
        and f'function_id="{fns["org/model-b"]}"' in k
        and 'status="200"' in k
    ]
    assert sum(ended) >= 1


def test_completions_and_embeddings(server: ServerProcess, fns: dict) -> None:
    body = {"model": "org/model-b", "prompt": "one two three four", "max_tokens": 3}
    code, headers, out = post(server, "/v1/completions", body)
    assert code == 200, out
    assert out["choices"][0] == {"index": 0, "finish_reason": "length", "text": "echo: one two"}
    assert headers["x-served-path"] == "/custom/v1/completions"

    body = {"model": "model-a", "input": ["first text", "second"]}
    code, headers, out = post(server, "/v1/embeddings", body)
    assert code == 200, out
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in out["data"])
    assert out["usage"]["prompt_tokens"] == 3
    assert headers["x-served-path"] == "/v1/embeddings"


def test_a_streamed_chat_leaves_chunk_by_chunk(server: ServerProcess, fns: dict) -> None:
    """The container holds its stream after the first token until the test opens the gate (a
    path-preserving call to the same function): the first chunk must have reached the client
    before the rest of the answer exists."""
    before = metrics(server)
    gate = f"g{time.monotonic_ns()}"
    body = chat_body("model-a", "one two three", stream=True, gate=gate)
    t_sent = time.monotonic()
    reader = SseReader(server, "/v1/chat/completions", body)
    try:
        assert reader.response.status == 200
        assert reader.response.getheader("content-type", "").startswith("text/event-stream")
        events = reader.events()
        first = json.loads(next(events))
        assert first["choices"][0]["delta"]["content"] == "echo:"
        t_first = time.monotonic()
        code, _, opened = server.call(
            "POST", f"/gate/{gate}", {}, headers={"Function-ID": fns["model-a"]}
        )
        assert code == 200, opened
        rest = list(events)
        t_end = time.monotonic()
    finally:
        reader.close()
    assert rest[-1] == "[DONE]"
    chunks = [json.loads(e) for e in rest[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == " one two three"
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    # reported, not asserted (timing goals are scripts/bench_gateway.py's)
    print(f"time to first token {t_first - t_sent:.4f} s; {t_end - t_first:.3f} s before the end")
    after = metrics(server)
    labels = f'function_id="{fns["model-a"]}",model="model-a"'
    ttft = f"nvcf_lite_llm_time_to_first_token_seconds_count{{{labels}}}"
    assert after[ttft] == before.get(ttft, 0) + 1
    tokens = [k for k in after if k.startswith("nvcf_lite_llm_tokens_total{")]
    output = [k for k in tokens if 'model="model-a"' in k and 'kind="output"' in k]
    assert output and sum(after[k] for k in output) >= 4
    calls = [
        k
        for k in after
        if k.startswith("nvcf_lite_llm_requests_total{")
        and 'model="model-a"' in k
        and 'endpoint="chat/completions"' in k
        and 'status="200"' in k
        and "key_id=" in k
    ]
    assert calls and sum(after[k] for k in calls) > sum(before.get(k, 0) for k in calls)


def test_stream_of_completions(server: ServerProcess, fns: dict) -> None:
    body = {"model": "model-a", "prompt": "a b c", "stream": True}
    reader = SseReader(server, "/v1/completions", body)
    try:
        events = list(reader.events())
    finally:
        reader.close()
    assert events[-1] == "[DONE]"
    texts = [json.loads(e)["choices"][0]["text"] for e in events[:-1]]
    assert texts == ["echo:", " a", " b", " c"]


def test_unknown_model_404_undeployed_503_in_openai_shape(server: ServerProcess, fns: dict) -> None:
    code, _, out = post(server, "/v1/chat/completions", chat_body("no-such-model", "x"))
    assert code == 404
    assert "no-such-model" in openai_error(out, "model_not_found")

    code, headers, out = post(server, "/v1/chat/completions", chat_body("model-idle", "x"))
    assert code == 503
    assert int(headers["retry-after"]) >= 1
    assert "its function is INACTIVE" in openai_error(out, "model_not_ready")

    code, _, out = post(server, "/v1/chat/completions", {"messages": []})
    assert code == 400
    assert "'model' is required" in openai_error(out, "bad_request")


def test_an_idempotency_key_replays_the_answer_and_the_function_runs_once(
    server: ServerProcess, fns: dict
) -> None:
    """A retry with the same Idempotency-Key gets the same request id and answer (a streamed
    one as its whole event stream) from the call the key stands for; the function ran once
    for each key (counted by the requests nvcf-lite ended for it)."""

    def runs() -> float:
        samples = metrics(server)
        return sum(
            v
            for k, v in samples.items()
            if k.startswith("nvcf_lite_invocations_total{") and fns["model-a"] in k
        )

    before = runs()
    tag = time.monotonic_ns()
    keyed = {"Idempotency-Key": f"chat-{tag}"}
    body = chat_body("model-a", "the same words")
    code, first_headers, first = post(server, "/v1/chat/completions", body, **keyed)
    assert code == 200, first
    code, again_headers, again = post(server, "/v1/chat/completions", body, **keyed)
    assert code == 200 and again == first
    assert again_headers["nvcf-reqid"] == first_headers["nvcf-reqid"]

    streamed = chat_body("model-a", "streamed words", stream=True)
    auth = {
        "Authorization": f"Bearer {server.key}",
        "Accept": "text/event-stream",
        "Idempotency-Key": f"stream-{tag}",
    }
    code, one_headers, one = server.call("POST", "/v1/chat/completions", streamed, headers=auth)
    assert code == 200 and one.rstrip().endswith(b"data: [DONE]"), one
    code, two_headers, two = server.call("POST", "/v1/chat/completions", streamed, headers=auth)
    assert code == 200 and two == one  # the whole stream, as it passed the first time
    assert two_headers["content-type"].startswith("text/event-stream")
    assert two_headers["nvcf-reqid"] == one_headers["nvcf-reqid"]

    other = chat_body("model-a", "other words")
    code, _, out = post(server, "/v1/chat/completions", other, **keyed)
    assert code == 409 and "Idempotency-Key" in out["error"]["message"], out
    wait_for(lambda: runs() >= before + 2, 10, "both requests counted")
    assert runs() == before + 2  # one run per key, none for the retries or the conflict


def test_keys_and_scopes_as_pexec(server: ServerProcess, fns: dict) -> None:
    out = admin(
        server, "keys", "create", "--scope", "invoke_function", "--function", fns["org/model-b"]
    )
    limited = out.strip().splitlines()[-1]
    code, _, body = server.call("GET", "/v1/models", headers={"Authorization": f"Bearer {limited}"})
    assert code == 200 and [m["id"] for m in json.loads(body)["data"]] == ["org/model-b"]
    code, _, out = post(server, "/v1/chat/completions", chat_body("model-a", "x"), key=limited)
    assert code == 404, out  # a function-limited key sees only its functions' models
    code, _, out = post(server, "/v1/chat/completions", chat_body("org/model-b", "ok"), key=limited)
    assert code == 200, out

    no_invoke = mint_key(server, "list_functions")
    code, _, out = post(server, "/v1/chat/completions", chat_body("model-a", "x"), key=no_invoke)
    assert code == 403
    assert "invoke_function" in openai_error(out, "forbidden")
    code, _, out = post(server, "/v1/chat/completions", chat_body("model-a", "x"), key="nvapi-bad")
    assert code == 401
    openai_error(out, "invalid_api_key")


def test_scale_from_zero_on_the_first_chat_call(server: ServerProcess) -> None:
    fid, vid = live_llm(server, "llm-zero", "model-zero", spec={"minInstances": 0})
    d = server.json("GET", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    assert not d["deployment"].get("instances")
    code, headers, out = post(server, "/v1/chat/completions", chat_body("model-zero", "wake up"))
    assert code == 200, out
    assert out["choices"][0]["message"]["content"] == "echo: wake up"
    assert headers.get("nvcf-lite-cold-start", "").startswith("cold start:")


def test_token_limits_429_with_retry_after_and_f8_updates(server: ServerProcess) -> None:
    fid, vid = live_llm(server, "llm-limited", "model-limited", llm={"tokenRateLimit": "20-D"})
    # a streamed answer's usage counts: 10 prompt + 11 completion tokens use up the day's 20
    # (a day's window: none rolls over during the test)
    words = " ".join(f"w{i}" for i in range(10))
    reader = SseReader(
        server, "/v1/chat/completions", chat_body("model-limited", words, stream=True)
    )
    try:
        events = list(reader.events())
    finally:
        reader.close()
    assert events[-1] == "[DONE]"
    code, headers, out = post(server, "/v1/chat/completions", chat_body("model-limited", "more"))
    assert code == 429, out
    assert 1 <= int(headers["retry-after"]) <= 86400
    assert "tokenRateLimit" in openai_error(out, "rate_limit_exceeded")

    # F8 modelUpdates raises the limit: the next call goes through at once
    update = {
        "modelUpdates": [{"modelName": "model-limited", "llmConfig": {"tokenRateLimit": "1000-M"}}]
    }
    server.json("PUT", f"/v2/nvcf/functions/{fid}/versions/{vid}", update)
    code, _, out = post(server, "/v1/chat/completions", chat_body("model-limited", "more"))
    assert code == 200, out

    # outputTokenRateLimit counts completion tokens only
    update = {
        "modelUpdates": [
            {"modelName": "model-limited", "llmConfig": {"outputTokenRateLimit": "3-D"}}
        ]
    }
    server.json("PUT", f"/v2/nvcf/functions/{fid}/versions/{vid}", update)
    code, _, out = post(server, "/v1/chat/completions", chat_body("model-limited", "a b"))
    assert code == 200, out  # 3 completion tokens: the window is now full
    code, _, out = post(server, "/v1/chat/completions", chat_body("model-limited", "a"))
    assert code == 429 and "outputTokenRateLimit" in openai_error(out, "rate_limit_exceeded")


def test_a_path_preserving_call_on_v1_paths_stays_i5(server: ServerProcess, fns: dict) -> None:
    """A Function-ID header makes a /v1/... call an I5 invocation of that function (as before
    the gateway existed): no model routing, problem+json errors."""
    headers = {"Function-ID": fns["org/model-b"]}
    code, out_headers, body = server.call(
        "POST", "/v1/chat/completions", chat_body("anything", "direct"), headers=headers
    )
    assert code == 200, body
    assert out_headers["x-served-path"] == "/v1/chat/completions"
    assert json.loads(body)["choices"][0]["message"]["content"] == "echo: direct"


def test_priority_orders_the_queue_between_accounts(server: ServerProcess) -> None:
    """llmInvocationConfig.priority: with the one slot busy, a queued call of the account with
    the higher priority is served before an older one of the default priority."""
    admin(server, "accounts", "create", "--nca-id", "nca-vip", "--org-name", "vip")
    made = admin(server, "keys", "create", "--account", "vip", "--scope", "invoke_function")
    vip_key = made.strip().splitlines()[-1]
    priority = {"priority": {"defaultPriority": 0, "perAccountPriority": {"nca-vip": 9}}}
    fid, _ = live_llm(
        server,
        "llm-prio",
        "model-prio",
        llmInvocationConfig=priority,
        spec={"maxRequestConcurrency": 1},
    )
    body = {"authorizedParties": [{"ncaId": "nca-vip"}]}
    server.json("POST", f"/v2/nvcf/authorizations/functions/{fid}", body)

    def depth() -> int:
        queues = server.json("GET", f"/v2/nvcf/queues/functions/{fid}")["queues"]
        return int(sum(q["queueDepth"] for q in queues))

    gate = f"prio{time.monotonic_ns()}"
    holder = SseReader(
        server, "/v1/chat/completions", chat_body("model-prio", "hold", stream=True, gate=gate)
    )
    served: dict[str, int] = {}  # the order the container saw the calls in

    def call(who: str, key: str | None) -> None:
        code, headers, out = post(
            server, "/v1/chat/completions", chat_body("model-prio", who), key=key
        )
        assert code == 200, out
        assert out["choices"][0]["message"]["content"] == f"echo: {who}"
        served[who] = int(headers["x-served-seq"])

    try:
        events = holder.events()
        next(events)  # the one slot is taken until the gate opens
        first = threading.Thread(target=call, args=("default", None))
        first.start()
        wait_for(lambda: depth() == 1, what="the default-priority call queued")
        second = threading.Thread(target=call, args=("vip", vip_key))
        second.start()
        wait_for(lambda: depth() == 2, what="the vip call queued")
        open_gate(server, fid, gate)  # a call through nvcf-lite would queue behind them
        assert list(events)[-1] == "[DONE]"
        first.join(30)
        second.join(30)
    finally:
        holder.close()
    assert served["vip"] < served["default"], served


def test_overload_is_429_with_retry_after(server: ServerProcess) -> None:
    """A full queue (invocation.max_queue_per_function, 4 here) answers 429 in OpenAI's shape."""
    fid, _ = live_llm(server, "llm-busy", "model-busy", spec={"maxRequestConcurrency": 1})
    gate = f"busy{time.monotonic_ns()}"
    holder = SseReader(
        server, "/v1/chat/completions", chat_body("model-busy", "hold", stream=True, gate=gate)
    )
    codes: list[int] = []

    def call() -> None:
        codes.append(post(server, "/v1/chat/completions", chat_body("model-busy", "wait"))[0])

    waiting = [threading.Thread(target=call) for _ in range(MAX_QUEUE - 1)]
    try:
        events = holder.events()
        next(events)
        for thread in waiting:
            thread.start()

        def depth() -> int:
            queues = server.json("GET", f"/v2/nvcf/queues/functions/{fid}")["queues"]
            return int(sum(q["queueDepth"] for q in queues))

        wait_for(lambda: depth() == MAX_QUEUE - 1, what="the queue filled")
        code, headers, out = post(server, "/v1/chat/completions", chat_body("model-busy", "no"))
        assert code == 429, out
        assert int(headers["retry-after"]) >= 1
        assert "queue is full" in openai_error(out, "rate_limit_exceeded")
        open_gate(server, fid, gate)  # a call through nvcf-lite would be refused too
        assert list(events)[-1] == "[DONE]"
    finally:
        holder.close()
        for thread in waiting:
            thread.join(30)
    assert codes == [200] * (MAX_QUEUE - 1)


def test_no_instance_within_the_poll_window_is_504_in_openai_shape(server: ServerProcess) -> None:
    """An outcome nvcf-lite makes itself (here: no instance ready within NVCF-POLL-SECONDS,
    the function's container taking 3 s to become healthy) is answered in OpenAI's shape."""
    live_llm(
        server,
        "llm-slow",
        "model-slow",
        containerImage=SLOW_READY_IMAGE,
        spec={"minInstances": 0},
    )
    code, headers, out = post(
        server, "/v1/chat/completions", chat_body("model-slow", "x"), **{"NVCF-POLL-SECONDS": "1"}
    )
    assert code == 504, out
    assert "within 1 s" in openai_error(out, "gateway_timeout")
    assert headers["nvcf-reqid"]


def test_idempotency_keys_of_gateway_calls_hold_across_a_sigkill(tmp_path: Any) -> None:
    """One slot: a keyed streamed call in its container at the kill (held after its first
    token), a keyed call queued behind it. Neither runs again after the restart (a gateway
    answer went to its connection, which ended with the process): each key answers the
    problem its call ended with, under the same request id, in OpenAI's shape."""
    with llm_server(tmp_path / "srv") as server:
        fid, _ = live_llm(server, "llm-kill", "model-kill", spec={"maxRequestConcurrency": 1})
        held = chat_body("model-kill", "held", stream=True, gate=f"g{time.monotonic_ns()}")
        reader = SseReader(server, "/v1/chat/completions", held, **{"Idempotency-Key": "k-run"})
        held_rid = reader.response.getheader("nvcf-reqid")
        assert reader.response.status == 200 and held_rid
        assert json.loads(next(reader.events()))["choices"][0]["delta"]["content"] == "echo:"
        queued = chat_body("model-kill", "queued")

        def call_and_lose() -> None:  # its connection ends with the killed process
            with pytest.raises(OSError):
                post(server, "/v1/chat/completions", queued, **{"Idempotency-Key": "k-queued"})

        waiting = threading.Thread(target=call_and_lose)
        waiting.start()

        def queued_now() -> bool:
            samples = metrics(server)
            depth = [k for k in samples if k.startswith("nvcf_lite_queue_depth{") and fid in k]
            return sum(samples[k] for k in depth) >= 1

        wait_for(queued_now, 10, "the second call queued")
        server.kill()
        reader.close()
        waiting.join(30)
        server.start()
        before = metrics(server)
        for key, body in (("k-run", held), ("k-queued", queued)):
            code, headers, out = post(
                server, "/v1/chat/completions", body, **{"Idempotency-Key": key}
            )
            assert code in (500, 503), (key, code, out)
            assert "error" in out and headers.get("nvcf-reqid"), (key, out)
            if key == "k-run":
                assert headers["nvcf-reqid"] == held_rid
        after = metrics(server)
        ran = [k for k in after if k.startswith("nvcf_lite_invocations_total{") and fid in k]
        assert sum(after[k] - before.get(k, 0) for k in ran) == 0  # neither ran again
