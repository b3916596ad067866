"""The OpenAI-compatible gateway's domain side: which function serves a model, on which path
inside its container, whether the caller's token allowance lets the call in, and the usage
it reports afterwards (spec §2.1.1 `functionType: LLM`, `models[].llmConfig`).

A call names a model; the caller's reachable LLM function versions (its account's and those
shared with it, within a function-limited key's resources) whose `models[].name` is that model
serve it. None: 404. Some, none of them ACTIVE: 503 with `Retry-After` (deploy it). The call
then goes through `Invocations.submit` like any path-preserving invocation (the same durable
queue, placement, autoscaling, rate limits and metrics as pexec), to the container path
`llmConfig.uris` gives for the endpoint (default: the same `/v1/...` path).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from nvcf_lite.domain.auth import require_scope
from nvcf_lite.domain.invocations import INVOCABLE, VersionsOf, reachable
from nvcf_lite.domain.metrics import Metrics
from nvcf_lite.domain.token_limits import TokenLimiter, Usage
from nvcf_lite.errors import NotFound, NvcfError, Unavailable
from nvcf_lite.models import FunctionStatus, FunctionType, FunctionVersion, LlmConfig, Principal

ENDPOINTS = ("chat/completions", "completions", "embeddings")
INACTIVE_RETRY_S = 10  # Retry-After of a model whose functions are not deployed
LlmVersions = Callable[[], Awaitable[list[FunctionVersion]]]


@dataclass(frozen=True)
class ServedModel:
    """One model of one LLM function version."""

    name: str
    function_id: str
    version_id: str
    nca_id: str
    status: FunctionStatus
    created: int
    config: LlmConfig | None


@dataclass(frozen=True)
class Target:
    """Where a gateway call goes: the function version, its container path, its limits."""

    model: ServedModel
    path: str


def container_path(uris: tuple[str, ...] | None, endpoint: str) -> str:
    """The path inside the container for `endpoint` ("chat/completions", ...): the uri that
    ends with it; else a uri that names no endpoint (a base such as `/v1`) + the endpoint;
    else `/v1/{endpoint}`."""
    paths = [u for u in uris or () if u.startswith("/")]
    for uri in paths:
        if _serves(uri, endpoint):
            return uri
    for uri in paths:
        if not any(_serves(uri, e) for e in ENDPOINTS):
            return uri.rstrip("/") + "/" + endpoint
    return "/v1/" + endpoint


def _serves(uri: str, endpoint: str) -> bool:
    path = uri.rstrip("/")
    if endpoint == "completions" and path.endswith("/chat/completions"):
        return False
    return path.endswith("/" + endpoint)


def _epoch(stamp: str) -> int:
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def served_models(versions: list[FunctionVersion]) -> list[ServedModel]:
    return [
        ServedModel(
            name=m.name,
            function_id=v.function_id,
            version_id=v.version_id,
            nca_id=v.nca_id,
            status=v.status,
            created=_epoch(v.created_at),
            config=m.llm_config,
        )
        for v in versions
        if v.function_type == FunctionType.LLM
        for m in v.models or ()
    ]


class Gateway:
    def __init__(
        self,
        llm_versions: LlmVersions,
        versions_of: VersionsOf,
        metrics: Metrics,
        tokens: TokenLimiter | None = None,
        ttl_s: float = 2.0,
    ) -> None:
        self._llm_versions = llm_versions
        self._versions_of = versions_of
        self.metrics = metrics
        self.tokens = tokens or TokenLimiter()
        self._ttl_s = ttl_s
        self._cache: tuple[float, list[ServedModel]] | None = None
        self._loading: asyncio.Future[list[ServedModel]] | None = None
        self._generation = 0  # bumped by clear(): a read begun before it is not kept

    def clear(self) -> None:
        """Forget the model index (a function or deployment changed)."""
        self._cache = None
        self._loading = None
        self._generation += 1

    async def _index(self) -> list[ServedModel]:
        """The models of every LLM version, read at most once at a time (a burst of calls
        after a change waits for one read, not one each)."""
        cache = self._cache
        if cache is not None and cache[0] > time.monotonic():
            return cache[1]
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load(self._generation))
        return await asyncio.shield(self._loading)

    async def _load(self, generation: int) -> list[ServedModel]:
        try:
            models = served_models(await self._llm_versions())
        finally:
            if generation == self._generation:
                self._loading = None
        if generation == self._generation:
            self._cache = (time.monotonic() + self._ttl_s, models)
        return models

    async def _visible(self, principal: Principal, models: list[ServedModel]) -> list[ServedModel]:
        """The models of versions `principal` may invoke (own, shared, within its resources)."""
        out: list[ServedModel] = []
        for fid in dict.fromkeys(m.function_id for m in models):
            try:
                found = reachable(principal, fid, None, await self._versions_of(fid))
            except NvcfError:  # a function-limited key that does not name it
                continue
            ids = {v.version_id for v in found}
            out += [m for m in models if m.function_id == fid and m.version_id in ids]
        return out

    async def models(self, principal: Principal) -> list[ServedModel]:
        """GET /v1/models: the caller's models on ACTIVE versions, one entry per name."""
        require_scope(principal, "invoke_function")
        live = [m for m in await self._index() if m.status in INVOCABLE]
        seen: dict[str, ServedModel] = {}
        for m in await self._visible(principal, live):
            seen.setdefault(m.name, m)
        return sorted(seen.values(), key=lambda m: m.name)

    async def target(self, principal: Principal, model: str, endpoint: str) -> Target:
        """The version serving `model` for this caller (404 / 503), its tokens checked (429)."""
        require_scope(principal, "invoke_function")
        named = [m for m in await self._index() if m.name == model]
        visible = await self._visible(principal, named)
        if not visible:
            raise NotFound(
                f"The model '{model}' does not exist or you do not have access to it",
                openai_code="model_not_found",
            )
        live = [m for m in visible if m.status in INVOCABLE]
        if not live:
            raise Unavailable(
                f"The model '{model}' is not being served: its function is"
                f" {visible[0].status.value}, not ACTIVE (deploy it, or retry once it is)",
                headers={"Retry-After": str(INACTIVE_RETRY_S)},
                openai_code="model_not_ready",
            )
        chosen = random.choice(live)
        self.tokens.check(chosen.function_id, model, principal.nca_id, chosen.config)
        uris = chosen.config.uris if chosen.config else None
        return Target(chosen, container_path(uris, endpoint))

    def answered(self, principal: Principal, target: Target, endpoint: str, status: int) -> None:
        m = target.model
        self.metrics.llm_requests.inc(
            principal.key_id, m.function_id, m.name, endpoint, str(status)
        )

    def first_token(self, target: Target, seconds: float) -> None:
        self.metrics.llm_first_token.observe(seconds, target.model.function_id, target.model.name)

    def used(self, principal: Principal, target: Target, usage: Usage) -> None:
        """Count an answer's reported usage: token limits and /metrics."""
        m = target.model
        self.tokens.add(m.function_id, m.name, principal.nca_id, m.config, usage)
        for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            if count:
                self.metrics.llm_tokens.inc(
                    principal.key_id, m.function_id, m.name, kind, by=float(count)
                )
