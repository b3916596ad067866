"""Invocation through the public API against real function containers (spec §2.3, §2.4, §4).

The echo function (scripts/function_server.py) answers with what it received, so each test
checks both sides: the client's answer and what the container saw. Streams are checked for
content here (Litestar's TestClient buffers them); their timing is in test_invocations_live.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ADMIN_KEY, bearer, call
from function_support import problem
from invocation_support import docker_config, echo, wait_for
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime
from nvcf_lite.models import SCOPES

pytestmark = pytest.mark.docker

UUID_LEN = 36
PATTERN = bytes(range(256)) * 256  # what the echo function sends for responseBytes


@pytest.fixture
def start(
    ns: str, app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> Callable[..., TestClient[Any]]:  # `ns` first: its cleanup runs after the apps stop
    def run(**env: str) -> TestClient[Any]:
        return app_factory(docker_config(tmp_path, ns, **env), runtime_factory=docker_runtime)

    return run


@pytest.fixture
def api(start: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    return start()


def invoke(
    api: TestClient[Any],
    fid: str,
    body: Any,
    *,
    poll: int | str | None = None,
    vid: str | None = None,
    headers: dict[str, str] | None = None,
    prefix: str = "/v2/nvcf",
) -> Any:
    path = f"{prefix}/pexec/functions/{fid}" + (f"/versions/{vid}" if vid else "")
    extra = {"NVCF-POLL-SECONDS": str(poll)} if poll is not None else {}
    headers = {**bearer(), **extra, **(headers or {})}
    return api.post(path, json=body, headers=headers, follow_redirects=False)


def status(api: TestClient[Any], rid: str, poll: int | str = 10, key: str | None = None) -> Any:
    headers = {**bearer(key or ADMIN_KEY), "NVCF-POLL-SECONDS": str(poll)}
    return api.get(f"/v2/nvcf/pexec/status/{rid}", headers=headers, follow_redirects=False)


def mint(api: TestClient[Any], *scopes: str, functions: tuple[str, ...] = ()) -> str:
    """A key in this app's store (the `make_key` fixture would start a second app)."""
    token, _ = call(api, api.app.state.platform.keys.create, list(scopes), functions)
    return str(token)


def reqid(r: Any) -> str:
    rid = r.headers["nvcf-reqid"]
    assert len(rid) == UUID_LEN, r.headers
    return str(rid)


def response_dir(tmp_path: Path, rid: str) -> Path:
    return tmp_path / "data" / "inf" / "response" / rid


# -- I1 / I2: 200 -------------------------------------------------------------------------------


def test_sync_invoke_passes_the_container_answer_through(api: TestClient[Any]) -> None:
    fid, vid = echo(api)
    for prefix, version in (("/v2/nvcf", None), ("/v2/nvcf", vid), ("/v2/orgs/local/nvcf", None)):
        r = invoke(api, fid, {"hello": "world"}, vid=version, prefix=prefix)
        assert r.status_code == 200, r.text
        assert r.headers["nvcf-status"] == "fulfilled"
        assert r.headers["content-type"].startswith("application/json")
        assert "nvcf-reqid" in r.headers["access-control-expose-headers"].lower()
        seen = r.json()
        assert seen["body"] == {"hello": "world"} and seen["method"] == "POST"
        assert seen["path"] == "/echo"
        assert seen["headers"]["nvcf-reqid"] == reqid(r)
        assert seen["headers"]["nvcf-function-version-id"] == vid


