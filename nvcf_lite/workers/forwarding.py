"""Forwarding one request to one instance over a pooled keep-alive connection.

Builds the NVCF container headers (§4.3) as one encoded block (the instance's part once per
instance), sends them with `http_client` (a small HTTP/1.1 client on the httptools parser:
aiohttp cost ~100 µs of Python per request), reads the answer (spilling to disk past
NVCF-MAX-RESPONSE-SIZE-BYTES), turns it into an Outcome (wrapping errors, §4.4; zipping
large results and large-output files, §2.3.7) or a pass-through StreamReply (SSE and
path-preserving calls), and watches the progress file (§4.5).
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import msgspec

from nvcf_lite.domain.invocation_rules import (
    HOP_BY_HOP,
    WORKER_OWNED,
    client_path,
    container_error,
    problem,
)
from nvcf_lite.domain.invocations import StreamReply, Ticket
from nvcf_lite.errors import CONNECTION_ERROR, WORKER_ERROR, NvcfError
from nvcf_lite.models import Outcome
from nvcf_lite.workers.http_client import (
    ConnectFailed,
    ConnectionClosed,
    Pool,
    Response,
    UpstreamError,
)
from nvcf_lite.workers.instances import INF_DIR, Instance
from nvcf_lite.workers.request_folders import RequestFolders

# The body is passed on as the container sent it (no decompression), so Content-Encoding stays.
_NO_COPY = HOP_BY_HOP
# Never taken from the client: the platform's own (§4.3), and what the client sets itself.
_NOT_FORWARDED = frozenset(HOP_BY_HOP | WORKER_OWNED)


class NeverReached(Exception):
    """The container was never reached (refused): safe to retry on another instance."""


class ConnectionLost(Exception):
    """The container closed the connection after the request was sent, before its answer was
    complete (its process died): the request may have run, so it is not retried; `outcome`
    is the client's answer, the inference-connection problem (spec §4.4, §5.2)."""

    def __init__(self, outcome: Outcome, why: str) -> None:
        super().__init__(why)
        self.outcome = outcome


ResultSink = Callable[[str, Path], Awaitable[str]]  # (request id, zip path) -> download URL


def instance_headers(inst: Instance, max_bytes: int) -> bytes:
    """The container headers that are the same for every request to `inst` (built once)."""
    lines = (
        f"NVCF-FUNCTION-NAME: {inst.function_name}\r\n"
        f"NVCF-MAX-RESPONSE-SIZE-BYTES: {max_bytes}\r\n"
        "NVCF-NSPECTID: nvcf-lite\r\n"
        "NVCF-BACKEND: local\r\n"
        f"NVCF-INSTANCETYPE: {inst.instance_type}\r\n"
        "NVCF-REGION: local\r\n"
        "NVCF-ENV: local\r\n"
        "NVCF-INVOCATION-REGION: local\r\n"
    )
    return lines.encode("latin-1", "replace")


def container_headers(ticket: Ticket, fixed: bytes, now: float) -> bytes:
    """The header block sent to the container: the client's forwardable headers, then the
    platform's (§4.3), which always win (a client header of a platform name is dropped),
    then `fixed` (instance_headers). Host and Content-Length are the client's to add."""
    rec = ticket.record
    rid = rec.request_id
    lines: list[str] = []
    content_type = accept_encoding = False
    for name, value in rec.headers:
        low = name.lower()
        if low in _NOT_FORWARDED or "\n" in value or "\r" in value:
            continue  # (the server's parser refuses CR/LF in values already)
        if low == "content-type":
            content_type = True
        elif low == "accept-encoding":
            accept_encoding = True
        lines.append(f"{name}: {value}\r\n")
    if not content_type:
        lines.append("Content-Type: application/json\r\n")
    if not accept_encoding:
        # the answer is passed on as sent: ask for no compression the client did not ask for
        lines.append("Accept-Encoding: identity\r\n")
    left = max(0, int(rec.poll_seconds - (now - rec.accepted_at)))
    lines.append(
        f"NVCF-REQID: {rid}\r\n"
        f"NVCF-SUB: {ticket.subject}\r\n"
        f"NVCF-NCAID: {rec.nca_id}\r\n"
        f"NVCF-FUNCTION-ID: {rec.function_id}\r\n"
        f"NVCF-FUNCTION-VERSION-ID: {rec.version_id}\r\n"
        f"NVCF-ASSET-DIR: {INF_DIR}/inputAssets/{rid}\r\n"
        f"NVCF-LARGE-OUTPUT-DIR: {INF_DIR}/response/{rid}\r\n"
        f"nvcf-poll-seconds: {left}\r\n"
    )
    if rec.assets:
        lines.append(f"NVCF-FUNCTION-ASSET-IDS: {','.join(rec.assets)}\r\n")
    return "".join(lines).encode("latin-1", "replace") + fixed


