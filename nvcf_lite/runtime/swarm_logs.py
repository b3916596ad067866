"""The service logs of SwarmRuntime (blocking docker-py calls, run in worker threads): the
manager gathers them from the node that ran the task, while that node is reachable."""

from __future__ import annotations

from typing import Any

import docker.errors


def logs_tail(api: Any, service_id: str, lines: int) -> str:
    try:
        chunks = api.service_logs(service_id, stdout=True, stderr=True, tail=max(0, lines))
        raw = b"".join(chunks)
    except docker.errors.NotFound:
        return ""
    return raw.decode("utf-8", errors="replace")


def open_logs(api: Any, service_id: str, tail: int | None, follow: bool) -> Any:
    """GET /services/{id}/logs, streamed (docker-py demultiplexes it)."""
    stream = api.service_logs(
        service_id,
        stdout=True,
        stderr=True,
        follow=follow,
        tail="all" if tail is None else str(max(0, tail)),
    )
    return _Closable(stream)


class _Closable:
    """An iterator of log chunks with the `close()` docker_logs.stream needs."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = iter(chunks)

    def __iter__(self) -> _Closable:
        return self

    def __next__(self) -> bytes:
        return bytes(next(self._chunks))

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