def test_container_gets_the_nvcf_headers_and_the_clients_minus_hop_by_hop(
    api: TestClient[Any], tmp_path: Path
) -> None:
    fid, vid = echo(api)
    sent = {
        "X-Custom": "kept",
        "Accept": "application/json",
        "Connection": "keep-alive, X-Hop-Named",
        "X-Hop-Named": "dropped",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "TE": "trailers",
        "NVCF-REQID": "forged",
        "NVCF-FUNCTION-ID": "forged",
        "NVCF-INVOCATION-REGION": "forged",
        "NVCF-POLL-SECONDS": "30",
    }
    # the container writes a progress file: the per-request large-output dir exists inside it
    body = {"progress": [{"progress": 100, "partialResponse": {"done": True}}]}
    r = invoke(api, fid, body, headers=sent)
    assert r.status_code == 200, r.text
    rid = reqid(r)
    seen = r.json()["headers"]
    assert seen["x-custom"] == "kept" and seen["accept"] == "application/json"
    for gone in ("authorization", "x-hop-named", "keep-alive", "proxy-authorization", "te"):
        assert gone not in seen, gone
    expected = {
        "nvcf-reqid": rid,
        "nvcf-sub": seen["nvcf-sub"],
        "nvcf-ncaid": "nvcf-lite-local",
        "nvcf-function-name": "echo",
        "nvcf-function-id": fid,
        "nvcf-function-version-id": vid,
        "nvcf-asset-dir": f"/var/inf/inputAssets/{rid}",
        "nvcf-large-output-dir": f"/var/inf/response/{rid}",
        "nvcf-max-response-size-bytes": "5242880",
        "nvcf-instancetype": "CPU.x1",
        "content-type": "application/json",
    }
    assert {k: seen.get(k) for k in expected} == expected
    assert seen["nvcf-sub"].startswith("apikey:")
    for name in ("nvcf-nspectid", "nvcf-backend", "nvcf-region", "nvcf-env"):
        assert seen[name], name
    assert seen["nvcf-invocation-region"] != "forged"
    assert 28 <= int(seen["nvcf-poll-seconds"]) <= 30
    assert "nvcf-function-asset-ids" not in seen
    # removed after the request (folders are deleted in batches, within a second)
    wait_for(lambda: not response_dir(tmp_path, rid).exists(), 5, "the request folder removed")

    r = api.post(f"/v2/nvcf/pexec/functions/{fid}", content=b"raw bytes", headers=bearer())
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["content-type"] == "application/json"  # the default
    assert r.json()["body"] == "raw bytes"


# -- 202, status polling, purge ------------------------------------------------------------------


def test_202_then_status_polls_to_200_then_404(api: TestClient[Any]) -> None:
    fid, _ = echo(api)
    started = time.monotonic()
    r = invoke(api, fid, {"delay": 2.5, "n": 1}, poll=1)
    assert r.status_code == 202, r.text
    assert 0.9 <= time.monotonic() - started < 2.0
    assert r.headers["nvcf-status"] == "in-progress" and r.content == b""
    rid = reqid(r)
    # only keys for this function (and with the scope) may poll it
    problem(status(api, rid, key=mint(api, *SCOPES, functions=(f"{_other(api)}/*",))), 403)
    problem(status(api, rid, key=mint(api, "list_functions")), 403)
    r = status(api, rid, poll=1)
    assert r.status_code == 202 and reqid(r) == rid
    assert r.headers["nvcf-status"] == "in-progress"
    r = status(api, rid, poll=10)
    assert r.status_code == 200, r.text
    assert r.headers["nvcf-status"] == "fulfilled" and reqid(r) == rid
    assert r.json()["body"] == {"delay": 2.5, "n": 1}
    doc = problem(status(api, rid), 404)  # collected: purged
    assert rid in doc["detail"]
    problem(status(api, "00000000-0000-4000-8000-000000000000"), 404)
    problem(status(api, "not-a-request-id"), 404)


def _other(api: TestClient[Any]) -> str:
    r = api.post(
        "/v2/nvcf/functions",
        json={"name": "other", "inferenceUrl": "/x", "containerImage": "x:1"},
        headers=bearer(),
    )
    return str(r.json()["function"]["id"])


def test_poll_seconds_header_rules(api: TestClient[Any]) -> None:
    fid, _ = echo(api)
    for bad in ("3601", "abc", "1.5", "-"):
        doc = problem(invoke(api, fid, {}, poll=bad), 400)
        assert "NVCF-POLL-SECONDS" in doc["detail"]
    problem(status(api, "00000000-0000-4000-8000-000000000000", poll="x"), 400)
    assert invoke(api, fid, {}, poll=0).status_code == 200  # clamped to 1 s
    # ngcsdk 3.x spelling
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}",
        json={"delay": 1.6},
        headers={**bearer(), "NVCF-POLL_SECONDS": "1"},
    )
    assert r.status_code == 202, r.text
    assert status(api, reqid(r)).status_code == 200


