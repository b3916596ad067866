"""A version's `rateLimit` (spec §2.1.1) enforced on invocation (domain/rate_limits.py): per
calling account, per caller with `perUserRate`, fixed windows per unit, 429 + Retry-After."""

from __future__ import annotations

import pytest

from nvcf_lite.domain.rate_limits import RateLimiter, parse_rate
from nvcf_lite.errors import TooManyRequests
from nvcf_lite.models import RateLimit


class Clock:
    def __init__(self, now: float = 1_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refused(limiter: RateLimiter, limit: RateLimit, nca: str = "acct", who: str = "k") -> str:
    with pytest.raises(TooManyRequests) as caught:
        limiter.check("v1", limit, nca, who)
    assert caught.value.status == 429
    return caught.value.headers["Retry-After"]


def test_rates_parse_as_count_per_unit_seconds() -> None:
    assert parse_rate("100-S, 1000-D") == ((100, 1), (1000, 86400))
    assert parse_rate("5-M,7-H") == ((5, 60), (7, 3600))


def test_an_account_gets_its_count_per_window_then_429_until_the_window_rolls_over() -> None:
    clock = Clock(120.0 + 15.5)  # 15.5 s into a minute
    limiter, limit = RateLimiter(clock), RateLimit(rate_limit="3-M")
    for _ in range(3):
        limiter.check("v1", limit, "acct", "k")
    assert refused(limiter, limit) == "45"  # whole seconds to the next minute (44.5 -> 45)
    assert refused(limiter, limit) == "45"  # a refused call is not counted ...
    clock.now = 180.0
    limiter.check("v1", limit, "acct", "k")  # ... and the next minute starts afresh
    limiter.check("v1", limit, "other-acct", "k2")  # every account has its own count
    limiter.check("v2", limit, "acct", "k")  # and every version


def test_every_unit_of_a_rate_must_allow_the_call() -> None:
    clock = Clock(3600.0)
    limiter, limit = RateLimiter(clock), RateLimit(rate_limit="2-S, 3-H")
    limiter.check("v1", limit, "acct", "k")
    limiter.check("v1", limit, "acct", "k")
    assert refused(limiter, limit) == "1"  # the second's two are used
    clock.now += 1
    limiter.check("v1", limit, "acct", "k")
    clock.now += 1
    with pytest.raises(TooManyRequests, match="3 per hour"):
        limiter.check("v1", limit, "acct", "k")  # the hour's three are used
    clock.now += 1
    assert refused(limiter, limit) == str(3600 - 3)


def test_per_nca_id_rates_replace_the_rate_and_exempted_accounts_are_not_limited() -> None:
    limit = RateLimit(rate_limit="1-M", per_nca_id_rate={"big": "3-M"}, exempted_nca_ids=("ops",))
    limiter = RateLimiter(Clock())
    for _ in range(3):
        limiter.check("v1", limit, "big", "k")
    refused(limiter, limit, "big")
    for _ in range(50):
        limiter.check("v1", limit, "ops", "k")
    limiter.check("v1", limit, "small", "k")
    refused(limiter, limit, "small")


def test_per_user_rate_limits_each_caller_on_top_of_the_account() -> None:
    limit = RateLimit(per_user_rate="2-M")
    limiter = RateLimiter(Clock())
    limiter.check("v1", limit, "acct", "apikey:a")
    limiter.check("v1", limit, "acct", "apikey:a")
    with pytest.raises(TooManyRequests, match="caller rate limit"):
        limiter.check("v1", limit, "acct", "apikey:a")
    limiter.check("v1", limit, "acct", "apikey:b")  # another key of the same account
    both = RateLimit(rate_limit="3-M", per_user_rate="2-M")
    limiter = RateLimiter(Clock())
    limiter.check("v1", both, "acct", "apikey:a")
    limiter.check("v1", both, "acct", "apikey:a")
    limiter.check("v1", both, "acct", "apikey:b")
    with pytest.raises(TooManyRequests, match="account rate limit"):
        limiter.check("v1", both, "acct", "apikey:c")


def test_stale_windows_are_dropped_when_many_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import nvcf_lite.domain.rate_limits as rate_limits

    monkeypatch.setattr(rate_limits, "_MAX_KEYS", 10)
    clock = Clock(0.0)
    limiter, limit = RateLimiter(clock), RateLimit(rate_limit="1-S")
    for n in range(30):
        clock.now = float(n)
        limiter.check("v1", limit, f"acct-{n}", "k")
    assert len(limiter._counts) <= 11
