"""Request folders: ids come with a premade large-output folder; leftovers of a killed
process are cleared at start; folders are removed in batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nvcf_lite.workers.forwarding import Forwarder


async def no_sink(request_id: str, path: Path) -> str:
    return ""


async def test_premade_folders_cleanup_and_startup_sweep(tmp_path: Path) -> None:
    response = tmp_path / "inf" / "response"
    (response / "left-empty").mkdir(parents=True)
    (response / "left-with-output").mkdir()
    (response / "left-with-output" / "result.bin").write_bytes(b"x")
    fw = Forwarder(tmp_path / "inf", 1024, 60.0, no_sink)
    fw.start()
    assert not (response / "left-empty").exists()
    assert (response / "left-with-output" / "result.bin").exists()  # a request to run again
    fw.take_request_id()  # starts the first batch of premade folders
    for _ in range(100):
        if fw._pool:
            break
        await asyncio.sleep(0.01)
    rid = fw.take_request_id()
    assert (response / rid).is_dir()
    out = fw._make_out_dir(rid)
    assert out == response / rid and oct(out.stat().st_mode & 0o777) == "0o777"
    fw.cleanup(rid)
    await fw.sweep_dirs()
    assert not (response / rid).exists()
    await fw.close()
    assert [p.name for p in response.iterdir()] == ["left-with-output"]  # pool removed too