# -- progress and partial responses (§4.5) -------------------------------------------------------


def test_progress_file_gives_202s_with_partial_responses_in_order(api: TestClient[Any]) -> None:
    fid, _ = echo(api)
    steps = [
        {"progress": 10, "partialResponse": {"step": 1}, "sleep": 0.6},
        {"progress": 60, "partialResponse": {"step": 2}, "sleep": 2.0},
    ]
    r = invoke(api, fid, {"progress": steps}, poll=20)
    assert r.status_code == 202, r.text
    rid = reqid(r)
    assert r.headers["nvcf-percent-complete"] == "10" and r.json() == {"step": 1}
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["nvcf-status"] == "in-progress"
    r = status(api, rid, poll=20)
    assert r.status_code == 202 and r.headers["nvcf-percent-complete"] == "60"
    assert r.json() == {"step": 2}
    r = status(api, rid, poll=1)  # nothing new within the window: the latest again
    assert r.status_code == 202 and r.json() == {"step": 2}
    r = status(api, rid, poll=20)
    assert r.status_code == 200, r.text
    assert "nvcf-percent-complete" not in r.headers
    assert r.json()["body"]["progress"] == steps


# -- large results (§2.3.7) ----------------------------------------------------------------------


def _zip(api: TestClient[Any], location: str, auth: bool) -> zipfile.ZipFile:
    url = urlsplit(location)
    assert url.path.startswith("/_nvcf-lite/blobs/results/")
    r = api.get(f"{url.path}?{url.query}", headers=bearer() if auth else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(r.content))


def test_large_output_files_become_a_zip_behind_a_signed_url(
    api: TestClient[Any], tmp_path: Path
) -> None:
    fid, _ = echo(api)
    files = {"result.bin": 100_000, "nested/notes.txt": "hello"}
    r = invoke(api, fid, {"largeOutputFiles": files}, poll=30)
    assert r.status_code == 302, r.text
    rid = reqid(r)
    assert r.headers["nvcf-status"] == "fulfilled" and r.content == b""
    location = r.headers["location"]
    for auth in (True, False):
        z = _zip(api, location, auth)
        assert sorted(z.namelist()) == sorted([f"{rid}.response", "result.bin", "nested/notes.txt"])
        assert z.read("result.bin") == (PATTERN * 2)[:100_000]
        assert z.read("nested/notes.txt") == b"hello"
        echoed = json.loads(z.read(f"{rid}.response"))
        assert echoed["headers"]["nvcf-reqid"] == rid and set(echoed["largeOutput"]) == set(files)
    wait_for(lambda: not response_dir(tmp_path, rid).exists(), 5, "the request folder removed")
    url = urlsplit(location)
    signature = next(p for p in url.query.split("&") if p.startswith("signature="))
    tampered = url.query.replace(
        signature, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    )
    problem(api.get(f"{url.path}?{tampered}"), 403)
    other = url.path.replace(rid, "00000000-0000-4000-8000-000000000000")
    problem(api.get(f"{other}?{url.query}"), 403)
    expired = urlsplit(api.app.state.platform.assets.result_url(rid, time.time() - 5))
    problem(api.get(f"{expired.path}?{expired.query}"), 403)
    problem(status(api, rid), 404)


def test_a_body_over_the_size_limit_becomes_a_zip(start: Callable[..., TestClient[Any]]) -> None:
    api = start(NVCF_LITE_INVOCATION__MAX_RESPONSE_BYTES="65536")
    fid, _ = echo(api)
    r = invoke(api, fid, {"responseBytes": 65536})
    assert r.status_code == 200 and r.content == PATTERN  # exactly the limit: direct
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-body-sha256"] == hashlib.sha256(PATTERN).hexdigest()
    r = invoke(api, fid, {"responseBytes": 200_000, "delay": 1.5}, poll=1)
    assert r.status_code == 202, r.text
    rid = reqid(r)
    r = status(api, rid)
    assert r.status_code == 302, r.text
    z = _zip(api, r.headers["location"], auth=False)
    assert z.namelist() == [f"{rid}.response"]
    body = z.read(f"{rid}.response")
    assert hashlib.sha256(body).digest() == hashlib.sha256((PATTERN * 4)[:200_000]).digest()


