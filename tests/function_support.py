"""Helpers shared by the function management tests: bodies, path families, create/assert."""

from __future__ import annotations

import re
from typing import Any

from conftest import bearer
from litestar.testing import TestClient

FAMILIES = ("/v2/nvcf", "/v2/orgs/local/nvcf", "/v2/orgs/local/teams/t1/nvcf")
PLAIN = FAMILIES[0]
BODY: dict[str, Any] = {
    "name": "echo",
    "inferenceUrl": "/echo",
    "containerImage": "nvcr.io/org/echo:1",
}
ISO_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SECRET_VALUE = "s3cr3t-value-never-shown"


def body(**overrides: Any) -> dict[str, Any]:
    """BODY with fields replaced; a value of `...` removes the field."""
    out = {**BODY, **overrides}
    return {k: v for k, v in out.items() if v is not ...}


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["title"] and doc["detail"] and doc["type"]
    return doc


def create(
    client: TestClient[Any],
    payload: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    prefix: str = PLAIN,
) -> dict[str, Any]:
    headers = bearer(key) if key else bearer()
    r = client.post(f"{prefix}/functions", json=payload or BODY, headers=headers)
    assert r.status_code == 200, r.text
    fn: dict[str, Any] = r.json()["function"]
    return fn


def add_version(
    client: TestClient[Any], function_id: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    r = client.post(
        f"{PLAIN}/functions/{function_id}/versions", json=payload or BODY, headers=bearer()
    )
    assert r.status_code == 200, r.text
    fn: dict[str, Any] = r.json()["function"]
    return fn


def version_path(fn: dict[str, Any], prefix: str = PLAIN) -> str:
    return f"{prefix}/functions/{fn['id']}/versions/{fn['versionId']}"
