"""A 200 MB asset upload to a real `nvcf-lite serve` keeps the server's memory flat.

The body is produced by a generator on the client and streamed to disk by the server in
1 MiB pieces; VmRSS of the server's process tree (one process: granian runs embedded) is
sampled from /proc during the upload and compared with the value just before it.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from asset_support import DESCRIPTION_HEADER, RssSampler, plain_server, put_stream, rss_kib, zeros

SIZE = 200 * 1024 * 1024
LIMIT_MIB = 60
HEADERS = {"Content-Type": "application/octet-stream", DESCRIPTION_HEADER: "big input"}


ASSET = {"contentType": HEADERS["Content-Type"], "description": "big input"}


def test_200_mb_upload_keeps_server_rss_flat(tmp_path: Path) -> None:
    with plain_server(tmp_path / "srv") as server:
        # the first upload loads code paths and buffers
        warm = server.json("POST", "/v2/nvcf/assets", ASSET)
        assert put_stream(warm["uploadUrl"], HEADERS, zeros(8 << 20), 8 << 20)[0] == 200
        time.sleep(0.3)
        big = server.json("POST", "/v2/nvcf/assets", ASSET)
        baseline = rss_kib(server.process.pid)
        started = time.monotonic()
        with RssSampler(server.process.pid) as rss:
            status, body = put_stream(big["uploadUrl"], HEADERS, zeros(SIZE), SIZE)
        elapsed = time.monotonic() - started
        assert status == 200, body
        peak = max(rss.samples)
        delta_mib = (peak - baseline) / 1024
        print(
            f"\n200 MiB upload in {elapsed:.2f}s ({SIZE / elapsed / 2**20:.0f} MiB/s): server RSS "
            f"baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
            f"delta {delta_mib:.1f} MiB over {len(rss.samples)} samples"
        )
        assert len(rss.samples) >= 3
        assert delta_mib < LIMIT_MIB
        stored = server.data_dir / "blobs" / "assets" / big["assetId"]
        assert stored.stat().st_size == SIZE
        digest = hashlib.sha256()
        with open(stored, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        expected = hashlib.sha256()
        for chunk in zeros(SIZE, 1 << 20):
            expected.update(chunk)
        assert digest.hexdigest() == expected.hexdigest()