# -- errors (§4.4, §5.2) --------------------------------------------------------------------------


def test_container_errors_are_wrapped_as_problem_json(api: TestClient[Any]) -> None:
    fid, _ = echo(api)
    r = invoke(api, fid, {"status": 500, "errorMessage": "kaboom"})
    doc = problem(r, 500)
    rid = reqid(r)
    assert r.headers["nvcf-status"] == "errored"
    assert doc == {
        "type": "urn:inference-service:problem-details:internal-server-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "kaboom",
        "instance": f"/v2/nvcf/pexec/functions/{fid}",
        "requestId": rid,
    }
    doc = problem(invoke(api, fid, {"status": 400}), 400)
    assert doc["type"] == "urn:inference-service:problem-details:bad-request"
    assert doc["detail"] == "boom"


def test_a_crashing_container_gives_a_worker_problem(api: TestClient[Any]) -> None:
    fid, _ = echo(api)
    r = invoke(api, fid, {"crash": True})
    doc = problem(r, 500)
    assert doc["type"].startswith("urn:inference-connection:problem-details:")
    assert "Inference connection error" in doc["detail"]
    assert doc["requestId"] == reqid(r) and r.headers["nvcf-status"] == "errored"


def test_not_invocable_functions_are_404(api: TestClient[Any]) -> None:
    r = api.post(
        "/v2/nvcf/functions",
        json={"name": "idle", "inferenceUrl": "/x", "containerImage": "x:1"},
        headers=bearer(),
    )
    f = r.json()["function"]
    doc = problem(invoke(api, f["id"], {}), 404)
    assert f["id"] in doc["detail"] and "not found" in doc["detail"]
    problem(invoke(api, f["id"], {}, vid=f["versionId"]), 404)
    problem(invoke(api, "00000000-0000-4000-8000-000000000000", {}), 404)


# -- queues: 202 pending-evaluation, depth, position, 429 (§2.4) --------------------------------


def test_a_rate_limit_refuses_beyond_it_with_429_and_retry_after(api: TestClient[Any]) -> None:
    fid, vid = echo(api)
    path = f"/v2/nvcf/functions/{fid}/versions/{vid}"
    # A day's window, so the test never straddles a boundary (but at midnight UTC).
    limit = {"rateLimit": {"rateLimit": "2-D", "perUserRate": "1-D"}}
    assert api.put(path, json=limit, headers=bearer()).status_code == 200
    other = mint(api, "invoke_function")  # a second key of the same account
    assert invoke(api, fid, {"n": 1}).status_code == 200
    doc = problem(invoke(api, fid, {"n": 2}), 429)  # this key's one a day is used
    assert "caller rate limit of 1 per day" in doc["detail"], doc
    assert invoke(api, fid, {"n": 3}, headers=bearer(other)).status_code == 200
    r = invoke(api, fid, {"n": 4}, headers=bearer(other), vid=vid)
    doc = problem(r, 429)  # the account's two a day are used
    assert "account rate limit of 2 per day (2-D)" in doc["detail"], doc
    assert 1 <= int(r.headers["retry-after"]) <= 86400
    # a refused call never reached the container, and clearing the limit applies at once
    assert api.put(path, json={"rateLimit": None}, headers=bearer()).status_code == 200
    r = invoke(api, fid, {"n": 5})
    assert r.status_code == 200 and r.json()["body"] == {"n": 5}


