"""The pexec fast path (api/fastpath.py) and the Litestar route it shadows answer alike.

Each request of a matrix (401, 403, 404, 400, 413, 429, 200, 202 then poll) is sent three
ways: the fast path (`/v2/nvcf/pexec/...`), the Litestar route on the same path (the app's
`server.fast_path` switch off) and the Litestar route of the org path family
(`/v2/orgs/local/nvcf/pexec/...`). Status, every header and the body must be equal once what
differs by design is normalised: the request id, and the path in `instance`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import bearer, call, make_config
from invocation_support import docker_config, echo
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime

ROUTES = ("fast", "litestar", "org")
PLAIN, ORG = "/v2/nvcf", "/v2/orgs/local/nvcf"
LIMIT = 4096  # server.max_body_bytes of these apps
UNKNOWN = str(uuid.uuid4())
Send = Callable[..., Any]  # (route, fid, body, **options) -> the normalised answer


def route_of(api: TestClient[Any], route: str) -> str:
    """The path prefix for `route`, with the app's fast path switched to match."""
    api.app.fast_path = route == "fast"  # type: ignore[attr-defined]
    return ORG if route == "org" else PLAIN


def normalised(r: Any, path: str) -> tuple[int, dict[str, str], Any]:
    """Status, headers and body with the request id and the called path replaced."""
    rid = r.headers.get("nvcf-reqid", "")
    if rid:
        assert len(rid) == 36, r.headers

    def clean(text: str) -> str:
        if path:
            # a request's own outcomes name the plain pexec path whichever family was called
            # (`invocation_rules.client_path`), its refusals the path called
            text = text.replace(path, "<path>").replace(path.replace(ORG, PLAIN), "<path>")
        return text.replace(rid, "<reqid>") if rid else text

    headers = {name.lower(): clean(value) for name, value in r.headers.items()}
    headers.pop("content-length", None)  # follows the body, which is compared normalised
    raw = r.content
    if not raw:
        return r.status_code, headers, None
    body: Any = msgspec.json.decode(clean(raw.decode()).encode())
    if isinstance(body, dict) and isinstance(body.get("headers"), dict):
        # the echo: the container got the same request (less its own hostname and env)
        body.pop("hostname", None)
        body.pop("env", None)
    return r.status_code, headers, body


