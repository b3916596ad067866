"""Forwarding one request to one instance over a pooled keep-alive aiohttp session.

Builds the NVCF container headers (§4.3), reads the answer (spilling to disk past
NVCF-MAX-RESPONSE-SIZE-BYTES), turns it into an Outcome (wrapping errors, §4.4; zipping
large results and large-output files, §2.3.7) or a pass-through StreamReply (SSE and
path-preserving calls), and watches the progress file (§4.5).
"""

from __future__ import annotations

import asyncio
import os
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp
import msgspec
from multidict import CIMultiDict
from yarl import URL

from nvcf_lite.domain.invocation_rules import HOP_BY_HOP, client_path, container_error, problem
from nvcf_lite.domain.invocations import StreamReply, Ticket
from nvcf_lite.errors import CONNECTION_ERROR, WORKER_ERROR, NvcfError
from nvcf_lite.models import Outcome
from nvcf_lite.workers.instances import INF_DIR, Instance
from nvcf_lite.workers.request_folders import RequestFolders

# The body is passed on as the container sent it (no decompression), so Content-Encoding stays.
_NO_COPY = HOP_BY_HOP


class NeverReached(Exception):
    """The container was never reached (refused): safe to retry on another instance."""


ResultSink = Callable[[str, Path], Awaitable[str]]  # (request id, zip path) -> download URL


def container_headers(
    ticket: Ticket, inst: Instance, max_bytes: int, now: float
) -> CIMultiDict[str]:
    """The client's forwardable headers plus the platform's (§4.3), which always win."""
    rec = ticket.record
    rid = rec.request_id
    headers: CIMultiDict[str] = CIMultiDict(rec.headers)
    headers.setdefault("Content-Type", "application/json")
    # Without this aiohttp would ask for gzip, and a compressed body would reach a client
    # that never asked for one.
    headers.setdefault("Accept-Encoding", "identity")
    left = max(0, int(rec.poll_seconds - (now - rec.accepted_at)))
    platform = {
        "NVCF-REQID": rid,
        "NVCF-SUB": ticket.subject,
        "NVCF-NCAID": rec.nca_id,
        "NVCF-FUNCTION-NAME": inst.function_name,
        "NVCF-FUNCTION-ID": rec.function_id,
        "NVCF-FUNCTION-VERSION-ID": rec.version_id,
        "NVCF-ASSET-DIR": f"{INF_DIR}/inputAssets/{rid}",
        "NVCF-LARGE-OUTPUT-DIR": f"{INF_DIR}/response/{rid}",
        "NVCF-MAX-RESPONSE-SIZE-BYTES": str(max_bytes),
        "NVCF-NSPECTID": "nvcf-lite",
        "NVCF-BACKEND": "local",
        "NVCF-INSTANCETYPE": inst.instance_type,
        "NVCF-REGION": "local",
        "NVCF-ENV": "local",
        "NVCF-INVOCATION-REGION": "local",
        "nvcf-poll-seconds": str(left),
    }
    if rec.assets:
        platform["NVCF-FUNCTION-ASSET-IDS"] = ",".join(rec.assets)
    for name, value in platform.items():
        headers[name] = value  # replaces any client header of that name
    return headers


def _copy_headers(resp: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    return [(str(n), v) for n, v in resp.headers.items() if n.lower() not in _NO_COPY]


class Forwarder:
    def __init__(self, inf_dir: Path, max_bytes: int, request_ttl_s: float, results: ResultSink):
        self.inf_dir = inf_dir
        self.max_bytes = max_bytes
        self.ttl = request_ttl_s
        self.results = results
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.folders = RequestFolders(str(inf_dir))

    def session(self, inst: Instance) -> aiohttp.ClientSession:
        s = self._sessions.get(inst.instance_id)
        if s is None or s.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=None)
            s = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            self._sessions[inst.instance_id] = s
        return s

    async def drop(self, instance_id: str) -> None:
        s = self._sessions.pop(instance_id, None)
        if s is not None:
            await s.close()

    async def close(self) -> None:
        await self.folders.close()
        for s in list(self._sessions.values()):
            await s.close()
        self._sessions.clear()

    def dirs(self, request_id: str) -> tuple[Path, Path]:
        return self.inf_dir / "response" / request_id, self.inf_dir / "inputAssets" / request_id

    def take_request_id(self) -> str:
        """A new request id whose large-output folder already exists, when one is ready."""
        return self.folders.take_request_id()

    async def forward(self, ticket: Ticket, inst: Instance) -> Outcome | StreamReply:
        rec = ticket.record
        out_dir = self.folders.out_dir(rec.request_id)
        path = rec.path if rec.mode == "path" else inst.inference_url
        # encoded=True: the client's path and query reach the container byte for byte
        url = URL(f"http://127.0.0.1:{inst.host_port}{_escaped(path)}", encoded=True)
        headers = container_headers(ticket, inst, self.max_bytes, time.time())
        timeout = aiohttp.ClientTimeout(total=max(1.0, rec.accepted_at + self.ttl - time.time()))
        try:
            resp = await self.session(inst).request(
                rec.method, url, data=rec.body, headers=headers, timeout=timeout
            )
        except aiohttp.ClientConnectorError as exc:
            raise NeverReached(str(exc)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._connection_error(ticket, exc)
        ticket.first_byte_at = time.monotonic()
        if rec.mode != "pexec":
            # SSE asked for (and path-preserving calls): no 202, no zip, no wrapping
            # (§2.3.6, §2.3.9). An SSE answer to a plain pexec call is collected as a body.
            return StreamReply(
                status=resp.status,
                headers=_copy_headers(resp),
                chunks=_chunks(resp),
                close=_closer(resp),
            )
        try:
            return await self._collect(ticket, resp, out_dir)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._connection_error(ticket, exc)
        finally:
            resp.release()

    def _connection_error(self, ticket: Ticket, exc: BaseException) -> Outcome:
        rec = ticket.record
        detail = f"Inference connection error while making inference request ({type(exc).__name__})"
        return problem(500, CONNECTION_ERROR, detail, client_path(rec), rec.request_id)

    async def _collect(self, ticket: Ticket, resp: aiohttp.ClientResponse, out: str) -> Outcome:
        rec = ticket.record
        body = bytearray()
        spill: Path | None = None
        async for chunk in resp.content.iter_chunked(1 << 20):
            if spill is None:
                body += chunk
                if len(body) > self.max_bytes:
                    spill = Path(f"{out}.response")
                    self.folders.wrote_beside(rec.request_id)
                    await asyncio.to_thread(spill.write_bytes, bytes(body))
                    body.clear()
            else:
                await asyncio.to_thread(_append, spill, chunk)
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


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()


def _closer(resp: aiohttp.ClientResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        resp.close()  # drops the upstream connection: the container sees the client leave

    return close


async def watch_progress(ticket: Ticket, out_dir: Path, interval_s: float = 0.1) -> None:
    """Turn writes of <large-output dir>/progress into ticket progress (§4.5).

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
        try:
            data = msgspec.json.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        if not isinstance(data, dict) or data.get("id") != ticket.request_id:
            continue
        percent = data.get("progress")
        ticket.add_progress(
            int(percent) if isinstance(percent, int | float) else 0,
            msgspec.json.encode(data.get("partialResponse")),
        )