def _copy_headers(resp: Response) -> list[tuple[str, str]]:
    return [(n, v) for n, v in resp.headers if n.lower() not in _NO_COPY]


class Forwarder:
    def __init__(self, inf_dir: Path, max_bytes: int, request_ttl_s: float, results: ResultSink):
        self.inf_dir = inf_dir
        self.max_bytes = max_bytes
        self.ttl = request_ttl_s
        self.results = results
        self._pools: dict[str, tuple[Pool, bytes]] = {}  # instance id -> (pool, fixed headers)
        self.folders = RequestFolders(str(inf_dir))

    def pool(self, inst: Instance) -> tuple[Pool, bytes]:
        """The instance's keep-alive connections and its fixed container headers."""
        got = self._pools.get(inst.instance_id)
        port = inst.host_port or 0
        if got is None or got[0].port != port or got[0].host != inst.address:
            if got is not None:
                got[0].close()
            got = (Pool(inst.address, port), instance_headers(inst, self.max_bytes))
            self._pools[inst.instance_id] = got
        return got

    async def drop(self, instance_id: str) -> None:
        got = self._pools.pop(instance_id, None)
        if got is not None:
            got[0].close()

    async def close(self) -> None:
        await self.folders.close()
        for pool, _ in self._pools.values():
            pool.close()
        self._pools.clear()

    def dirs(self, request_id: str) -> tuple[Path, Path]:
        return self.inf_dir / "response" / request_id, self.inf_dir / "inputAssets" / request_id

    def take_request_id(self) -> str:
        """A new request id whose large-output folder already exists, when one is ready."""
        return self.folders.take_request_id()

    def progress_by_events(self, request_id: str) -> bool:
        """Its progress file is followed through inotify (no polling watcher needed)."""
        return self.folders.follows_progress(request_id)

    async def forward(self, ticket: Ticket, inst: Instance) -> Outcome | StreamReply:
        rec = ticket.record
        out_dir = self.folders.out_dir(rec.request_id)
        # the client's path and query reach the container byte for byte (I5)
        target = _escaped(rec.path if rec.mode == "path" else inst.inference_url)
        pool, fixed = self.pool(inst)
        if rec.mode == "pexec":  # partial responses are for 202 polling (§4.5)
            progress = f"{out_dir}/progress"
            self.folders.on_progress(rec.request_id, lambda: read_progress(ticket, progress))
        now = time.time()
        headers = container_headers(ticket, fixed, now)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(1.0, rec.accepted_at + self.ttl - now)
        try:
            resp = await pool.request(
                rec.method, target.encode("latin-1"), headers, rec.body, deadline=deadline
            )
        except ConnectFailed as exc:
            self.folders.no_progress(rec.request_id)
            raise NeverReached(str(exc) or "connection refused") from exc
        except UpstreamError as exc:
            self.folders.no_progress(rec.request_id)
            return self._connection_error(ticket, exc)
        except BaseException:
            self.folders.no_progress(rec.request_id)
            raise
        ticket.first_byte_at = time.monotonic()
        if rec.mode != "pexec":
            # SSE asked for (and path-preserving calls): no 202, no zip, no wrapping
            # (§2.3.6, §2.3.9). An SSE answer to a plain pexec call is collected as a body.
            return StreamReply(
                status=resp.status,
                headers=_copy_headers(resp),
                chunks=_chunks(resp, lambda: self.folders.settled(rec.request_id)),
                close=_closer(resp),
            )
        try:
            return await self._collect(ticket, resp, out_dir)
        except UpstreamError as exc:
            return self._connection_error(ticket, exc)
        except OSError as exc:  # spilling or zipping the answer under data_dir
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            detail = "Not enough disk space on the server to store the result"
            return problem(507, WORKER_ERROR, detail, client_path(rec), rec.request_id)
        finally:
            resp.release()
            self.folders.no_progress(rec.request_id)

    def _connection_error(self, ticket: Ticket, exc: UpstreamError) -> Outcome:
        """The client's answer to a broken exchange; ConnectionLost when the container went
        away (the dispatcher then stops sending it requests until its health check answers)."""
        rec = ticket.record
        detail = f"Inference connection error while making inference request ({type(exc).__name__})"
        outcome = problem(500, CONNECTION_ERROR, detail, client_path(rec), rec.request_id)
        if isinstance(exc, ConnectionClosed):
            raise ConnectionLost(outcome, str(exc)) from exc
        return outcome

    async def _collect(self, ticket: Ticket, resp: Response, out: str) -> Outcome:
        rec = ticket.record
        body = bytearray()
        spill: Path | None = None
        async for chunk in resp:
            if spill is None:
                body += chunk
                if len(body) > self.max_bytes:
                    spill = Path(f"{out}.response")
                    self.folders.wrote_beside(rec.request_id)
                    await asyncio.to_thread(spill.write_bytes, bytes(body))
                    body.clear()
            else:
                await asyncio.to_thread(_append, spill, chunk)
        self.folders.settled(rec.request_id)
        if resp.status >= 400:
            data = bytes(body) if spill is None else b""
            return container_error(resp.status, data, client_path(rec), rec.request_id)
        has_files = self.folders.wrote_files(rec.request_id)
        out_dir = Path(out)
        artifacts = await asyncio.to_thread(_artifacts, out_dir) if has_files else []
        if spill is None and not artifacts:
            return Outcome(status=resp.status, headers=_copy_headers(resp), body=bytes(body))
        self.folders.wrote_beside(rec.request_id)
        if spill is None:
            spill = Path(f"{out}.response")
            await asyncio.to_thread(spill.write_bytes, bytes(body))
        zip_path = Path(f"{out}.zip")
        await asyncio.to_thread(_zip, zip_path, rec.request_id, spill, out_dir, artifacts)
        spill.unlink(missing_ok=True)
        try:
            url = await self.results(rec.request_id, zip_path)
        except NvcfError as exc:  # e.g. no disk space left for the result
            return problem(exc.status, WORKER_ERROR, exc.detail, client_path(rec), rec.request_id)
        return Outcome(status=302, headers=[], location=url)

    def cleanup(self, request_id: str, assets: bool = True) -> None:
        """Forget a request's folders (removed in batches off the event loop); `assets=False`
        when none were staged for it."""
        self.folders.done(request_id, assets)

    def start(self) -> None:
        self.folders.start()

    async def sweep_dirs(self) -> None:
        await self.folders.sweep()


