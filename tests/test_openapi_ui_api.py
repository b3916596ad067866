"""The Swagger UI at /openapi works offline: every script, style and icon it loads is served by
nvcf-lite itself from the files vendored in the package (nvcf_lite/api/static/swagger-ui)."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

STATIC = Path(__file__).parents[1] / "nvcf_lite" / "api" / "static" / "swagger-ui"
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _Refs(HTMLParser):
    """Every URL the page makes the browser fetch: <script src>, <link href>, <img src>."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (tag, name) in {("script", "src"), ("link", "href"), ("img", "src")}:
                self.urls.append(value)


def test_swagger_ui_loads_nothing_from_other_hosts(client: TestClient[Any]) -> None:
    for page in ("/openapi", "/openapi/swagger"):
        r = client.get(page)  # no Authorization header: the docs are public
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "SwaggerUIBundle(" in r.text
        refs = _Refs()
        refs.feed(r.text)
        assert len(refs.urls) == 4, refs.urls  # css, bundle, preset, favicon
        assert not [u for u in refs.urls if re.match(r"^(https?:)?//", u)], refs.urls
        assert not re.search(r"https?://(cdn|unpkg|fonts)\.", r.text)
        for url in refs.urls:
            asset = client.get(url)
            assert asset.status_code == 200, url
            name = url.rsplit("/", 1)[1]
            assert asset.headers["content-type"].startswith(TYPES[Path(name).suffix]), url
            assert asset.content == (STATIC / name).read_bytes()


def test_the_vendored_files_are_the_pinned_release(client: TestClient[Any]) -> None:
    """The README in the static folder names each file's sha256; they still match."""
    readme = (STATIC / "README.md").read_text()
    pinned = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    shipped = {p.name for p in STATIC.iterdir() if p.name != "README.md"}
    assert set(pinned) == shipped
    for name, digest in pinned.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    assert client.get("/openapi/static/swagger-ui/nothing.js").status_code == 404
    assert client.get("/openapi/openapi.json").json()["info"]["title"] == "nvcf-lite"


def test_every_operation_documents_its_problem_answers(client: TestClient[Any]) -> None:
    doc = client.get("/openapi/openapi.json").json()
    assert doc["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
    ]
    operations = 0
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            operations += 1
            responses = operation["responses"]
            for code in ("400", "401", "403", "404", "413", "429", "default"):
                content = responses[code]["content"]
                assert list(content) == ["application/problem+json"], (path, method, code)
            if method != "get":
                assert "409" in responses, (path, method)
            if "/pexec/" in path:
                assert {"502", "503", "504"} <= set(responses), (path, method)
    assert operations > 100