def test_queue_depth_position_and_429_while_saturated(
    start: Callable[..., TestClient[Any]],
) -> None:
    api = start(NVCF_LITE_INVOCATION__MAX_QUEUE_PER_FUNCTION="4")
    fid, vid = echo(api, maxRequestConcurrency=1)
    r = invoke(api, fid, {"delay": 4}, poll=1)
    assert r.status_code == 202 and r.headers["nvcf-status"] == "in-progress"
    running = reqid(r)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda n: invoke(api, fid, {"n": n}, poll=1), range(3)))
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert {a.headers["nvcf-status"] for a in answers} == {"pending-evaluation"}
    assert answers[0].headers["nvcf-lite-detail"] == "waiting for a free instance slot"
    queued = sorted((a.json() if a.content else None, reqid(a)) for a in answers)
    assert all(body is None for body, _ in queued)

    q1 = api.get(f"/v2/nvcf/queues/functions/{fid}", headers=bearer())
    assert q1.status_code == 200, q1.text
    entry = {"functionVersionId": vid, "functionName": "echo", "functionStatus": "ACTIVE"}
    assert q1.json() == {"functionId": fid, "queues": [{**entry, "queueDepth": 3}]}
    q2 = api.get(f"/v2/nvcf/queues/functions/{fid}/versions/{vid}", headers=bearer())
    assert q2.json() == q1.json()
    positions = {}
    for rid in [running, *(reqid(a) for a in answers)]:
        r = api.get(f"/v2/nvcf/queues/{rid}/position", headers=bearer())
        assert r.status_code == 200, r.text
        assert r.json()["functionId"] == fid and r.json()["functionVersionId"] == vid
        positions[rid] = r.json()["positionInQueue"]
    assert positions[running] == 0
    assert sorted(positions[reqid(a)] for a in answers) == [1, 2, 3]

    full = invoke(api, fid, {"n": 9}, poll=1)
    doc = problem(full, 429)
    assert "queue is full" in doc["detail"] and int(full.headers["retry-after"]) >= 1

    last = max(answers, key=lambda a: positions[reqid(a)])
    r = status(api, reqid(last), poll=15)
    assert r.status_code == 200, r.text
    problem(api.get(f"/v2/nvcf/queues/{reqid(last)}/position", headers=bearer()), 404)
    q1 = api.get(f"/v2/nvcf/queues/functions/{fid}", headers=bearer())
    assert q1.json()["queues"][0]["queueDepth"] == 0
    unknown = "00000000-0000-4000-8000-000000000000"
    problem(api.get(f"/v2/nvcf/queues/functions/{unknown}", headers=bearer()), 404)
    problem(api.get(f"/v2/nvcf/queues/functions/{fid}/versions/{unknown}", headers=bearer()), 404)


def test_queued_requests_of_an_undeployed_version_fail_clearly(api: TestClient[Any]) -> None:
    fid, vid = echo(api, maxRequestConcurrency=1)
    assert invoke(api, fid, {"delay": 3}, poll=1).status_code == 202
    r = invoke(api, fid, {"n": 2}, poll=1)
    assert r.status_code == 202 and r.headers["nvcf-status"] == "pending-evaluation"
    rid = reqid(r)
    d = api.delete(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
    assert d.status_code == 200, d.text
    r = status(api, rid, poll=10)
    doc = problem(r, 404)
    assert "not deployed" in doc["detail"] and doc["requestId"] == rid
    assert r.headers["nvcf-status"] == "errored" and reqid(r) == rid
    problem(invoke(api, fid, {}), 404)


# -- streaming and path-preserving calls (§2.3.6, §2.3.9) ----------------------------------------


SSE = {**bearer(), "Accept": "text/event-stream"}


def test_sse_is_passed_through_verbatim(api: TestClient[Any], tmp_path: Path) -> None:
    fid, _ = echo(api)
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}",
        json={"events": 3, "interval": 0.05},
        headers={**SSE, "NVCF-POLL-SECONDS": "1"},  # no 202 for streams
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["nvcf-status"] == "fulfilled"
    rid = reqid(r)
    assert r.content == b'data: {"i": 0}\n\ndata: {"i": 1}\n\ndata: {"i": 2}\n\ndata: [DONE]\n\n'
    wait_for(lambda: not response_dir(tmp_path, rid).exists(), 5, "the request folder removed")
    problem(status(api, rid), 404)  # delivered: nothing to poll
    # no wrapping of container errors, no zip, on the SSE path
    r = api.post(f"/v2/nvcf/pexec/functions/{fid}", json={"status": 503}, headers=SSE)
    assert r.status_code == 503 and r.json() == {"error": "boom"}
    assert r.headers["nvcf-status"] == "errored"
    r = api.post(
        f"/v2/nvcf/pexec/functions/{fid}", json={"largeOutputFiles": {"a": "x"}}, headers=SSE
    )
    assert r.status_code == 200 and r.content.startswith(b"data: ")


