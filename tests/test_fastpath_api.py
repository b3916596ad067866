"""The pexec fast path (api/fastpath.py) answers exactly like the Litestar route it shadows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import bearer, make_config
from litestar.testing import TestClient

from nvcf_lite.api.fastpath import claims

FID = str(uuid.uuid4())


def scope(path: str, method: str = "POST", accept: bytes = b"*/*") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": [(b"accept", accept)]}


def test_claims_only_plain_non_streaming_pexec_posts_and_status_polls() -> None:
    assert claims(scope(f"/v2/nvcf/pexec/functions/{FID}"))
    assert claims(scope(f"/v2/nvcf/pexec/functions/{FID}/versions/{FID}"))
    assert not claims(scope(f"/v2/nvcf/pexec/functions/{FID}", method="GET"))
    assert not claims(scope(f"/v2/nvcf/pexec/functions/{FID}", accept=b"text/event-stream"))
    assert not claims(scope(f"/v2/orgs/local/nvcf/pexec/functions/{FID}"))
    assert not claims(scope(f"/v2/nvcf/pexec/status/{FID}"))  # a POST there is Litestar's 405
    assert claims(scope(f"/v2/nvcf/pexec/status/{FID}", method="GET"))  # I3 polls
    assert not claims(scope(f"/v2/orgs/local/nvcf/pexec/status/{FID}", method="GET"))
    assert not claims(scope(f"/v2/nvcf/pexec/status/{FID}/x", method="GET"))
    assert not claims({"type": "lifespan"})


def test_same_answers_as_the_framework_route(client: TestClient[Any]) -> None:
    for prefix in ("/v2/nvcf", "/v2/orgs/local/nvcf"):  # fast path, then the Litestar route
        path = f"{prefix}/pexec/functions/{FID}"
        r = client.post(path, json={})
        assert r.status_code == 401, prefix
        assert r.headers["content-type"].startswith("application/problem+json")
        r = client.post(path, json={}, headers=bearer())
        assert r.status_code == 404, prefix
        body = r.json()
        assert body["status"] == 404 and FID in body["detail"]
        assert body["instance"] == path
        r = client.post(path, json={}, headers={**bearer(), "NVCF-POLL-SECONDS": "x"})
        assert r.status_code == 400, prefix  # the poll window is read before the function
        assert r.json()["detail"].startswith("NVCF-POLL-SECONDS"), prefix


def test_oversized_body_is_413(app_factory: Callable[..., TestClient[Any]], tmp_path: Path) -> None:
    small = app_factory(make_config(tmp_path / "d", NVCF_LITE_SERVER__MAX_BODY_BYTES="100"))
    r = small.post(f"/v2/nvcf/pexec/functions/{FID}", content=b"x" * 500, headers=bearer())
    assert r.status_code == 413
    assert r.json()["status"] == 413
