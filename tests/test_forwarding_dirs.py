"""Request folders (spec §4.3): ids come with a premade large-output folder, leftovers of a
killed process are cleared at start, folders are removed in batches; and a forwarded request
whose container writes no large output makes no file-system call on the event loop (counted
with an audit hook and the folders' own counters), so the cost cannot quietly come back.

The function here is a local asyncio HTTP server on 127.0.0.1 that plays the container: it
maps the NVCF-LARGE-OUTPUT-DIR it is sent (/var/inf/response/<id>) onto the test's folder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from nvcf_lite.domain.tickets import Ticket
from nvcf_lite.models import Outcome, RequestRecord
from nvcf_lite.workers.forwarding import Forwarder
from nvcf_lite.workers.instances import Instance
from nvcf_lite.workers.request_folders import READY_TARGET

# File-system audit events (https://docs.python.org/3/library/audit_events.html); os.stat has
# none, which the folders' own `on_path` counter covers.
FS_EVENTS = frozenset(
    {
        "open",
        "os.mkdir",
        "os.rmdir",
        "os.remove",
        "os.rename",
        "os.scandir",
        "os.listdir",
        "os.chmod",
        "os.utime",
        "os.truncate",
        "shutil.rmtree",
    }
)


class FsAudit:
    """Counts file-system audit events raised on one thread while `armed`."""

    def __init__(self) -> None:
        self.armed = False
        self.thread = threading.get_ident()
        self.events: Counter[str] = Counter()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.armed and event in FS_EVENTS and threading.get_ident() == self.thread:
            self.events[event] += 1


_AUDIT = FsAudit()
sys.addaudithook(_AUDIT.hook)  # hooks cannot be removed: this one only counts while armed


async def no_sink(request_id: str, path: Path) -> str:
    return f"http://127.0.0.1/results/{request_id}"


Writer = Callable[[Path], None]


class Container:
    """An HTTP/1.1 keep-alive server answering every POST with a small JSON body, after
    `write(folder)` when set (the container writing into its large-output folder)."""

    def __init__(self, inf: Path) -> None:
        self.inf = inf
        self.write: Writer | None = None
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                if self.write is not None:
                    folder = headers["nvcf-large-output-dir"].removeprefix("/var/inf/")
                    await asyncio.to_thread(self.write, self.inf / folder)
                body = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Forwarder, Container, Instance]]:
    inf = tmp_path / "inf"
    fw = Forwarder(inf, 1024, 60.0, no_sink)
    fw.start()
    container = Container(inf)
    await container.start()
    inst = Instance(
        instance_id="i1",
        deployment_id="d1",
        function_id="f1",
        version_id="v1",
        spec_id="s1",
        gpu="CPU",
        instance_type="cpu",
        units=[],
        host_port=container.port,
    )
    inst.inference_url = "/echo"
    yield fw, container, inst
    await fw.close()
    await container.close()


def ticket_for(request_id: str) -> Ticket:
    rec = RequestRecord(
        request_id=request_id,
        function_id="f1",
        version_id="v1",
        nca_id="acct",
        key_id="k1",
        method="POST",
        path="/v2/nvcf/pexec/functions/f1",
        headers=[("content-type", "application/json")],
        body=b'{"n": 1}',
        poll_seconds=60,
        mode="pexec",
        accepted_at=time.time(),
    )
    return Ticket(record=rec, subject="s", done=asyncio.get_running_loop().create_future())


async def pool_ready(fw: Forwarder) -> None:
    for _ in range(200):
        if len(fw.folders._ready) >= READY_TARGET:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no ready folders")


async def forward(fw: Forwarder, inst: Instance, watched: bool = True) -> tuple[str, Outcome]:
    rid = fw.take_request_id()
    if not watched:  # as if its watch had failed (no inotify, or out of watches)
        fw.folders._wd.pop(rid, None)
    outcome = await fw.forward(ticket_for(rid), inst)
    assert isinstance(outcome, Outcome)
    fw.cleanup(rid, assets=False)
    return rid, outcome


async def test_premade_folders_cleanup_and_startup_sweep(tmp_path: Path) -> None:
    response = tmp_path / "inf" / "response"
    (response / "left-empty").mkdir(parents=True)
    (response / "left-with-output").mkdir()
    (response / "left-with-output" / "result.bin").write_bytes(b"x")
    fw = Forwarder(tmp_path / "inf", 1024, 60.0, no_sink)
    fw.start()
    assert not (response / "left-empty").exists()
    assert (response / "left-with-output" / "result.bin").exists()  # a request to run again
    await pool_ready(fw)
    rid = fw.take_request_id()
    assert (response / rid).is_dir()
    out = Path(fw.folders.out_dir(rid))
    mode = (await asyncio.to_thread(out.stat)).st_mode
    assert out == response / rid and oct(mode & 0o777) == "0o777"
    renamed = fw.folders.stats.renamed
    fw.folders.settled(rid)  # its container answered in full, nothing was written
    fw.cleanup(rid)  # so it is renamed for a later request
    await asyncio.sleep(0.05)
    assert not (response / rid).exists() and fw.folders.stats.renamed == renamed + 1
    await fw.close()
    assert [p.name for p in response.iterdir()] == ["left-with-output"]  # ready/free removed


async def test_a_request_that_writes_nothing_makes_no_file_system_call_on_the_loop(
    rig: tuple[Forwarder, Container, Instance], tmp_path: Path
) -> None:
    """Counted on the event loop's thread across 1,200 requests: no file-system call on any
    request's path, no thread hop, no mkdir or rmdir; what a request costs instead is one
    rename of a recycled folder, in batches between requests."""
    fw, _, inst = rig
    if fw.folders._inotify is None:
        pytest.skip("no inotify on this kernel: folders are looked at instead")
    await pool_ready(fw)
    await forward(fw, inst)  # the keep-alive connection is open before counting
    stats = fw.folders.stats
    before = dataclasses.replace(stats)
    _AUDIT.thread, _AUDIT.events = threading.get_ident(), Counter()
    done: list[str] = []
    _AUDIT.armed = True
    try:
        for _ in range(1200):  # several rounds through the ready folders
            rid, outcome = await forward(fw, inst)
            assert outcome.status == 200 and outcome.body == b'{"ok": true}'
            done.append(rid)
        await fw.sweep_dirs()
    finally:
        _AUDIT.armed = False
    renamed = stats.renamed - before.renamed
    assert stats.on_path == before.on_path and stats.scans == before.scans == 0
    made = stats.made - before.made  # only while the in-flight one is not yet free
    assert made <= 1 and stats.removed == before.removed
    assert stats.sweeps == before.sweeps  # nothing to remove: no thread hop either
    assert 1100 <= renamed <= 1200
    expected = {"os.rename": renamed} | ({"os.mkdir": made, "os.chmod": made} if made else {})
    assert dict(_AUDIT.events) == expected  # and nothing else at all
    left = {p.name for p in (tmp_path / "inf" / "response").iterdir()}
    assert len(left) <= 2 * READY_TARGET  # ready ones and a few free ones, not one per request


async def test_a_file_written_into_the_folder_is_seen_and_zipped(
    rig: tuple[Forwarder, Container, Instance], tmp_path: Path
) -> None:
    fw, container, inst = rig
    await pool_ready(fw)

    def write(folder: Path) -> None:
        (folder / "result.txt").write_text("large output")

    container.write = write
    rid, outcome = await forward(fw, inst)
    assert outcome.status == 302 and outcome.location == f"http://127.0.0.1/results/{rid}"
    await fw.sweep_dirs()
    assert not (tmp_path / "inf" / "response" / rid).exists()


async def test_a_progress_file_alone_is_not_output(
    rig: tuple[Forwarder, Container, Instance],
) -> None:
    fw, container, inst = rig
    await pool_ready(fw)

    def progress(folder: Path) -> None:
        (folder / "progress").write_text('{"id": "x", "progress": 50}')

    container.write = progress
    _, outcome = await forward(fw, inst)
    assert outcome.status == 200 and outcome.body == b'{"ok": true}'
    if fw.folders._inotify is not None:
        assert fw.folders.stats.scans == 0  # known from the events, without looking


async def test_without_inotify_the_folder_is_looked_at(
    rig: tuple[Forwarder, Container, Instance],
) -> None:
    fw, container, inst = rig
    await pool_ready(fw)
    _, outcome = await forward(fw, inst, watched=False)
    assert outcome.status == 200 and fw.folders.stats.scans == 1

    def write(folder: Path) -> None:
        (folder / "out.bin").write_bytes(b"\0" * 10)

    container.write = write
    _, outcome = await forward(fw, inst, watched=False)
    assert outcome.status == 302 and fw.folders.stats.scans == 2


async def test_a_folder_whose_answer_was_not_read_in_full_is_not_recycled(
    rig: tuple[Forwarder, Container, Instance], tmp_path: Path
) -> None:
    """After a cancel, a timeout or a broken connection the container may still be writing
    into the folder: it is removed, never handed to another request."""
    fw, _, _ = rig
    await pool_ready(fw)
    rid = fw.take_request_id()
    fw.folders.out_dir(rid)  # forwarded, but its answer never came in full
    fw.cleanup(rid, assets=False)
    assert rid not in fw.folders._free
    await fw.sweep_dirs()
    assert not (tmp_path / "inf" / "response" / rid).exists()


async def test_a_recovered_requests_folder_with_output_is_looked_at(
    rig: tuple[Forwarder, Container, Instance], tmp_path: Path
) -> None:
    """A request run again after a restart finds its first attempt's folder: it is not taken
    for an empty one (its files count, and it is not recycled)."""
    fw, _, inst = rig
    await pool_ready(fw)
    rid = "0b6b1d3e-0000-4000-8000-000000000001"
    folder = tmp_path / "inf" / "response" / rid
    folder.mkdir()
    (folder / "partial.bin").write_bytes(b"first attempt")
    free_before = len(fw.folders._free)
    outcome = await fw.forward(ticket_for(rid), inst)
    assert isinstance(outcome, Outcome) and outcome.status == 302  # its file is output
    assert len(fw.folders._free) == free_before  # no free folder was spent on it
    fw.cleanup(rid, assets=False)
    assert rid not in fw.folders._free


async def test_progress_is_read_when_the_container_writes_it_not_by_polling(
    rig: tuple[Forwarder, Container, Instance],
) -> None:
    """§4.5: each finished write of the progress file becomes one partial response, from the
    inotify event (no watcher task polls the file)."""
    fw, container, inst = rig
    if fw.folders._inotify is None:
        pytest.skip("no inotify on this kernel: progress files are polled instead")
    await pool_ready(fw)
    rid = fw.take_request_id()
    ticket = ticket_for(rid)

    def progress(folder: Path) -> None:
        for percent in (30, 60):
            doc = {"id": folder.name, "progress": percent, "partialResponse": {"p": percent}}
            (folder / "progress").write_text(json.dumps(doc))
            time.sleep(0.2)  # the platform reads it while the request still runs

    container.write = progress
    assert fw.progress_by_events(rid) is False
    outcome = await fw.forward(ticket, inst)
    assert isinstance(outcome, Outcome) and outcome.status == 200
    assert [p.percent for p in ticket.unread] == [30, 60]  # once each, in order
    assert ticket.progress is not None and ticket.progress.body == b'{"p":60}'
    assert not fw.progress_by_events(rid)  # forgotten once the request ended
    fw.cleanup(rid, assets=False)