def test_an_sse_answer_to_a_plain_call_is_returned_whole(api: TestClient[Any]) -> None:
    fid, _ = echo(api)
    r = invoke(api, fid, {"stream": True, "events": 2, "interval": 0.05}, poll=5)
    assert r.status_code == 200, r.text
    assert r.content == b'data: {"i": 0}\n\ndata: {"i": 1}\n\ndata: [DONE]\n\n'


def test_path_preserving_invocation_reaches_the_container_unchanged(api: TestClient[Any]) -> None:
    fid, vid = echo(api)
    route = {**bearer(), "Function-ID": fid}
    r = api.put(
        "/any/path/here?x=1&y=two",
        content=b"plain text body",
        headers={**route, "Content-Type": "text/plain", "X-Custom": "yes"},
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    assert (seen["method"], seen["path"], seen["rawQuery"]) == (
        "PUT",
        "/any/path/here",
        "x=1&y=two",
    )
    assert seen["body"] == "plain text body" and seen["headers"]["content-type"] == "text/plain"
    assert seen["headers"]["x-custom"] == "yes" and "authorization" not in seen["headers"]
    assert seen["headers"]["nvcf-reqid"] == reqid(r)
    assert r.headers["nvcf-status"] == "fulfilled"
    r = api.get("/a%20b/c%2Fd/%7Euser?q=%41&x=a+b&x=2", headers=route)
    assert (r.json()["path"], r.json()["rawQuery"]) == ("/a%20b/c%2Fd/%7Euser", "q=%41&x=a+b&x=2")
    for method in ("GET", "DELETE", "PATCH", "OPTIONS"):
        r = api.request(method, "/v1/models", headers={**route, "Function-Version-ID": vid})
        assert r.status_code == 200, (method, r.text)
        assert (r.json()["method"], r.json()["path"]) == (method, "/v1/models")
    # HEAD too (any method, §2.3.9): the container's status and headers, no body
    r = api.head("/v1/models", headers=route)
    assert r.status_code == 200 and r.content == b"", r.headers
    assert r.headers["nvcf-status"] == "fulfilled" and r.headers["nvcf-reqid"]
    assert r.headers["content-type"].startswith("application/json")
    problem_head = api.head("/v1/models", headers={"Function-ID": fid})
    assert problem_head.status_code == 401 and problem_head.content == b""
    # the container's own status and body, not wrapped
    r = api.post("/v1/chat/x", json={"status": 404, "errorMessage": "no such model"}, headers=route)
    assert r.status_code == 404 and r.json() == {"error": "no such model"}
    # who may call it, and what is not a function
    problem(api.get("/v1/models", headers={"Function-ID": fid}), 401)
    problem(api.get("/v1/models", headers={**route, **bearer(mint(api, "list_functions"))}), 403)
    other = mint(api, "invoke_function", functions=(f"{_other(api)}/*",))
    problem(api.get("/v1/models", headers={**route, **bearer(other)}), 403)
    problem(api.get("/v1/models", headers={**bearer(), "Function-ID": "nope"}), 404)
    unknown = {**bearer(), "Function-ID": "00000000-0000-4000-8000-000000000000"}
    problem(api.get("/v1/models", headers=unknown), 404)
    problem(api.get("/v1/models", headers={**route, "Function-Version-ID": "bad"}), 404)
    problem(api.get("/no/such/route", headers=bearer()), 404)