def _escaped(target: str) -> str:
    """Percent-escape only what may not appear raw in a request target (spaces, non-ASCII)."""
    return quote(target.encode("latin-1", "replace"), safe="!#$%&'()*+,/:;=?@[]~")


def _append(path: Path, chunk: bytes) -> None:
    with path.open("ab") as f:
        f.write(chunk)


def _artifacts(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return [
        p
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.relative_to(out_dir).as_posix() != "progress"
    ]


def _zip(zip_path: Path, request_id: str, body: Path, out_dir: Path, files: list[Path]) -> None:
    """Layout of §2.3.7: <requestId>.response plus every file, relative to the output dir."""
    tmp = zip_path.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        zf.write(body, f"{request_id}.response")
        for f in files:
            zf.write(f, f.relative_to(out_dir).as_posix())
    os.replace(tmp, zip_path)


async def _chunks(resp: Response, settled: Callable[[], None]) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp:
            yield chunk
        settled()  # read to its end
    finally:
        resp.release()


def _closer(resp: Response) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        resp.close()  # drops the upstream connection: the container sees the client leave

    return close


def read_progress(ticket: Ticket, path: str | Path) -> bool:
    """Turn the progress file into ticket progress (§4.5); False when it is not (yet) valid
    JSON of this request (ignored, as NVCF's worker does)."""
    try:
        with open(path, "rb") as f:
            data = msgspec.json.decode(f.read())
    except (OSError, msgspec.DecodeError, RecursionError):
        return False
    if not isinstance(data, dict) or data.get("id") != ticket.request_id:
        return False
    percent = data.get("progress")
    ticket.add_progress(
        int(percent) if isinstance(percent, int | float) else 0,
        msgspec.json.encode(data.get("partialResponse")),
    )
    return True


async def watch_progress(ticket: Ticket, out_dir: Path, interval_s: float = 0.1) -> None:
    """Poll <large-output dir>/progress (when its folder is not watched with inotify).

    A write is a new (inode, mtime, size) of the file: containers replace it by rename, which
    a same-second mtime alone would hide. Invalid JSON or another request's id is ignored.
    """
    path = out_dir / "progress"
    last: tuple[int, int, int] | None = None
    while True:
        await asyncio.sleep(interval_s)
        try:
            st = path.stat()
        except OSError:
            continue
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature == last:
            continue
        last = signature
        read_progress(ticket, path)
