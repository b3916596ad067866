"""data_dir full, on a live `nvcf-lite serve` whose data_dir is a size-limited tmpfs (16 MiB,
mounted by the test: it needs root, as CI runs) and the echo container.

While the file system is full: asset uploads and large results fail with 507 and a detail
that says why, no answer is a 500, nothing is half-stored; what was stored before (an asset's
bytes, the database) is intact. Once the space is freed, the same calls succeed again with no
restart. The summary line `FAULT data-dir-full: ...` counts the answers of each phase.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fault_support import check_queue, invoke_all, summary
from invocation_support import docker_env, live_echo
from server_support import ServerProcess, serving

pytestmark = pytest.mark.docker

TMPFS_SIZE = "16m"
ASSET_BYTES = 1024 * 1024
LARGE = 6 * 1024 * 1024  # over max_response_bytes (5 MiB): zipped into a stored result


@pytest.fixture
def full_disk_server(tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    proc = ServerProcess(tmp_path / "srv", env=docker_env(ns))
    proc.data_dir.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", proc.data_dir],
        check=True,
    )
    try:
        with serving(proc):
            yield proc
    finally:
        if subprocess.run(["umount", proc.data_dir], check=False).returncode != 0:
            subprocess.run(["umount", "-l", proc.data_dir], check=False)


def fill(where: Path) -> int:
    """Write `where` until the file system refuses another byte; the bytes written."""
    written = 0
    with open(where, "wb", buffering=0) as out:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            block = b"\xff" * size
            while True:
                try:
                    written += out.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return written


def upload_asset(server: ServerProcess, data: bytes) -> tuple[int, dict[str, Any], bytes]:
    """Create an asset and PUT its bytes: (status of the failing step or of the PUT, the
    asset, the last body)."""
    status, _, body = server.call(
        "POST", "/v2/nvcf/assets", {"contentType": "image/png", "description": "cat"}
    )
    if status != 200:
        return status, {}, body
    asset = json.loads(body)
    parts = urlsplit(asset["uploadUrl"])
    status, _, body = server.call(
        "PUT",
        f"{parts.path}?{parts.query}",
        None,
        headers={"Content-Type": "image/png", "x-amz-meta-nvcf-asset-description": "cat"},
        raw=data,
    )
    return status, asset, body


def asset_sha(server: ServerProcess, asset_id: str) -> str:
    redirect = server.json("GET", f"/v2/nvcf/assets/{asset_id}/content-redirect")
    parts = urlsplit(redirect["presignedUrl"])
    status, _, body = server.call("GET", f"{parts.path}?{parts.query}")
    assert status == 200, body[:300]
    return hashlib.sha256(body).hexdigest()


def problem_detail(body: bytes) -> str:
    return str(json.loads(body)["detail"])


def test_data_dir_full_answers_507_keeps_what_is_stored_and_recovers(
    full_disk_server: ServerProcess,
) -> None:
    server = full_disk_server
    fid, _ = live_echo(server.json, maxRequestConcurrency=2)
    path = f"/v2/nvcf/pexec/functions/{fid}"
    kept = os.urandom(ASSET_BYTES)
    status, asset, body = upload_asset(server, kept)
    assert status == 200, body
    kept_id = asset["assetId"]
    assert asset_sha(server, kept_id) == hashlib.sha256(kept).hexdigest()
    (baseline,) = invoke_all(server, path, [{"responseBytes": LARGE}], poll=30)
    assert not isinstance(baseline, BaseException) and baseline.status == 302, baseline

    filler = server.data_dir / "filler.bin"
    filled = fill(filler)
    full: Counter[str] = Counter()
    # an asset's bytes: 507 (or its creation already refused with 507)
    status, _, body = upload_asset(server, os.urandom(ASSET_BYTES))
    assert status == 507, (status, body[:300])
    assert "disk space" in problem_detail(body), body
    full[f"asset_upload_{status}"] += 1
    # a large result: 507 from the worker, never a 500
    results = invoke_all(server, path, [{"responseBytes": LARGE}] * 3, poll=30)
    for r in results:
        assert not isinstance(r, BaseException), r
        assert r.status == 507, (r.status, r.body[:300])
        assert "disk space" in problem_detail(r.body), r.body
        full[f"large_result_{r.status}"] += 1
    # small invocations: served (the WAL reuses its pages) or refused with 507, never a 500
    small = invoke_all(server, path, [{"n": i} for i in range(20)], poll=30)
    for r in small:
        assert not isinstance(r, BaseException), r
        assert r.status in (200, 507), (r.status, r.body[:300])
        if r.status == 507:
            assert "disk space" in problem_detail(r.body), r.body
        full[f"small_{r.status}"] += 1
    assert server.process is not None and server.process.poll() is None
    # nothing stored before is damaged
    assert asset_sha(server, kept_id) == hashlib.sha256(kept).hexdigest()
    check_queue(server.data_dir / "nvcf-lite.db", [])

    filler.unlink()  # space returns: no restart, the same calls work
    recovered: Counter[str] = Counter()
    fresh = os.urandom(ASSET_BYTES)
    status, asset, body = upload_asset(server, fresh)
    assert status == 200, body[:300]
    assert asset_sha(server, asset["assetId"]) == hashlib.sha256(fresh).hexdigest()
    recovered["asset_upload_200"] += 1
    again = invoke_all(server, path, [{"responseBytes": LARGE}, {"n": 1}], poll=30)
    assert [getattr(r, "status", r) for r in again] == [302, 200], again
    recovered.update(f"invoke_{getattr(r, 'status', 'error')}" for r in again)
    assert asset_sha(server, kept_id) == hashlib.sha256(kept).hexdigest()
    summary(
        "data-dir-full",
        tmpfs=TMPFS_SIZE,
        filler_bytes=filled,
        **{f"full_{k}": v for k, v in sorted(full.items())},
        **{f"after_{k}": v for k, v in sorted(recovered.items())},
        status_500=0,
        stored_asset_intact=True,
        integrity="ok",
    )
