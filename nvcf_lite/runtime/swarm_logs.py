"""The service logs of SwarmRuntime (blocking docker-py calls, run in worker threads): the
manager gathers them from the node that ran the task, while that node is reachable."""

from __future__ import annotations

from typing import Any

import docker.errors
from docker.types.daemon import CancellableStream


def logs_tail(api: Any, service_id: str, lines: int) -> str:
    try:
        chunks = api.service_logs(service_id, stdout=True, stderr=True, tail=max(0, lines))
        raw = b"".join(chunks)
    except docker.errors.NotFound:
        return ""
    return raw.decode("utf-8", errors="replace")


def open_logs(api: Any, service_id: str, tail: int | None, follow: bool) -> Any:
    """GET /services/{id}/logs, streamed and demultiplexed, closable from another thread.

    docker-py's `service_logs` returns a bare generator: closing it while a thread is blocked
    reading it does nothing, and a closed follow left that thread waiting on the manager
    forever. Here the request is made as docker-py's own `logs()` makes a container's, so
    `close()` closes the connection itself (which ends the blocked read)."""
    params = {
        "details": False,
        "follow": follow,
        "stdout": True,
        "stderr": True,
        "since": 0,
        "timestamps": False,
        "tail": "all" if tail is None else str(max(0, tail)),
    }
    response = api._get(api._url("/services/{0}/logs", service_id), params=params, stream=True)
    api._raise_for_status(response)
    # the services nvcf-lite makes have no TTY: the stream is multiplexed
    chunks = api._get_result_tty(True, response, False)
    return _Closable(CancellableStream(chunks, response))


class _Closable:
    """An iterator of log chunks (bytes) with the `close()` docker_logs.stream needs."""

    def __init__(self, chunks: Any) -> None:
        self._source = chunks
        self._chunks = iter(chunks)

    def __iter__(self) -> _Closable:
        return self

    def __next__(self) -> bytes:
        return bytes(next(self._chunks))

    def close(self) -> None:
        self._source.close()
