"""Secrets and rate limits of a function version (spec §2.8), both answered 204.

`PUT /secrets/functions/{fid}/versions/{vid}` (scope `update_secrets`) merges new values into a
version's secrets; running containers see them in /var/secrets/secrets.json. The deprecated
`PUT|DELETE /ratelimit/functions/{fid}/versions/{vid}` (scope `update_function`) set or clear
the same `rateLimit` as F8; ngcsdk 4.37's `update_rate_limit` / `remove_rate_limit` call them.
"""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, delete, put
from litestar.di import Provide
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from nvcf_lite.api.functions import (
    VERSION_PATH,
    Caller,
    FunctionsDep,
    RateLimitWire,
    SecretWire,
    functions_of,
    to_domain,
)
from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.function_fields import SecretInput
from nvcf_lite.domain.function_rules import FunctionUpdate
from nvcf_lite.models import RateLimit


class UpdateSecretsRequest(Wire):
    secrets: list[SecretWire]


class RateLimitRequest(Wire):
    rate_limit: RateLimitWire


class SecretsController(Controller):
    path = "/"
    tags = ["functions"]
    dependencies = {**PRINCIPAL, "functions": Provide(functions_of, sync_to_thread=False)}

    @put(
        "/secrets" + VERSION_PATH,
        status_code=204,
        opt=scopes("update_secrets"),
        summary="Update a version's secrets (merged by name)",
    )
    async def update_secrets(
        self,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        data: JSONBody[UpdateSecretsRequest],
        principal: Caller,
        functions: FunctionsDep,
    ) -> None:
        items = [SecretInput(name=s.name, value=s.value) for s in data.secrets]
        await functions.update_secrets(principal, str(function_id), str(version_id), items)

    @put(
        "/ratelimit" + VERSION_PATH,
        status_code=204,
        opt=scopes("update_function"),
        summary="Set a version's rate limit (deprecated: F8 with rateLimit)",
        deprecated=True,
    )
    async def set_rate_limit(
        self,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        data: JSONBody[RateLimitRequest],
        principal: Caller,
        functions: FunctionsDep,
    ) -> None:
        limit = to_domain(data.rate_limit, RateLimit)
        update = FunctionUpdate(rate_limit=limit)
        await functions.update(principal, str(function_id), str(version_id), update)

    @delete(
        "/ratelimit" + VERSION_PATH,
        status_code=204,
        opt=scopes("update_function"),
        summary="Clear a version's rate limit (deprecated: F8 with rateLimit null)",
        deprecated=True,
    )
    async def clear_rate_limit(
        self,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
        principal: Caller,
        functions: FunctionsDep,
    ) -> None:
        update = FunctionUpdate(rate_limit=None)
        await functions.update(principal, str(function_id), str(version_id), update)


SECRETS_HANDLERS: list[ControllerRouterHandler] = [SecretsController]
