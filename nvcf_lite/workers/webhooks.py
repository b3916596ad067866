"""The WebhookSender: POSTs each recorded delivery (store/webhooks.py) to its URL, signed,
retried with doubling backoff until it is answered 2xx or `webhooks.max_attempts` ran out.

`tick()` is one pass over the due deliveries (sent concurrently); `run()` repeats it when
nudged (a request with a webhook ended) or when the next retry is due, and otherwise sleeps:
no SQLite reads while nothing is pending. Deliveries are rows, so those a crash interrupted
are sent by the next process's first tick. A receiver may see a delivery more than once (a
crash between its 2xx and the row's update): `NVCF-Webhook-Id` is the same on every attempt.
Redirects are not followed (a 3xx is a failed attempt), and a URL the allow-list no longer
covers (its config changed across a restart) fails without a POST.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nvcf_lite.config import WebhooksConfig
from nvcf_lite.domain import webhooks
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.errors import NvcfError
from nvcf_lite.store.webhooks import DeliveriesRepo, Delivery

if (
    TYPE_CHECKING
):  # loaded at the first delivery: ~20 MB of RSS a server without webhooks never needs
    import aiohttp

log = logging.getLogger("nvcf_lite.webhooks")

Post = Callable[[str, dict[str, str], bytes, float], Awaitable[int]]
"""(url, headers, body, timeout_s) -> the HTTP status; raises when no answer came."""
BATCH = 64
IDLE_S = 300.0  # with nothing pending and no nudge, look again this often anyway


class WebhookSender:
    def __init__(
        self,
        repo: DeliveriesRepo,
        secret: str,
        settings: WebhooksConfig,
        *,
        post: Post | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.repo, self.secret, self.settings = repo, secret, settings
        self.policy = webhooks.WebhookPolicy(settings.allow)
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._post = post
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        self._wake.set()

    async def tick(self, now: float | None = None) -> int:
        """One pass: every due delivery attempted once; how many were delivered."""
        now = self.clock() if now is None else now
        due = await self.repo.due(now, BATCH)
        results = await asyncio.gather(*(self._attempt(d) for d in due), return_exceptions=True)
        for delivery, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "webhook %s: recording the attempt failed",
                    delivery.delivery_id,
                    exc_info=result,
                )
        return sum(1 for r in results if r is True)

    async def _attempt(self, delivery: Delivery) -> bool:
        try:  # the allow-list may have changed since the request was accepted (a restart)
            self.policy.check(delivery.url)
        except NvcfError as exc:
            log.warning("webhook %s not sent: %s", delivery.delivery_id, exc)
            await self.repo.failed(delivery.delivery_id, self.clock(), str(exc))
            self.metrics.webhook_attempts.inc(delivery.function_id, "failed")
            return False
        body = webhooks.payload(
            delivery.delivery_id,
            delivery.request_id,
            delivery.function_id,
            delivery.version_id,
            delivery.outcome,
            delivery.finished_at,
        )
        headers = webhooks.signed_headers(
            self.secret, delivery.delivery_id, delivery.request_id, int(self.clock()), body
        )
        try:
            status = await self.post(delivery.url, headers, body, self.settings.timeout_s)
            error = None if 200 <= status < 300 else f"answered HTTP {status}"
        except Exception as exc:  # any failure to get an answer is a failed attempt
            error = f"no answer: {type(exc).__name__}: {exc}"[:500]
        now = self.clock()
        if error is None:
            await self.repo.delivered(delivery.delivery_id, now)
            self.metrics.webhook_attempts.inc(delivery.function_id, "delivered")
            return True
        attempts = delivery.attempts + 1
        last = attempts >= self.settings.max_attempts
        self.metrics.webhook_attempts.inc(delivery.function_id, "failed" if last else "retry")
        if last:
            log.warning(
                "webhook %s for request %s failed %d times, giving up: %s",
                delivery.delivery_id,
                delivery.request_id,
                attempts,
                error,
            )
            await self.repo.failed(delivery.delivery_id, now, error)
            return False
        s = self.settings
        delay = webhooks.backoff(attempts, s.backoff_initial_s, s.backoff_max_s)
        log.info(
            "webhook %s for request %s: %s; retry in %.1f s",
            delivery.delivery_id,
            delivery.request_id,
            error,
            delay,
        )
        await self.repo.retry(delivery.delivery_id, now + delay, error)
        return False

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout_s: float) -> int:
        if self._post is not None:
            return await self._post(url, headers, body, timeout_s)
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            await resp.read()
            return resp.status

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
                next_at = await self.repo.next_due()
            except Exception:
                log.exception("webhook pass failed")
                next_at = self.clock() + 1.0
            wait = IDLE_S if next_at is None else max(0.0, min(IDLE_S, next_at - self.clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._wake.clear()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
