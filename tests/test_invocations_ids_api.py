"""A malformed id in an invocation or queue path, or in I5's Function-ID headers, is a 400
problem that names it (never the catch-all 404), and only once the key has been checked."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import bearer
from function_support import problem
from litestar.testing import TestClient

GOOD = "6f9d9c3e-2f7a-4b1e-9d2a-0c6c4c1e5a10"
# (a literal ".." is resolved by the client before it is sent; its encoded form is not)
BAD = ["not-a-uuid", "%2e%2e", "-" * 36, "0" * 36, "6f9d9c3e-2f7a-4b1e-9d2a-0c6c4c1e5a1"]
ROUTES = [
    ("POST", "/v2/nvcf/pexec/functions/{id}", "function id"),
    ("POST", "/v2/orgs/local/nvcf/pexec/functions/{id}", "function id"),
    ("POST", "/v2/nvcf/pexec/functions/{id}/versions/" + GOOD, "function id"),
    ("POST", "/v2/nvcf/pexec/functions/" + GOOD + "/versions/{id}", "function version id"),
    ("GET", "/v2/nvcf/pexec/status/{id}", "request id"),
    ("GET", "/v2/nvcf/queues/functions/{id}", "function id"),
    ("GET", "/v2/nvcf/queues/functions/" + GOOD + "/versions/{id}", "function version id"),
    ("GET", "/v2/nvcf/queues/{id}/position", "request id"),
]


@pytest.mark.parametrize(("method", "template", "what"), ROUTES)
@pytest.mark.parametrize("bad", BAD)
def test_a_malformed_id_in_the_path_is_a_400_naming_it(
    client: TestClient[Any], method: str, template: str, what: str, bad: str
) -> None:
    path = template.format(id=bad)
    r = client.request(method, path, json={}, headers=bearer())
    doc = problem(r, 400)
    shown = ".." if bad == "%2e%2e" else bad  # the path is decoded before routing
    assert doc["detail"] == f"Invalid request: {what} '{shown}' is not a UUID", doc
    assert client.request(method, path, json={}).status_code == 401  # the key comes first


def test_malformed_function_id_headers_of_a_path_preserving_call_are_400(
    client: TestClient[Any],
) -> None:
    r = client.post("/any/path", headers={**bearer(), "Function-ID": "../etc"}, json={})
    assert problem(r, 400)["detail"] == "Invalid request: Function-ID header '../etc' is not a UUID"
    headers = {**bearer(), "Function-ID": GOOD, "Function-Version-ID": "x"}
    doc = problem(client.post("/any/path", headers=headers, json={}), 400)
    assert doc["detail"] == "Invalid request: Function-Version-ID header 'x' is not a UUID"


def test_a_well_formed_unknown_id_is_still_404(client: TestClient[Any]) -> None:
    for method, template, _ in ROUTES:
        r = client.request(method, template.format(id=GOOD), json={}, headers=bearer())
        assert r.status_code == 404, (method, template, r.text)
