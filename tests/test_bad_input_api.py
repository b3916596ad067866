"""Bad input to the control plane, by name (issue #14): wrong content types, invalid UTF-8, NUL
characters in any string, oversized heads and bodies. Each is a problem+json 4xx that says
what was wrong, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import bearer
from function_support import BODY, PLAIN, create, problem
from litestar.testing import TestClient

FUNCTIONS = f"{PLAIN}/functions"


def stored_count(client: TestClient[Any]) -> int:
    r = client.get(FUNCTIONS, headers=bearer())
    assert r.status_code == 200, r.text
    return len(r.json()["functions"])


def post_raw(client: TestClient[Any], path: str, content: bytes, ctype: str | None) -> Any:
    headers = {**bearer(), **({"Content-Type": ctype} if ctype else {})}
    return client.post(path, content=content, headers=headers)


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"]
)
def test_a_body_that_says_it_is_not_json_is_415(client: TestClient[Any], ctype: str) -> None:
    doc = problem(post_raw(client, FUNCTIONS, json.dumps(BODY).encode(), ctype), 415)
    assert doc["type"].endswith(":unsupported-media-type")
    assert "Content-Type: application/json" in doc["detail"] and ctype in doc["detail"]
    assert stored_count(client) == 0


@pytest.mark.parametrize(
    "ctype", [None, "application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_json_media_types_and_no_content_type_are_read(
    client: TestClient[Any], ctype: str | None
) -> None:
    r = post_raw(client, FUNCTIONS, json.dumps(BODY).encode(), ctype)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "raw", [b'{"name": "a\xff\xfe"}', b'{"name": "\xc3\x28"}', b"\xed\xa0\x80", b'"\x80"']
)
def test_invalid_utf8_is_a_400_not_a_500(client: TestClient[Any], raw: bytes) -> None:
    doc = problem(post_raw(client, FUNCTIONS, raw, "application/json"), 400)
    assert doc["detail"].startswith("JSON is malformed: "), doc  # not valid UTF-8, or no JSON
    assert stored_count(client) == 0


NUL = "a\u0000b"


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"name": NUL}, "name"),
        ({"containerImage": NUL}, "containerImage"),
        ({"inferenceUrl": "/e" + NUL}, "inferenceUrl"),
        ({"description": NUL}, "description"),
        ({"tags": ["ok", NUL]}, "tags[1]"),
        ({"containerArgs": NUL}, "containerArgs"),
        ({"containerEnvironment": [{"key": "K", "value": NUL}]}, "containerEnvironment[0].value"),
        ({"secrets": [{"name": "S", "value": {"inner": NUL}}]}, "secrets[0].value.inner"),
        ({"secrets": [{"name": "S", "value": {NUL: "x"}}]}, f"secrets[0].value.{NUL}"),
    ],
)
def test_a_nul_character_in_any_string_is_a_400_naming_where(
    client: TestClient[Any], extra: dict[str, Any], where: str
) -> None:
    r = client.post(FUNCTIONS, json={**BODY, **extra}, headers=bearer())
    doc = problem(r, 400)
    assert doc["detail"] == f"Invalid request: '{where}' contains a NUL character (\\u0000)"
    assert stored_count(client) == 0


def test_nul_characters_are_refused_on_every_json_route(client: TestClient[Any]) -> None:
    fn = create(client)
    version = f"{FUNCTIONS}/{fn['id']}/versions/{fn['versionId']}"
    for method, path, body in [
        ("PUT", version, {"tags": [NUL]}),
        ("POST", f"{FUNCTIONS}/{fn['id']}/versions", {**BODY, "description": NUL}),
        ("POST", f"{PLAIN}/assets", {"contentType": "text/plain", "description": NUL}),
        (
            "POST",
            f"{PLAIN}/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
            {"deploymentSpecifications": [{"gpu": NUL, "maxInstances": 1, "minInstances": 0}]},
        ),
    ]:
        r = client.request(method, path, json=body, headers=bearer())
        assert r.status_code == 400 and "NUL character" in r.json()["detail"], (path, r.text)
    got = client.get(version, headers=bearer()).json()["function"]
    assert "tags" not in got  # the refused update changed nothing


def test_an_oversized_head_is_431_problem_json(client: TestClient[Any]) -> None:
    big = {**bearer(), "X-Big": "a" * (64 * 1024)}
    r = client.get(FUNCTIONS, headers=big)
    doc = problem(r, 431)
    assert doc["detail"] == "Request header fields exceed the limit of 65536 bytes"
    # on the pexec fast path too, and nothing of the request is read
    r = client.post(f"{PLAIN}/pexec/functions/{'0' * 8}-0000-4000-8000-{'0' * 12}", headers=big)
    assert problem(r, 431)["instance"].startswith(f"{PLAIN}/pexec/functions/")
    assert client.get(FUNCTIONS, headers={**bearer(), "X-Ok": "a" * 60_000}).status_code == 200


def test_an_oversized_body_is_413_naming_the_limit(client: TestClient[Any]) -> None:
    payload = {**BODY, "description": "x" * (6 * 1024 * 1024)}
    doc = problem(client.post(FUNCTIONS, json=payload, headers=bearer()), 413)
    assert "5242880 bytes" in doc["detail"]
    assert stored_count(client) == 0


@pytest.mark.parametrize(
    "image",
    ["../../etc/passwd", "/abs/path", "nvcr.io/../x:1", "Upper/Case:1", "x:tag:tag", "x:", "a//b"],
)
def test_an_image_that_is_no_reference_is_refused_at_registration(
    client: TestClient[Any], image: str
) -> None:
    doc = problem(
        client.post(FUNCTIONS, json={**BODY, "containerImage": image}, headers=bearer()), 400
    )
    assert f"'containerImage' '{image}' is not a container image reference" in doc["detail"]
    assert stored_count(client) == 0


@pytest.mark.parametrize(
    "image",
    [
        "nvcr.io/org/team/echo:1.0",
        "ubuntu",
        "127.0.0.1:5000/nvcr/x:latest",
        "localhost/x",
        "[::1]:5000/x",
        "x@sha256:" + "a" * 64,
    ],
)
def test_image_references_docker_accepts_are_registered(
    client: TestClient[Any], image: str
) -> None:
    assert create(client, {**BODY, "containerImage": image})["containerImage"] == image


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "%2e%2e", "-x", "x" * 129])
def test_names_that_could_reach_the_file_system_are_refused(
    client: TestClient[Any], name: str
) -> None:
    problem(client.post(FUNCTIONS, json={**BODY, "name": name}, headers=bearer()), 400)
    assert stored_count(client) == 0
