"""GET .../functions/{id}/logs without Docker: the answers that need no container (an empty log
of an undeployed function, the user errors) and an unreachable engine as a 503 problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import bearer
from function_support import PLAIN, UNKNOWN_ID, create, problem
from litestar.testing import TestClient

from nvcf_lite.runtime.docker import DockerRuntime


def test_an_undeployed_function_has_an_empty_log(client: TestClient[Any]) -> None:
    fn = create(client)
    for path in (
        f"{PLAIN}/functions/{fn['id']}/logs",
        f"{PLAIN}/functions/{fn['id']}/versions/{fn['versionId']}/logs?tail=10",
        f"/v2/orgs/local/nvcf/functions/{fn['id']}/logs",
    ):
        r = client.get(path, headers=bearer())
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain") and r.content == b""


def test_user_errors_are_problems(client: TestClient[Any]) -> None:
    fn = create(client)
    base = f"{PLAIN}/functions/{fn['id']}/logs"
    doc = problem(client.get(f"{base}?tail=-2", headers=bearer()), 400)
    assert "'tail' must be a number of lines >= 0" in doc["detail"]
    problem(client.get(f"{base}?tail=x", headers=bearer()), 400)
    doc = problem(client.get(f"{base}?instanceId=abc", headers=bearer()), 404)
    assert "Instance 'abc'" in doc["detail"]
    problem(client.get(f"{PLAIN}/functions/{UNKNOWN_ID}/logs", headers=bearer()), 404)
    path = f"{PLAIN}/functions/{fn['id']}/versions/{UNKNOWN_ID}/logs"
    problem(client.get(path, headers=bearer()), 404)
    problem(client.get(f"{PLAIN}/functions/not-a-uuid/logs", headers=bearer()), 400)
    problem(client.get(base), 401)


def test_an_unreachable_engine_is_503(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    socket = tmp_path / "no-docker.sock"
    client = app_factory(runtime_factory=lambda config: DockerRuntime.connect(f"unix://{socket}"))
    fn = create(client)
    doc = problem(client.get(f"{PLAIN}/functions/{fn['id']}/logs", headers=bearer()), 503)
    assert "cannot list the function's containers" in doc["detail"]
    assert "not reachable" in doc["detail"]
