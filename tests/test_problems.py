"""Every problem+json answer has one shape (spec §5), whoever produced it: an `NvcfError`
subclass, the framework (400, 404, 405, 413), or the outcome of a request (worker and container
errors: 502, 503, 504, 429). All of them come from `errors.problem_body`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import bearer, make_config
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient

from nvcf_lite import errors
from nvcf_lite.api.invocations import reply_parts
from nvcf_lite.api.problems import EXCEPTION_HANDLERS, problem_of
from nvcf_lite.domain.invocation_rules import container_error, problem
from nvcf_lite.errors import KINDS, TYPE_PREFIX, NvcfError

FIELDS = {"type", "title", "status", "detail", "instance"}
PREFIXES = (
    TYPE_PREFIX,
    errors.WORKER_PREFIX,
    errors.CONTAINER_PREFIX,
    "urn:inference-connection:problem-details:",
)
RID = "8f1d2c3b-0000-4000-8000-000000000001"


def subclasses(cls: type[NvcfError]) -> Iterator[type[NvcfError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


KINDS_OF_ERRORS = sorted(set(subclasses(NvcfError)), key=lambda c: c.__name__)


def assert_shape(
    status: int, headers: Any, raw: bytes, instance: str, *, request_id: str | None = None
) -> dict[str, Any]:
    media = headers.get("content-type")
    assert media == "application/problem+json", headers
    doc: dict[str, Any] = msgspec.json.decode(raw)
    assert set(doc) == FIELDS | ({"requestId"} if request_id else set()), doc
    assert doc["status"] == status
    assert doc["title"] == HTTPStatus(status).phrase
    assert doc["detail"] and isinstance(doc["detail"], str)
    assert doc["instance"] == instance
    assert doc["type"].startswith(PREFIXES), doc["type"]
    if doc["type"].startswith(TYPE_PREFIX):
        assert doc["type"] == TYPE_PREFIX + KINDS[status]
    if request_id:
        assert doc["requestId"] == request_id
    return doc


# -- the table of kinds ------------------------------------------------------------------------


def test_every_error_kind_has_a_row_in_the_one_table() -> None:
    assert len(KINDS_OF_ERRORS) == 12  # a new kind needs its row in KINDS, then here
    for cls in KINDS_OF_ERRORS:
        assert cls.status in KINDS, cls
        assert cls("x").type == TYPE_PREFIX + KINDS[cls.status]
    assert KINDS[409] == "exists"  # hosted NVCF's name for a conflict (spec §5.1)
    assert errors.kind(418) == "im-a-teapot" and errors.kind(599) == "error"


# -- NvcfError subclasses, through the Litestar handler and the fast path's ladder ------------


@pytest.fixture(scope="module")
def raiser() -> Iterator[TestClient[Any]]:
    by_name = {cls.__name__: cls for cls in KINDS_OF_ERRORS}

    @get("/raise/{name:str}", sync_to_thread=False)
    def raise_it(name: FromPath[str]) -> None:
        raise by_name[name]("what went wrong", headers={"X-Why": name})

    app = Litestar([raise_it], exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("cls", KINDS_OF_ERRORS, ids=lambda c: c.__name__)
def test_each_error_kind_renders_one_shape(raiser: TestClient[Any], cls: type[NvcfError]) -> None:
    path = f"/raise/{cls.__name__}"
    r = raiser.get(path)
    assert r.status_code == cls.status
    doc = assert_shape(cls.status, r.headers, r.content, path)
    assert doc["detail"] == "what went wrong" and r.headers["x-why"] == cls.__name__
    # the fast path's answer to the same exception is byte for byte the same
    exc = cls("what went wrong", headers={"X-Why": cls.__name__})
    status, headers, body = problem_of(exc, "GET", path)
    assert (status, headers, body) == (cls.status, [("X-Why", cls.__name__)], r.content)


def test_an_unexpected_exception_is_a_500_problem(caplog: pytest.LogCaptureFixture) -> None:
    status, headers, body = problem_of(RuntimeError("disk on fire"), "POST", "/p")
    doc = assert_shape(500, {"content-type": "application/problem+json"}, body, "/p")
    assert status == 500 and headers == [] and doc["detail"] == "Internal error: disk on fire"
    assert "unhandled error on POST /p" in caplog.text


# -- the framework's own errors ----------------------------------------------------------------


@pytest.fixture
def small(app_factory: Callable[..., TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    return app_factory(make_config(tmp_path / "d", NVCF_LITE_SERVER__MAX_BODY_BYTES="100"))


FID = "8f1d2c3b-0000-4000-8000-000000000002"
FRAMEWORK = {
    "400 validation": (400, "POST", "/v2/nvcf/functions", {"content": b"{not json"}),
    "400 path parameter": (400, "GET", "/v2/nvcf/deployments/not-a-uuid", {}),
    "404 route": (404, "GET", "/v2/nvcf/no/such/route", {}),
    "405 method": (405, "GET", f"/v2/nvcf/pexec/functions/{FID}", {}),
    "413 body": (413, "POST", "/v2/nvcf/functions", {"content": b"x" * 500}),
    "413 fast path": (413, "POST", f"/v2/nvcf/pexec/functions/{FID}", {"content": b"x" * 500}),
}


@pytest.mark.parametrize("case", FRAMEWORK, ids=str)
def test_framework_errors_render_one_shape(small: TestClient[Any], case: str) -> None:
    status, method, path, kwargs = FRAMEWORK[case]
    headers = {**bearer(), "Content-Type": "application/json"}
    r = small.request(method, path, headers=headers, **kwargs)
    assert r.status_code == status, r.text
    doc = assert_shape(status, r.headers, r.content, path)
    if status == 413:  # both routes name the limit (api/problems.py)
        assert doc["detail"] == "Request body exceeds the limit of 100 bytes"


# -- outcomes of a request: worker and container errors ----------------------------------------

OUTCOMES = {
    "502 container": lambda p: container_error(502, b'{"error": "upstream"}', p, RID),
    "503 worker": lambda p: problem(503, errors.WORKER_ERROR, "cannot start", p, RID),
    "504 worker": lambda p: problem(504, errors.GATEWAY_TIMEOUT, "no instance", p, RID),
    "429 container": lambda p: container_error(429, b"not json", p, RID),
    "500 worker": lambda p: problem(500, errors.WORKER_ERROR, "crashed", p, RID),
    "404 gone": lambda p: problem(404, errors.GONE, "undeployed", p, RID),
}


@pytest.mark.parametrize("case", OUTCOMES, ids=str)
def test_request_outcomes_render_one_shape(case: str) -> None:
    path = f"/v2/nvcf/pexec/functions/{FID}"
    outcome = OUTCOMES[case](path)
    status, headers, body, media = reply_parts(RID, outcome)
    assert media == "application/problem+json"
    named = {n.lower(): v for n, v in headers}
    assert named["nvcf-status"] == "errored" and named["nvcf-reqid"] == RID
    assert_shape(status, {"content-type": media}, body, path, request_id=RID)


def test_renderers_agree_on_title_and_detail_fallbacks() -> None:
    odd = msgspec.json.decode(container_error(599, b"", "/p", RID).body)
    assert odd["title"] == "Error" and odd["type"] == errors.CONTAINER_PREFIX + "error"
    empty = msgspec.json.decode(problem(503, errors.WORKER_ERROR, "", "/p", RID).body)
    assert empty["detail"] == "Service Unavailable"  # the reason phrase when empty (spec §5.1)
    _, _, raw = problem_of(errors.Unavailable(""), "GET", "/p")
    assert msgspec.json.decode(raw)["detail"] == "Service Unavailable"
    teapot = msgspec.json.decode(container_error(418, b"", "/p", RID).body)
    assert teapot["type"] == errors.CONTAINER_PREFIX + "im-a-teapot"
