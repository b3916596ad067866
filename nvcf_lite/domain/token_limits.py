"""The token limits of an LLM function's model (`models[].llmConfig`, spec §2.1.1, F8
`modelUpdates`), enforced by the OpenAI-compatible gateway.

How nvcf-lite reads them (the spec gives the fields and their `N-S|M|H|D|W` grammar, not
their arithmetic):
- `tokenRateLimit` counts prompt + completion tokens, `inputTokenRateLimit` prompt tokens,
  `outputTokenRateLimit` completion tokens; "1000-M, 50000-D" is at most 1000 a minute and
  50000 a day. Each is each calling account's (NCA id's) allowance on that model of that
  function.
- Tokens are counted from the `usage` the container reports (the response body, or the SSE
  chunk that carries it), so they are known only once an answer ends: a request is admitted
  while its window has tokens left, and the one that crosses the limit completes. From then
  on the window refuses (429, `Retry-After` = whole seconds until it rolls over).
- Windows are fixed and aligned to the unit, as `rate_limits` does (a week: to the epoch's);
  counts live in memory and start afresh with each process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from nvcf_lite.domain.rate_limits import Rate, parse_rate, unit_name
from nvcf_lite.errors import TooManyRequests
from nvcf_lite.models import LlmConfig

_MAX_KEYS = 100_000


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


def _limits(config: LlmConfig | None) -> list[tuple[str, str]]:
    """(kind, rate text) of the limits the config sets: kind total | input | output."""
    if config is None:
        return []
    given = (
        ("total", config.token_rate_limit),
        ("input", config.input_token_rate_limit),
        ("output", config.output_token_rate_limit),
    )
    return [(kind, text) for kind, text in given if text and text.strip()]


_FIELD = {
    "total": "tokenRateLimit",
    "input": "inputTokenRateLimit",
    "output": "outputTokenRateLimit",
}


class TokenLimiter:
    """Token counts per (function, model, account, kind, window) against the model's limits."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, str, str, str, int, int], int] = {}
        self._parsed: dict[str, Rate] = {}

    def _rate(self, text: str) -> Rate:
        rate = self._parsed.get(text)
        if rate is None:
            rate = self._parsed[text] = parse_rate(text)
        return rate

    def check(self, function_id: str, model: str, nca_id: str, config: LlmConfig | None) -> None:
        """Raise 429 when a window of one of the model's limits is used up for `nca_id`."""
        now = self._clock()
        for kind, text in _limits(config):
            for count, window in self._rate(text):
                start = int(now // window) * window
                used = self._counts.get((function_id, model, nca_id, kind, window, start), 0)
                if used >= count:
                    retry = max(1, math.ceil(start + window - now))
                    raise TooManyRequests(
                        f"Model '{model}': the {_FIELD[kind]} of {count} tokens per"
                        f" {unit_name(window)} ({text}) is used up; retry in {retry} s",
                        headers={"Retry-After": str(retry)},
                    )

    def add(
        self, function_id: str, model: str, nca_id: str, config: LlmConfig | None, usage: Usage
    ) -> None:
        """Count an answer's tokens in every window of the model's limits."""
        now = self._clock()
        spent = {
            "total": usage.input_tokens + usage.output_tokens,
            "input": usage.input_tokens,
            "output": usage.output_tokens,
        }
        if len(self._counts) > _MAX_KEYS:
            self._counts = {k: n for k, n in self._counts.items() if k[5] + k[4] > now}
        for kind, text in _limits(config):
            for _, window in self._rate(text):
                key = (function_id, model, nca_id, kind, window, int(now // window) * window)
                self._counts[key] = self._counts.get(key, 0) + spent[kind]


def prompt_estimate(body: bytes) -> int:
    """Prompt tokens of a request, estimated as a tokenizer would roughly count them (a token
    per 4 bytes of the body's text, at least 1): for a stream that reports no usage."""
    return max(1, len(body) // 4)


def usage_of(data: bytes) -> Usage | None:
    """The `usage` of an OpenAI answer body (or one SSE event's data), if it has one."""
    try:
        parsed = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested past msgspec's depth
        return None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else 0,
        output_tokens=completion if isinstance(completion, int) else 0,
    )


class UsageScanner:
    """Finds the `usage` of a streamed (SSE) answer as its chunks pass: the last one sent
    counts (servers that report it send it once, on the last chunk, or cumulatively).

    A stream that reports none (vLLM and OpenAI's API send usage in a stream only when the
    client asked for `stream_options.include_usage`) is counted by estimate, so a token limit
    still holds: one output token per `data:` event (these servers send a token per event;
    the role-only first event makes it one more), and `input_estimate` prompt tokens.
    """

    MAX_LINE = 1 << 20  # a longer line is skipped, not buffered

    def __init__(self, input_estimate: int = 0) -> None:
        self._tail = b""
        self._reported: Usage | None = None
        self._events = 0
        self._input_estimate = input_estimate

    @property
    def usage(self) -> Usage:
        if self._reported is not None:
            return self._reported
        return Usage(input_tokens=self._input_estimate, output_tokens=self._events)

    def feed(self, chunk: bytes) -> None:
        self._events += chunk.count(b"data:") - chunk.count(b"data: [DONE]")
        if not self._tail and b"\n" in chunk and b'"usage"' not in chunk:
            self._tail = chunk.rsplit(b"\n", 1)[1]  # the hot path: no usage in whole lines
            return
        lines = (self._tail + chunk).split(b"\n")
        tail = lines.pop()
        self._tail = tail if len(tail) <= self.MAX_LINE else b""
        for line in lines:
            if line.startswith(b"data:") and b'"usage"' in line:
                found = usage_of(line[5:].strip())
                if found is not None:
                    self._reported = found


class BodyUsage:
    """The `usage` of a plain JSON answer as its chunks pass: the body is kept (up to
    MAX_BODY bytes; a larger one is not counted) and read when it has ended."""

    MAX_BODY = 16 << 20

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self.MAX_BODY:
            self._parts.append(chunk)

    @property
    def usage(self) -> Usage:
        if self._size > self.MAX_BODY:
            return Usage()
        return usage_of(b"".join(self._parts)) or Usage()
