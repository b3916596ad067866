"""The requests waiting for an instance slot: one FIFO queue per version, in memory.

The durable copy is the RequestsRepo. The Dispatcher fills and drains these queues; the
Scheduler reads their depth as `Demand` (workers/capacity.py) to scale, and /metrics reads
them as gauges. Both are built with the same Backlog, so neither holds the other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from nvcf_lite.domain.tickets import Ticket


class Backlog:
    def __init__(self) -> None:
        self._queues: dict[str, deque[Ticket]] = {}

    def depth(self, version_id: str) -> int:
        return len(self._queues.get(version_id, ()))

    def queue(self, version_id: str) -> deque[Ticket]:
        """The version's queue (made empty on first use), for the dispatcher to move."""
        queue = self._queues.get(version_id)
        if queue is None:
            queue = self._queues[version_id] = deque()
        return queue

    def get(self, version_id: str) -> deque[Ticket] | None:
        return self._queues.get(version_id)

    def versions(self) -> list[str]:
        return list(self._queues)

    def queued(self) -> Iterator[tuple[str, str, int]]:
        """(function id, version id, depth) of each version with requests waiting."""
        for version_id, queue in self._queues.items():
            if queue:
                yield queue[0].record.function_id, version_id, len(queue)
