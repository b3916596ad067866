"""The Sweeper: periodic clean-up passes (expired assets and large results, and whatever else
registers a sweep, e.g. request expiry).

`add(name, fn)` registers an async callable taking the current epoch time. `tick()` runs each
once, in the order added; one that raises is logged and the others still run. `run()` repeats
`tick()` every `interval_s` until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("nvcf_lite.sweeper")

SweepFn = Callable[[float], Awaitable[object]]


class Sweeper:
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._sweeps: dict[str, SweepFn] = {}

    def add(self, name: str, fn: SweepFn) -> None:
        if name in self._sweeps:
            raise ValueError(f"a sweep named {name!r} is registered already")
        self._sweeps[name] = fn

    async def tick(self, now: float | None = None) -> dict[str, object]:
        """One pass: each sweep's result (or the exception it raised), by name."""
        now = self.clock() if now is None else now
        results: dict[str, object] = {}
        for name, fn in list(self._sweeps.items()):
            try:
                results[name] = await fn(now)
            except Exception as exc:
                log.exception("sweep %s failed", name)
                results[name] = exc
            else:
                if results[name]:
                    log.info("sweep %s removed %s", name, results[name])
        return results

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval_s)
