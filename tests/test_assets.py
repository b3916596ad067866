"""Units behind the asset API: the signing scheme, the blob store's atomic writes, asset
references for invocations (NVCF-INPUT-ASSET-REFERENCES), staging into a request's folder, and
the sweeper (expiry of assets, reservations and large results)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from asset_support import PNG, create, leftovers, local, upload
from conftest import bearer, call
from function_support import PLAIN, UNKNOWN_ID
from litestar.testing import TestClient

import nvcf_lite.store.blobs as blobs_module
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.signing import Signer
from nvcf_lite.errors import Forbidden, Invalid, NotFound
from nvcf_lite.store.blobs import BlobMissing, BlobStore, BlobTooLarge
from nvcf_lite.store.keys import KeysRepo
from nvcf_lite.store.signing_key import load_signing_key
from nvcf_lite.workers.sweeper import Sweeper

Client = TestClient[Any]
KEY = b"k" * 32


# -- signing --------------------------------------------------------------------------------


def test_sign_and_verify_round_trip() -> None:
    signer = Signer(KEY)
    exp = int(time.time()) + 60
    query = {
        k: v[0] for k, v in parse_qs(signer.sign("PUT", "/p", exp, {"a": "1", "b": "2"})).items()
    }
    assert set(query) == {"expires", "signature"}
    signer.verify("PUT", "/p", query, {"b": "2", "a": "1"})  # order of extras is moot
    for method, path, extra in [
        ("GET", "/p", {"a": "1", "b": "2"}),
        ("PUT", "/q", {"a": "1", "b": "2"}),
        ("PUT", "/p", {"a": "1", "b": "3"}),
        ("PUT", "/p", {"a": "1"}),
    ]:
        with pytest.raises(Forbidden, match="signature"):
            signer.verify(method, path, query, extra)
    with pytest.raises(Forbidden, match="signature"):
        Signer(b"x" * 32).verify("PUT", "/p", query, {"a": "1", "b": "2"})


def test_verify_rejects_expired_missing_and_malformed() -> None:
    signer = Signer(KEY)
    past = {k: v[0] for k, v in parse_qs(signer.sign("GET", "/p", int(time.time()) - 1)).items()}
    with pytest.raises(Forbidden, match="expired"):
        signer.verify("GET", "/p", past)
    with pytest.raises(Forbidden, match="not signed"):
        signer.verify("GET", "/p", {})
    with pytest.raises(Forbidden, match="integer"):
        signer.verify("GET", "/p", {"expires": "x", "signature": "y"})
    with pytest.raises(ValueError):
        Signer(b"short")


def test_extras_cannot_be_shifted_between_fields() -> None:
    signer = Signer(KEY)
    a = signer.signature("PUT", "/p", 1, {"a": "x\nb:1:y"})
    b = signer.signature("PUT", "/p", 1, {"a": "x", "b": "y"})
    assert a != b


def test_signing_key_file(tmp_path: Path) -> None:
    key = load_signing_key(tmp_path / "data")
    path = tmp_path / "data" / "signing.key"
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(tmp_path / "data") == key
    path.write_bytes(b"")  # a crash left it empty: made anew
    assert len(load_signing_key(tmp_path / "data")) == 32
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["signing.key"]


# -- the blob store ---------------------------------------------------------------------------


async def _chunks(*parts: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        if fail_after is not None and i == fail_after:
            raise ConnectionResetError("client went away")
        yield part
        await asyncio.sleep(0)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_write_stream_is_atomic_and_hashes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    big = os.urandom(3 * blobs_module.CHUNK_BYTES + 17)
    size, digest = await store.write_stream("assets", "a1", _chunks(big[:5], big[5:]), 10**9)
    import hashlib

    assert (size, digest) == (len(big), hashlib.sha256(big).hexdigest())
    assert (tmp_path / "assets" / "a1").read_bytes() == big
    assert _files(tmp_path) == ["assets/a1"]


async def test_write_stream_leaves_nothing_on_failure(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(ConnectionResetError):
        await store.write_stream(
            "assets", "a1", _chunks(b"x" * 2_000_000, b"y", fail_after=1), 10**9
        )
    with pytest.raises(BlobTooLarge):
        await store.write_stream("assets", "a2", _chunks(b"x" * 600, b"y" * 600), 1000)
    await asyncio.sleep(0.05)
    assert _files(tmp_path) == []


async def test_write_stream_cancelled_mid_write_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            started.set()
            yield b"z" * blobs_module.CHUNK_BYTES
            await asyncio.sleep(0)

    task = asyncio.create_task(store.write_stream("assets", "a1", endless(), 10**12))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # a write running in its thread finishes, then the temp file goes
        if not _files(tmp_path):
            break
        await asyncio.sleep(0.02)
    assert _files(tmp_path) == []


async def test_put_file_link_into_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "blobs")
    src = tmp_path / "result.zip"
    src.write_bytes(b"PK zip")
    assert await store.put_file("results", "r1", src) == 6 and not src.exists()
    dest = tmp_path / "req" / "r1"
    await store.link_into("results", "r1", dest)
    assert dest.stat().st_ino == store.path("results", "r1").stat().st_ino
    real_link = os.link

    def cross_device(a: Any, b: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    copy = tmp_path / "other" / "r1"
    await store.link_into("results", "r1", copy)
    assert copy.read_bytes() == b"PK zip" and copy.stat().st_ino != dest.stat().st_ino
    monkeypatch.setattr(os, "link", real_link)
    assert await store.delete("results", "r1") is True
    assert await store.delete("results", "r1") is False
    with pytest.raises(BlobMissing):
        await store.link_into("results", "r1", tmp_path / "x")
    with pytest.raises(BlobMissing):
        await store.open("results", "r1")
    with pytest.raises(ValueError):
        store.path("secrets", "r1")
    with pytest.raises(ValueError):
        store.path("assets", "../escape")


def test_partials_from_a_crash_are_removed_at_start(app_factory: Any, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "blobs" / "assets"
    folder.mkdir(parents=True)
    (folder / ".dead.abc.partial").write_bytes(b"half")
    client = app_factory()
    assert leftovers(client) == []


# -- references and staging (the invocation path calls these) --------------------------------


@pytest.fixture
def assets(client: Client) -> Any:
    return client.app.state.platform.assets


@pytest.fixture
def principal(client: Client) -> Any:
    keys = client.app.state.platform.keys
    return call(client, keys.authenticate, bearer()["Authorization"])


def test_resolve_references(client: Client, assets: Any, principal: Any) -> None:
    a, b = create(client), create(client)
    upload(client, a), upload(client, b)
    ida, idb = a["assetId"], b["assetId"]
    header = f" {ida} , ,{idb.upper()},{ida},"
    assert call(client, assets.resolve_references, principal, header) == [ida, idb]
    assert call(client, assets.resolve_references, principal, None) == []
    assert call(client, assets.resolve_references, principal, " , ") == []
    with pytest.raises(Invalid, match="Invalid asset id 'nope' in NVCF-INPUT-ASSET-REFERENCES"):
        call(client, assets.resolve_references, principal, f"{ida},nope")
    with pytest.raises(NotFound, match=f"Asset '{UNKNOWN_ID}' does not exist for account"):
        call(client, assets.resolve_references, principal, f"{ida},{UNKNOWN_ID}")
    pending = create(client)
    with pytest.raises(Invalid, match="not been uploaded"):
        call(client, assets.resolve_references, principal, pending["assetId"])


def test_resolve_references_of_another_account_is_404(client: Client, assets: Any) -> None:
    a = create(client)
    upload(client, a)
    keys = Keys(KeysRepo(client.app.state.platform.db), "other-nca", 0)
    token, _ = call(client, keys.create, ["invoke_function"])
    other = call(client, keys.verify, token)
    with pytest.raises(NotFound):
        call(client, assets.resolve_references, other, a["assetId"])


def test_stage_hard_links_and_survives_delete(client: Client, assets: Any, tmp_path: Path) -> None:
    a, b = create(client), create(client)
    upload(client, a, b"alpha"), upload(client, b, b"beta")
    dest = tmp_path / "inputAssets" / "req-1"
    paths = call(client, assets.stage, [a["assetId"], b["assetId"]], dest)
    assert paths == [dest / a["assetId"], dest / b["assetId"]]
    assert (dest / a["assetId"]).read_bytes() == b"alpha"
    stored = Path(client.app.state.platform.config.store.data_dir) / "blobs" / "assets"
    assert (dest / a["assetId"]).stat().st_ino == (stored / a["assetId"]).stat().st_ino
    assert client.delete(f"{PLAIN}/assets/{a['assetId']}", headers=bearer()).status_code == 204
    assert (dest / a["assetId"]).read_bytes() == b"alpha"  # the queued request keeps its copy
    with pytest.raises(NotFound, match="no longer exists"):
        call(client, assets.stage, [a["assetId"]], tmp_path / "inputAssets" / "req-2")


# -- the sweeper ------------------------------------------------------------------------------


def test_sweep_removes_expired_assets_and_unused_reservations(client: Client) -> None:
    platform = client.app.state.platform
    uploaded, reserved = create(client), create(client)
    upload(client, uploaded)
    now = time.time()
    assert call(client, platform.sweeper.tick, now + 60)["assets"] == 0
    assert call(client, platform.sweeper.tick, now + 3700)["assets"] == 1  # URL hour over
    ids = [a["assetId"] for a in client.get(f"{PLAIN}/assets", headers=bearer()).json()["assets"]]
    assert ids == [uploaded["assetId"]] and reserved["assetId"] not in ids
    assert leftovers(client) == [uploaded["assetId"]]
    assert call(client, platform.sweeper.tick, now + 86401)["assets"] == 1  # a day old
    assert leftovers(client) == []
    assert call(client, platform.assets._repo.get, uploaded["assetId"]) is None


def test_expired_but_unswept_assets_are_not_visible(client: Client) -> None:
    platform = client.app.state.platform
    created = create(client)
    upload(client, created)
    real = platform.signer.clock
    platform.signer.clock = lambda: real() + 86401
    try:
        r = client.get(f"{PLAIN}/assets/{created['assetId']}", headers=bearer())
        assert r.status_code == 404
        assert client.get(f"{PLAIN}/assets", headers=bearer()).json() == {"assets": []}
    finally:
        platform.signer.clock = real


def test_sweep_removes_expired_results_not_on_download(client: Client, tmp_path: Path) -> None:
    platform = client.app.state.platform
    zip_path = tmp_path / "r.zip"
    zip_path.write_bytes(b"PK")
    request_id = "0b8f7bd0-4f1b-4a8e-9e0c-2a4d2f3f8c11"
    url = call(client, platform.assets.put_result, request_id, zip_path)
    assert client.get(local(url)).status_code == 200
    assert client.get(local(url)).status_code == 200  # not deleted on first download
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert abs(expires - (time.time() + 86400)) < 5
    assert call(client, platform.sweeper.tick, time.time() + 86401)["assets"] == 1
    results = Path(platform.config.store.data_dir) / "blobs" / "results"
    assert list(results.iterdir()) == []
    assert client.get(local(url)).status_code == 404


async def test_sweeper_runs_every_sweep_even_after_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, float]] = []

    async def broken(now: float) -> int:
        raise RuntimeError("boom")

    async def counting(now: float) -> int:
        seen.append(("counting", now))
        return 2

    sweeper = Sweeper(0.01)
    sweeper.add("broken", broken)
    sweeper.add("counting", counting)
    with pytest.raises(ValueError):
        sweeper.add("counting", counting)
    with caplog.at_level(logging.ERROR, logger="nvcf_lite.sweeper"):
        out = await sweeper.tick(123.0)
    assert isinstance(out["broken"], RuntimeError) and out["counting"] == 2
    assert seen == [("counting", 123.0)] and "sweep broken failed" in caplog.text
    task = asyncio.create_task(sweeper.run())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen) >= 3


def test_the_app_registers_the_asset_sweep(client: Client) -> None:
    sweeper = client.app.state.platform.sweeper
    assert sweeper.interval_s == 60.0
    assert "assets" in sweeper._sweeps
    assert create(client, **PNG)


# -- races with an upload in progress (domain level, one event loop) ------------------------


async def test_delete_or_sweep_during_an_upload(tmp_path: Path) -> None:
    from nvcf_lite.config import AssetsConfig
    from nvcf_lite.domain.assets import DESCRIPTION_HEADER, Assets
    from nvcf_lite.errors import Conflict
    from nvcf_lite.models import Principal
    from nvcf_lite.store.assets import AssetsRepo
    from nvcf_lite.store.sqlite import Database

    db = await Database.open(tmp_path / "db.sqlite")
    try:
        blobs = BlobStore(tmp_path / "blobs")
        assets = Assets(AssetsRepo(db), blobs, Signer(KEY), AssetsConfig(), "http://h:1")
        who = Principal(key_id="k", nca_id="nca", scopes=frozenset(), resources=())
        gate = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            yield b"part one "
            await gate.wait()
            yield b"part two"

        async def start(asset_id: str, url: str) -> asyncio.Task[Any]:
            query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            headers = {"content-type": "text/plain", DESCRIPTION_HEADER: "d"}
            task = asyncio.create_task(assets.accept_upload(asset_id, query, headers, slow()))
            await asyncio.sleep(0.05)
            return task

        first, url = await assets.create(who, "text/plain", "d")
        task = await start(first.asset_id, url)
        with pytest.raises(Conflict, match="in progress"):
            query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            hdrs = {"content-type": "text/plain", DESCRIPTION_HEADER: "d"}
            await assets.accept_upload(first.asset_id, query, hdrs, _chunks(b"x"))
        assert await assets.sweep(time.time() + 7200) == 0  # an upload in progress is left alone
        await assets.delete(who, first.asset_id)
        gate.set()
        with pytest.raises(NotFound, match="deleted during its upload"):
            await task
        await asyncio.sleep(0.05)
        assert _files(tmp_path / "blobs") == []
    finally:
        await db.close()
