"""Assets over HTTP (spec §2.5, A1-A5) and the signed upload/download URLs, on real SQLite and
real files: shapes, every path family, auth, foreign and unknown ids, the upload's checks
(signature, expiry, headers, second upload, size, full disk), large-result downloads."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from asset_support import PNG, PNG_HEADERS, Client, blob_dir, create, leftovers, local, upload
from conftest import bearer, call, make_config
from function_support import FAMILIES, ISO_INSTANT, PLAIN, UNKNOWN_ID, problem

import nvcf_lite.store.blobs as blobs_module
from nvcf_lite.domain.assets import DESCRIPTION_HEADER
from nvcf_lite.domain.auth import Keys
from nvcf_lite.store.keys import KeysRepo


@pytest.fixture
def foreign_key(client: Client) -> str:
    """An invoke_function key of another account (ncaId) in the same store."""
    keys = Keys(KeysRepo(client.app.state.platform.db), "other-nca", 0)
    token, _ = call(client, keys.create, ["invoke_function"])
    return str(token)


# -- A1-A5 shapes, in every path family ------------------------------------------------------


@pytest.mark.parametrize("prefix", FAMILIES)
def test_a1_to_a5_in_each_path_family(client: Client, prefix: str) -> None:
    created = create(client, prefix)
    assert set(created) == {"assetId", "uploadUrl", "contentType", "description"}
    assert (created["contentType"], created["description"]) == ("image/png", "red-cat-photo")
    aid = created["assetId"]
    url = urlsplit(created["uploadUrl"])
    assert f"{url.scheme}://{url.netloc}" == "http://127.0.0.1:8080"
    assert url.path == f"/_nvcf-lite/uploads/assets/{aid}"
    assert set(parse_qs(url.query)) == {"expires", "signature"}
    assert upload(client, created).status_code == 200

    listed = client.get(f"{prefix}/assets", headers=bearer()).json()  # A2
    assert listed == {
        "assets": [
            {
                "assetId": aid,
                "description": "red-cat-photo",
                "contentType": "image/png",
                "createdAt": listed["assets"][0]["createdAt"],
            }
        ]
    }
    assert ISO_INSTANT.match(listed["assets"][0]["createdAt"])
    one = client.get(f"{prefix}/assets/{aid}", headers=bearer()).json()  # A3
    assert one == {"asset": listed["assets"][0]}
    r = client.get(f"{prefix}/assets/{aid}/content-redirect", headers=bearer())  # A5
    assert r.status_code == 200 and set(r.json()) == {"presignedUrl"}
    assert client.get(local(r.json()["presignedUrl"])).content == b"\x89PNG cat"
    r = client.delete(f"{prefix}/assets/{aid}", headers=bearer())  # A4
    assert r.status_code == 204 and r.content == b""
    assert client.get(f"{prefix}/assets", headers=bearer()).json() == {"assets": []}


def test_public_url_is_the_base_of_signed_urls(
    app_factory: Callable[..., Client], tmp_path: Path
) -> None:
    config = make_config(tmp_path / "d", NVCF_LITE_SERVER__PUBLIC_URL="https://nvcf.example.com/")
    client = app_factory(config)
    created = create(client)
    assert created["uploadUrl"].startswith("https://nvcf.example.com/_nvcf-lite/uploads/assets/")
    assert upload(client, created).status_code == 200  # the proxy forwards the same path


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"description": "d"}, "'contentType' is required in the request payload"),
        ({"contentType": "image/png"}, "'description' is required in the request payload"),
        ({"contentType": "image/png", "description": "  "}, "'description' is required"),
        (
            {"contentType": "png", "description": "d"},
            "Invalid contentType 'png' in the request payload",
        ),
        ({"contentType": "image/png x", "description": "d"}, "Invalid contentType 'image/png x'"),
        ({"contentType": "a/b", "description": "two\nlines"}, "Invalid description"),
        ({"contentType": "a/b", "description": "x" * 1025}, "Invalid description"),
    ],
)
def test_a1_validation_is_400(client: Client, body: dict[str, str], detail: str) -> None:
    doc = problem(client.post(f"{PLAIN}/assets", json=body, headers=bearer()), 400)
    assert doc["detail"].startswith(detail)
    assert leftovers(client) == []


def test_a1_accepts_media_type_parameters_and_rejects_a_non_json_body(client: Client) -> None:
    created = create(client, contentType="text/plain; charset=utf-8", description="notes")
    assert created["contentType"] == "text/plain; charset=utf-8"
    r = client.post(f"{PLAIN}/assets", content=b"{nope", headers=bearer())
    problem(r, 400)


def test_assets_belong_to_the_account(client: Client, foreign_key: str) -> None:
    mine = create(client)
    theirs = create(client, key=foreign_key)
    upload(client, theirs)
    listed = client.get(f"{PLAIN}/assets", headers=bearer()).json()["assets"]
    assert [a["assetId"] for a in listed] == [mine["assetId"]]
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/content-redirect")):
        r = client.request(method, f"{PLAIN}/assets/{theirs['assetId']}{suffix}", headers=bearer())
        doc = problem(r, 404)
        assert doc["detail"] == (
            f"Asset '{theirs['assetId']}' does not exist for account 'nvcf-lite-local'"
        )
    assert (
        client.get(f"{PLAIN}/assets/{theirs['assetId']}", headers=bearer(foreign_key)).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("DELETE", ""), ("GET", "/content-redirect")]
)
def test_unknown_and_malformed_ids(client: Client, method: str, suffix: str) -> None:
    doc = problem(
        client.request(method, f"{PLAIN}/assets/{UNKNOWN_ID}{suffix}", headers=bearer()), 404
    )
    assert doc["detail"] == f"Asset '{UNKNOWN_ID}' does not exist for account 'nvcf-lite-local'"
    problem(client.request(method, f"{PLAIN}/assets/not-a-uuid{suffix}", headers=bearer()), 400)


def test_a4_twice_is_404_and_removes_the_file(client: Client) -> None:
    created = create(client)
    upload(client, created)
    assert leftovers(client) == [created["assetId"]]
    assert (
        client.delete(f"{PLAIN}/assets/{created['assetId']}", headers=bearer()).status_code == 204
    )
    assert leftovers(client) == []
    doc = problem(client.delete(f"{PLAIN}/assets/{created['assetId']}", headers=bearer()), 404)
    assert (
        doc["detail"]
        == f"Asset '{created['assetId']}' does not exist for account 'nvcf-lite-local'"
    )


def test_a5_before_upload_is_409(client: Client) -> None:
    created = create(client)
    doc = problem(
        client.get(f"{PLAIN}/assets/{created['assetId']}/content-redirect", headers=bearer()), 409
    )
    assert "not been uploaded" in doc["detail"]


ENDPOINTS = [
    ("POST", "/assets"),
    ("GET", "/assets"),
    ("GET", f"/assets/{UNKNOWN_ID}"),
    ("DELETE", f"/assets/{UNKNOWN_ID}"),
    ("GET", f"/assets/{UNKNOWN_ID}/content-redirect"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_api_key_and_invoke_function_scope_required(
    client: Client, make_key: Callable[..., str], method: str, path: str
) -> None:
    kwargs: dict[str, Any] = {"json": PNG} if method == "POST" else {}
    problem(client.request(method, f"{PLAIN}{path}", **kwargs), 401)
    no_scope = make_key("list_functions", "register_function")
    doc = problem(client.request(method, f"{PLAIN}{path}", headers=bearer(no_scope), **kwargs), 403)
    assert "invoke_function" in doc["detail"]
    invoker = make_key("invoke_function")
    r = client.request(method, f"{PLAIN}{path}", headers=bearer(invoker), **kwargs)
    assert r.status_code in (200, 204, 404)


def test_other_org_is_404(client: Client) -> None:
    problem(client.get("/v2/orgs/someone-else/nvcf/assets", headers=bearer()), 404)


# -- the signed upload ------------------------------------------------------------------------


def test_upload_stores_the_bytes_without_an_api_key(client: Client) -> None:
    created = create(client)
    data = os.urandom(300_000)
    r = upload(client, created, data)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    path = blob_dir(client) / created["assetId"]
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    row = call(client, client.app.state.platform.assets._repo.get, created["assetId"])
    assert (row.size_bytes, row.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert row.uploaded_at is not None


def test_upload_ignores_an_authorization_header(client: Client) -> None:
    created = create(client)
    assert upload(client, created, Authorization="Bearer nvapi-not-a-real-key").status_code == 200


def test_upload_bigger_than_the_api_body_limit(
    app_factory: Callable[..., Client], tmp_path: Path
) -> None:
    client = app_factory(make_config(tmp_path / "d", NVCF_LITE_SERVER__MAX_BODY_BYTES="2048"))
    created = create(client)
    assert upload(client, created, b"z" * 100_000).status_code == 200
    too_big = {"contentType": "image/png", "description": "x" * 900, "pad": "y" * 2000}
    problem(client.post(f"{PLAIN}/assets", json=too_big, headers=bearer()), 413)


def _tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return f"{parts.path}?{urlencode({k: v for k, v in query.items() if v != '-'})}"


@pytest.mark.parametrize(
    "change",
    [
        {"signature": "A" * 43},
        {"expires": str(int(time.time()) + 999_999)},
        {"expires": "soon"},
        {"signature": "-"},
        {"expires": "-", "signature": "-"},
    ],
)
def test_tampered_or_unsigned_upload_is_403(client: Client, change: dict[str, str]) -> None:
    created = create(client)
    r = client.put(_tamper(created["uploadUrl"], **change), content=b"x", headers=PNG_HEADERS)
    problem(r, 403)
    assert leftovers(client) == []
    assert upload(client, created).status_code == 200  # the real URL still works


def test_a_signature_does_not_move_to_another_asset_or_method(client: Client) -> None:
    first, second = create(client), create(client)
    query = urlsplit(first["uploadUrl"]).query
    r = client.put(
        f"/_nvcf-lite/uploads/assets/{second['assetId']}?{query}", content=b"x", headers=PNG_HEADERS
    )
    problem(r, 403)
    problem(
        client.put(
            f"/_nvcf-lite/uploads/assets/not-a-uuid?{query}", content=b"x", headers=PNG_HEADERS
        ),
        403,
    )
    problem(client.get(f"/_nvcf-lite/blobs/assets/{first['assetId']}?{query}"), 403)


def test_expired_upload_url_is_403(client: Client) -> None:
    platform = client.app.state.platform
    created = create(client)
    path = urlsplit(created["uploadUrl"]).path
    extra = {"content-type": "image/png", DESCRIPTION_HEADER: "red-cat-photo"}
    past = platform.signer.sign("PUT", path, int(time.time()) - 1, extra)
    doc = problem(client.put(f"{path}?{past}", content=b"x", headers=PNG_HEADERS), 403)
    assert "expired" in doc["detail"]
    real_clock = platform.signer.clock
    platform.signer.clock = lambda: real_clock() + 3601  # the URL's hour is over
    try:
        doc = problem(upload(client, created), 403)
        assert "expired" in doc["detail"]
    finally:
        platform.signer.clock = real_clock
    assert leftovers(client) == []


def test_tiny_upload_ttl_from_config(app_factory: Callable[..., Client], tmp_path: Path) -> None:
    client = app_factory(make_config(tmp_path / "d", NVCF_LITE_ASSETS__UPLOAD_URL_TTL_S="1"))
    created = create(client)
    expires = int(parse_qs(urlsplit(created["uploadUrl"]).query)["expires"][0])
    assert expires - time.time() <= 2
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    problem(upload(client, created), 403)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "image/jpeg"},
        {DESCRIPTION_HEADER: "blue-dog-photo"},
        {"Content-Type": "application/octet-stream", DESCRIPTION_HEADER: ""},
    ],
)
def test_headers_must_match_the_reservation(client: Client, headers: dict[str, str]) -> None:
    created = create(client)
    r = client.put(local(created["uploadUrl"]), content=b"x", headers={**PNG_HEADERS, **headers})
    doc = problem(r, 403)
    assert "does not match" in doc["detail"]
    assert leftovers(client) == []


def test_missing_headers_are_403(client: Client) -> None:
    created = create(client)
    problem(client.put(local(created["uploadUrl"]), content=b"x"), 403)


def test_second_upload_is_409_and_keeps_the_first(client: Client) -> None:
    created = create(client)
    assert upload(client, created, b"first").status_code == 200
    doc = problem(upload(client, created, b"second"), 409)
    assert "already been uploaded" in doc["detail"]
    assert (blob_dir(client) / created["assetId"]).read_bytes() == b"first"


def test_upload_after_delete_is_404(client: Client) -> None:
    created = create(client)
    client.delete(f"{PLAIN}/assets/{created['assetId']}", headers=bearer())
    problem(upload(client, created), 404)
    assert leftovers(client) == []


@pytest.fixture
def small(app_factory: Callable[..., Client], tmp_path: Path) -> Client:
    return app_factory(make_config(tmp_path / "small", NVCF_LITE_ASSETS__MAX_ASSET_BYTES="1000"))


def test_over_size_upload_is_413_and_leaves_nothing(small: Client) -> None:
    created = create(small)
    doc = problem(upload(small, created, b"x" * 1001), 413)  # told by Content-Length
    assert "1000 bytes" in doc["detail"]
    assert leftovers(small) == []

    def chunked() -> Iterator[bytes]:  # no Content-Length: found out while streaming
        for _ in range(10):
            yield b"y" * 300

    r = small.put(local(created["uploadUrl"]), content=chunked(), headers=PNG_HEADERS)
    problem(r, 413)
    assert leftovers(small) == []
    assert upload(small, created, b"x" * 1000).status_code == 200  # a retry that fits works


def test_full_disk_is_507_and_leaves_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = create(client)

    def no_space(*_: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blobs_module, "_write", no_space)
    doc = problem(upload(client, created, b"x" * 5000), 507)
    assert "disk space" in doc["detail"]
    assert leftovers(client) == []
    monkeypatch.undo()
    assert upload(client, created).status_code == 200


# -- signed downloads: asset content and large results ---------------------------------------


def test_result_download_with_and_without_authorization(client: Client, tmp_path: Path) -> None:
    assets = client.app.state.platform.assets
    zip_path = tmp_path / "out.zip"
    zip_path.write_bytes(b"PK\x03\x04 result bytes")
    request_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    url = call(client, assets.put_result, request_id, zip_path)
    assert not zip_path.exists()  # moved into the blob store
    assert url.startswith(f"http://127.0.0.1:8080/_nvcf-lite/blobs/results/{request_id}?")
    for headers in ({}, bearer(), {"Authorization": "Bearer nvapi-bogus"}):
        r = client.get(local(url), headers=headers)
        assert r.status_code == 200 and r.content == b"PK\x03\x04 result bytes"
        assert r.headers["content-type"] == "application/zip"
        assert r.headers["content-length"] == str(len(r.content))
        assert f'filename="{request_id}.zip"' in r.headers["content-disposition"]
    problem(client.get(_tamper(url, signature="B" * 43)), 403)
    problem(client.get(local(url).replace("/results/", "/assets/")), 403)
    again = assets.result_url(request_id)
    assert client.get(local(again)).status_code == 200


def test_expired_download_url_is_403(client: Client) -> None:
    created = create(client)
    upload(client, created)
    signer = client.app.state.platform.signer
    path = f"/_nvcf-lite/blobs/assets/{created['assetId']}"
    problem(client.get(f"{path}?{signer.sign('GET', path, int(time.time()) - 5)}"), 403)


def test_download_of_a_deleted_asset_is_404(client: Client) -> None:
    created = create(client)
    upload(client, created)
    url = client.get(
        f"{PLAIN}/assets/{created['assetId']}/content-redirect", headers=bearer()
    ).json()
    client.delete(f"{PLAIN}/assets/{created['assetId']}", headers=bearer())
    problem(client.get(local(url["presignedUrl"])), 404)


def test_signing_key_survives_a_restart(app_factory: Callable[..., Client], tmp_path: Path) -> None:
    config = make_config(tmp_path / "d")
    first = app_factory(config)
    created = create(first)
    key_file = tmp_path / "d" / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    first.__exit__(None, None, None)
    second = app_factory(config)
    assert upload(second, created).status_code == 200


# -- against a real `nvcf-lite serve` ----------------------------------------------------------


def test_interrupted_upload_leaves_nothing_behind(tmp_path: Path) -> None:
    from asset_support import plain_server, put_half_then_close, put_stream, zeros

    with plain_server(tmp_path / "srv") as server:
        created = server.json("POST", f"{PLAIN}/assets", PNG)
        folder = server.data_dir / "blobs" / "assets"
        put_half_then_close(created["uploadUrl"], PNG_HEADERS, 16 * 1024 * 1024)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and folder.exists() and any(folder.iterdir()):
            time.sleep(0.05)
        assert not folder.exists() or list(folder.iterdir()) == [], server.log()
        status, _ = put_stream(created["uploadUrl"], PNG_HEADERS, zeros(4096), 4096)
        assert status == 200  # the reservation is free again: the client may retry
        assert [p.name for p in folder.iterdir()] == [created["assetId"]]
        assert "Traceback" not in server.log()