def sender(api: TestClient[Any]) -> Send:
    def send(
        route: str,
        fid: str,
        payload: Any = None,
        *,
        vid: str | None = None,
        key: str | None = "admin",
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        prefix = route_of(api, route)
        path = f"{prefix}/pexec/functions/{fid}" + (f"/versions/{vid}" if vid else "")
        sent = {**(bearer() if key == "admin" else bearer(key) if key else {}), **(headers or {})}
        if content is not None:
            r = api.post(path, content=content, headers=sent, follow_redirects=False)
        else:
            r = api.post(path, json=payload or {}, headers=sent, follow_redirects=False)
        return normalised(r, path)

    return send


def same_three_ways(send: Send, *args: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    answers = {route: send(route, *args, **kwargs) for route in ROUTES}
    fast = answers["fast"]
    for route in ("litestar", "org"):
        assert answers[route] == fast, (route, answers[route], fast)
    return fast


def mint(api: TestClient[Any], *scopes: str) -> str:
    token, _ = call(api, api.app.state.platform.keys.create, list(scopes), ())
    return str(token)


# -- answers that need no container ----------------------------------------------------------


@pytest.fixture
def bare(app_factory: Callable[..., TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    config = make_config(tmp_path / "d", NVCF_LITE_SERVER__MAX_BODY_BYTES=str(LIMIT))
    return app_factory(config)


def test_refusals_are_the_same_on_both_paths(bare: TestClient[Any]) -> None:
    send = sender(bare)
    status, headers, body = same_three_ways(send, UNKNOWN, key=None)
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert body["instance"] == "<path>" and body["type"].endswith(":unauthorized")
    assert same_three_ways(send, UNKNOWN, key="nvapi-" + "Z" * 64)[0] == 401
    assert same_three_ways(send, UNKNOWN, key=mint(bare, "list_functions"))[0] == 403
    status, _, body = same_three_ways(send, UNKNOWN)
    assert status == 404 and UNKNOWN in body["detail"]
    assert same_three_ways(send, UNKNOWN, vid=UNKNOWN)[0] == 404
    for malformed in ("-" * 36, "0" * 36):  # the fast path's pattern, no uuid: a 400
        status, _, body = same_three_ways(send, malformed)
        assert status == 400 and body["detail"].endswith(f"'{malformed}' is not a UUID")
        assert same_three_ways(send, UNKNOWN, vid=malformed)[0] == 400
        assert same_three_ways(send, malformed, key=None)[0] == 401  # the key comes first
    for bad in ("x", "-1.5", "99999"):
        status, _, body = same_three_ways(send, UNKNOWN, headers={"NVCF-POLL-SECONDS": bad})
        assert status == 400 and "NVCF-POLL-SECONDS" in body["detail"], bad
    status, _, body = same_three_ways(send, UNKNOWN, content=b"x" * (LIMIT + 1))
    assert status == 413 and body["type"].endswith(":payload-too-large")


def test_status_poll_refusals_are_the_same_on_both_paths(bare: TestClient[Any]) -> None:
    """I3 (`GET .../pexec/status/{id}`) is the fast path's too: 401, 403, 400, 404 alike."""

    def poll(route: str, rid: str, key: str | None = "admin", **headers: str) -> Any:
        path = f"{route_of(bare, route)}/pexec/status/{rid}"
        sent = {**(bearer() if key == "admin" else bearer(key) if key else {}), **headers}
        return normalised(bare.get(path, headers=sent), path)

    def same(*args: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        return same_three_ways(poll, *args, **kwargs)  # type: ignore[arg-type]

    status, headers, body = same(UNKNOWN, key=None)
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert body["instance"] == "<path>" and body["type"].endswith(":unauthorized")
    assert same(UNKNOWN, key="nvapi-" + "Z" * 64)[0] == 401
    assert same(UNKNOWN, key=mint(bare, "list_functions"))[0] == 403
    status, _, body = same(UNKNOWN)
    assert status == 404 and UNKNOWN in body["detail"]
    for malformed in ("x", "0" * 36):
        status, _, body = same(malformed)
        assert status == 400 and body["detail"].endswith(f"'{malformed}' is not a UUID")
        assert same(malformed, key=None)[0] == 401  # the key comes first
    status, _, body = same(UNKNOWN, **{"NVCF-POLL-SECONDS": "x"})
    assert status == 400 and "NVCF-POLL-SECONDS" in body["detail"]


def test_the_switch_sends_pexec_through_the_framework(
    bare: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nvcf_lite.api import fastpath

    served: list[str] = []
    real = fastpath.serve

    async def spy(state: Any, scope: Any, *rest: Any) -> None:
        served.append(scope["path"])
        await real(state, scope, *rest)

    monkeypatch.setattr(fastpath, "serve", spy)
    path = f"{PLAIN}/pexec/functions/{UNKNOWN}"
    assert bare.post(path, json={}).status_code == 401
    assert served == [path]
    bare.app.fast_path = False  # type: ignore[attr-defined]
    assert bare.post(path, json={}).status_code == 401
    assert served == [path]


def test_fast_path_is_on_by_default_and_configurable(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    assert app_factory().app.fast_path is True  # type: ignore[attr-defined]
    off = make_config(tmp_path / "off", NVCF_LITE_SERVER__FAST_PATH="false")
    assert off.server.fast_path is False
    assert app_factory(off).app.fast_path is False  # type: ignore[attr-defined]


# -- answers from a container: 200, 202 then poll, 429 --------------------------------------


@pytest.fixture
def deployed(
    ns: str, app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> Iterator[tuple[TestClient[Any], str, str]]:  # `ns` first: its cleanup runs after the app
    config = docker_config(
        tmp_path,
        ns,
        NVCF_LITE_SERVER__MAX_BODY_BYTES=str(LIMIT),
        NVCF_LITE_INVOCATION__MAX_QUEUE_PER_FUNCTION="1",
    )
    api = app_factory(config, runtime_factory=docker_runtime)
    fid, vid = echo(api, maxRequestConcurrency=1)
    yield api, fid, vid


def poll_until_done(api: TestClient[Any], rid: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        r = api.get(f"{PLAIN}/pexec/status/{rid}", headers={**bearer(), "NVCF-POLL-SECONDS": "5"})
        if r.status_code != 202 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


@pytest.mark.docker
def test_container_answers_are_the_same_on_both_paths(
    deployed: tuple[TestClient[Any], str, str],
) -> None:
    api, fid, vid = deployed
    send = sender(api)
    payload = {"prompt": "hello", "n": 1}
    status, headers, body = same_three_ways(send, fid, payload)
    assert status == 200 and headers["nvcf-status"] == "fulfilled"
    assert headers["nvcf-reqid"] == "<reqid>" and body["method"] == "POST"
    assert body["bodySize"] == len(msgspec.json.encode(payload))
    assert same_three_ways(send, fid, payload, vid=vid)[0] == 200
    status, _, body = same_three_ways(send, fid, {"status": 400, "errorMessage": "bad input"})
    assert status == 400 and body["type"] == "urn:inference-service:problem-details:bad-request"
    assert body["requestId"] == "<reqid>" and body["detail"] == "bad input"
    status, _, _ = same_three_ways(send, fid, headers={"NVCF-POLL-SECONDS": "x"})
    assert status == 400
    assert same_three_ways(send, fid, content=b"x" * (LIMIT + 1))[0] == 413


@pytest.mark.docker
def test_pending_full_queue_and_poll_are_the_same_on_both_paths(
    deployed: tuple[TestClient[Any], str, str],
) -> None:
    api, fid, _ = deployed
    send = sender(api)
    polls = []
    for route in ROUTES:
        prefix = route_of(api, route)
        path = f"{prefix}/pexec/functions/{fid}"
        slow = {**bearer(), "NVCF-POLL-SECONDS": "1"}
        r = api.post(path, json={"delay": 1.5}, headers=slow)
        pending = normalised(r, path)
        full = send(route, fid, {"n": 2}, headers={"NVCF-POLL-SECONDS": "1"})
        done = poll_until_done(api, r.headers["nvcf-reqid"])
        polls.append((route, pending, full, normalised(done, "")))
    (_, pending, full, done), *others = polls
    for route, *answers in others:
        assert answers == [pending, full, done], route
    assert pending[0] == 202 and pending[1]["nvcf-status"] in ("in-progress", "pending-evaluation")
    assert full[0] == 429 and int(full[1]["retry-after"]) >= 1
    assert "queue is full" in full[2]["detail"]
    assert done[0] == 200 and done[1]["nvcf-status"] == "fulfilled"
