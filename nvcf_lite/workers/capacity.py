"""The seam between the Dispatcher and the Scheduler, both ways, without either holding the other.

The Dispatcher moves requests onto instances; it learns which instances may take them only
through `Capacity` (the Scheduler implements it; the dispatcher's tests use a stub held to the
same contract, tests/test_capacity_contract.py). The Scheduler sees the requests only as
`Demand` (the Backlog of waiting requests, which the dispatcher fills and drains) and tells of
changes through a `CapacityChanged` event.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nvcf_lite.workers.instances import Instance


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why queued requests of a version cannot be served: they end with this problem.

    Only requests queued (monotonic time) before `queued_before` are refused; later ones wait
    (an instance that failed to start for the earlier ones may start for them). `failed`: the
    request is recorded as failed rather than done.
    """

    status: int
    kind: str
    detail: str
    queued_before: float = math.inf
    failed: bool = False


class Capacity(Protocol):
    def ready(self, version_id: str) -> list[Instance]:
        """The version's instances that take requests now."""
        ...

    def slots(self, inst: Instance) -> int:
        """How many requests `inst` runs at once (maxRequestConcurrency of its spec)."""
        ...

    def refusal(self, version_id: str, queued_at: float) -> Refusal | None:
        """Why the version's requests, the oldest queued at `queued_at`, cannot be served."""
        ...

    def has_instances(self, version_id: str) -> bool:
        """Any instance of the version at all (starting, ready, draining, ...)."""
        ...

    def nudge(self) -> None:
        """Requests wait, or an instance finished one: reconsider the instances now."""
        ...

    def unreachable(self, inst: Instance, why: str) -> None:
        """A request could not reach `inst`, or lost its connection to it (its container
        died): out of `ready` until its health check answers again, and looked at now."""
        ...


class Demand(Protocol):
    """What the scheduler sees of the requests: how many wait for each version (it scales to
    them, and a graceful undeploy waits for them). The Backlog implements it."""

    def depth(self, version_id: str) -> int: ...


class CapacityChanged:
    """The scheduler's notice that instances or version statuses changed: a synchronous event.

    The composition root makes it and subscribes what reacts (the dispatcher moves waiting
    requests); the scheduler, built with it, fires it. Neither holds the other.
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def fire(self) -> None:
        for listener in self._listeners:
            listener()
