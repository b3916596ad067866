"""The Docker calls behind `nvcf-lite logs`: stop a container but keep it (a failed instance's
output stays readable), and stream a container's output from a worker thread.

The stream is docker-py's `CancellableStream` over the engine's multiplexed log endpoint; the
thread pushes its chunks into an asyncio queue and closing the iterator closes the socket,
which ends the blocking read at once (a `--follow` that the user interrupts leaves no thread).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import docker.errors
from docker.types.daemon import CancellableStream

_END = object()


def stop_only(api: Any, container_id: str, stop_timeout_s: float) -> None:
    try:
        api.stop(container_id, timeout=max(0, math.ceil(stop_timeout_s)))
    except docker.errors.NotFound:
        return


def open_logs(api: Any, container_id: str, tail: int | None, follow: bool) -> Any:
    """GET /containers/{id}/logs, streamed; a follow has no read timeout (a quiet function
    may print nothing for minutes)."""
    params = {
        "stdout": 1,
        "stderr": 1,
        "follow": int(follow),
        "tail": "all" if tail is None else str(max(0, tail)),
    }
    url = api._url("/containers/{0}/logs", container_id)
    res = api._get(url, params=params, stream=True, timeout=None if follow else api.timeout)
    return CancellableStream(api._get_result(container_id, True, res), res)


async def stream(
    open_stream: Callable[[], Any], translate: Callable[[Exception], Exception]
) -> AsyncIterator[bytes]:
    """Chunks of `open_stream()` (blocking, run in a thread) as an async iterator.

    `open_stream` returns an iterable of bytes with a `close()`; NotFound yields nothing;
    other Docker errors go through `translate`.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=256)
    holder: dict[str, Any] = {}
    closed = threading.Event()
    # who closes the stream: the consumer once it is in `holder`, else (closed before the
    # open returned) the thread itself
    owner = threading.Lock()

    def put(item: object) -> None:
        if not closed.is_set():
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def pump() -> None:
        try:
            source = open_stream()
            with owner:
                late = closed.is_set()
                if not late:
                    holder["stream"] = source
            if late:
                _close(source)
                return
            for chunk in source:
                put(chunk)
        except docker.errors.NotFound:
            pass
        except Exception as exc:
            if not closed.is_set():
                put(exc)
        finally:
            if not closed.is_set():
                put(_END)

    thread = threading.Thread(target=pump, name="container-logs", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise translate(item) from item
            assert isinstance(item, bytes)
            yield item
    finally:
        with owner:
            closed.set()
            source = holder.get("stream")
        while not queue.empty():  # a put blocked on a full queue may finish
            queue.get_nowait()
        if source is not None:
            await asyncio.to_thread(_close, source)


def _close(source: Any) -> None:
    try:
        source.close()
    except Exception:  # the socket may be gone already; nothing is left to release
        pass
