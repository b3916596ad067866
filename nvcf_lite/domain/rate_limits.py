"""A function version's `rateLimit` (spec §2.1.1 `RateLimitDto`), enforced on invocation.

How nvcf-lite reads the DTO (the spec gives its shape, not its arithmetic; this is the reading
that gives every field a meaning):
- `rateLimit` ("100-S, 1000-D": at most 100 a second and 1000 a day) is each calling account's
  (NCA id's) allowance on the version; `perNcaIdRate` replaces it for the accounts it names;
  an account in `exemptedNcaIds` is not limited by it.
- `perUserRate` is each caller's (key's, or token's, subject) allowance on top of that: both
  must allow a request.
- Windows are fixed and aligned to the unit (this second, minute, hour, UTC day): exact and
  cheap; a burst may straddle a boundary. A request refused is not counted. `Retry-After` is
  the whole seconds until the first window that refused it rolls over.
- `syncCheck`: NVCF may check asynchronously (and let a few extra through); one process can
  always check synchronously and exactly, so nvcf-lite does, whatever it says.
- Counts are in memory: a restart starts every window afresh (a day's count included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from nvcf_lite.errors import TooManyRequests
from nvcf_lite.models import RateLimit

UNIT_S = {"S": 1, "M": 60, "H": 3600, "D": 86400, "W": 604800}  # W: token rates only
Rate = tuple[tuple[int, int], ...]  # (count, window seconds) per unit
_MAX_KEYS = 100_000  # windows kept before the stale ones are dropped


def parse_rate(text: str) -> Rate:
    """`"100-S, 1000-D"` -> ((100, 1), (1000, 86400)) (validated at registration)."""
    parts = []
    for part in text.split(","):
        count, unit = part.strip().split("-")
        parts.append((int(count), UNIT_S[unit]))
    return tuple(parts)


class RateLimiter:
    """Counts invocations per (version, account | caller, window) and refuses beyond the limit."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, str, int, int], int] = {}
        self._parsed: dict[str, Rate] = {}

    def check(self, version_id: str, limit: RateLimit, nca_id: str, subject: str) -> None:
        """Count one invocation of `version_id` by `subject` of `nca_id`, or raise 429."""
        now = self._clock()
        keys: list[tuple[str, str, int, int]] = []
        account_rate = self._account_rate(limit, nca_id)
        if account_rate is not None:
            self._admit(keys, now, (version_id, f"nca:{nca_id}"), account_rate, "account")
        if limit.per_user_rate is not None:
            self._admit(keys, now, (version_id, f"user:{subject}"), limit.per_user_rate, "caller")
        if len(self._counts) > _MAX_KEYS:
            self._drop_stale(now)
        for key in keys:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _account_rate(self, limit: RateLimit, nca_id: str) -> str | None:
        if limit.per_nca_id_rate and nca_id in limit.per_nca_id_rate:
            return limit.per_nca_id_rate[nca_id]
        if limit.exempted_nca_ids and nca_id in limit.exempted_nca_ids:
            return None
        return limit.rate_limit

    def _admit(
        self,
        keys: list[tuple[str, str, int, int]],
        now: float,
        who: tuple[str, str],
        rate_text: str,
        whose: str,
    ) -> None:
        rate = self._parsed.get(rate_text)
        if rate is None:
            rate = self._parsed[rate_text] = parse_rate(rate_text)
        for count, window in rate:
            start = int(now // window) * window
            key = (*who, window, start)
            if self._counts.get(key, 0) >= count:
                retry = max(1, math.ceil(start + window - now))
                raise TooManyRequests(
                    f"Function version '{who[0]}': the {whose} rate limit of {count} per"
                    f" {unit_name(window)} ({rate_text}) is used up; retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
            keys.append(key)

    def _drop_stale(self, now: float) -> None:
        self._counts = {k: n for k, n in self._counts.items() if k[3] + k[2] > now}


def unit_name(window: int) -> str:
    return {1: "second", 60: "minute", 3600: "hour", 86400: "day", 604800: "week"}[window]
