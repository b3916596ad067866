"""Telemetry endpoints (spec §2.8): create, list, get, delete, replace the secret; and the
check a version's `telemetries` ids pass at registration (spec §2.1.1).

Rules and messages follow NVCF's `TelemetryService` and `FunctionManagementService`: the
telemetry's name is its secret's name, unique within an account; a telemetry that a function
version uses cannot be deleted (400 naming the versions); a version may name only telemetries
of its account whose `types` include the kind it names them for. nvcf-lite answers an unknown
id at registration 400 naming the id (NVCF's lookup answers 404). Which telemetries nvcf-lite
ships to, and how, is workers/telemetry_shipping.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from nvcf_lite.domain.function_fields import MAX_SECRET_NAME, MAX_SECRET_VALUE, SECRET_NAME_RE
from nvcf_lite.domain.function_fields import SecretInput as SecretInput
from nvcf_lite.domain.function_rules import parse_enum
from nvcf_lite.errors import Invalid, NotFound
from nvcf_lite.models import (
    Principal,
    Telemetries,
    Telemetry,
    TelemetryProtocol,
    TelemetryProvider,
    TelemetryType,
    new_id,
    now_iso,
)
from nvcf_lite.store.telemetries import NameTaken, TelemetriesRepo

MAX_ENDPOINT = 2048
E = TypeVar("E", TelemetryProtocol, TelemetryProvider, TelemetryType)
UsersOf = Callable[[str, str], Awaitable[list[tuple[str, str]]]]
"""(nca_id, telemetry_id) -> the (function id, version id) of the versions that use it."""
# A version's telemetries field -> the type its telemetry must have, and its wire name.
KINDS: tuple[tuple[str, TelemetryType, str], ...] = (
    ("logs_telemetry_id", TelemetryType.LOGS, "logsTelemetryId"),
    ("metrics_telemetry_id", TelemetryType.METRICS, "metricsTelemetryId"),
    ("traces_telemetry_id", TelemetryType.TRACES, "tracesTelemetryId"),
)


class TelemetryInput(msgspec.Struct, frozen=True, kw_only=True):
    """The body of POST /telemetries (`TelemetryRequest`), shapes checked, rules not yet."""

    endpoint: str | None = None
    protocol: str | None = None
    provider: str | None = None
    types: tuple[str, ...] | None = None
    secret: SecretInput | None = None


class TelemetryEndpoints:
    def __init__(self, repo: TelemetriesRepo, *, users: UsersOf) -> None:
        self.repo = repo
        self.users = users

    async def create(self, principal: Principal, given: TelemetryInput) -> Telemetry:
        secret = _secret(given.secret)
        telemetry = Telemetry(
            telemetry_id=new_id(),
            name=secret.name,
            endpoint=_endpoint(given.endpoint),
            protocol=_required(TelemetryProtocol, "protocol", given.protocol),
            provider=_required(TelemetryProvider, "provider", given.provider),
            types=_types(given.types),
            created_at=now_iso(),
        )
        try:
            await self.repo.insert(principal.nca_id, telemetry, secret.value)
        except NameTaken:
            raise Invalid(
                f"Account '{principal.nca_id}': Telemetry and corresponding secret with name"
                f" '{secret.name}' already exists in the account - Telemetries must have unique"
                " names within an account"
            ) from None
        return telemetry

    async def list(self, principal: Principal) -> list[Telemetry]:
        return await self.repo.list(principal.nca_id)

    async def get(self, principal: Principal, telemetry_id: str) -> Telemetry:
        found = await self.repo.get(principal.nca_id, telemetry_id)
        if found is None:
            raise NotFound(_not_found(principal.nca_id, telemetry_id))
        return found

    async def delete(self, principal: Principal, telemetry_id: str) -> None:
        """A telemetry that a version uses stays: 400 naming each version (NVCF's rule)."""
        await self.get(principal, telemetry_id)
        users = await self.users(principal.nca_id, telemetry_id)
        if users:
            raise Invalid(
                "; ".join(
                    f"Telemetry '{telemetry_id}': Cannot be deleted as it is in use by Function"
                    f" id '{fid}', version '{vid}' - Delete the function first to be able to"
                    " delete the telemetry."
                    for fid, vid in users
                )
            )
        if not await self.repo.delete(principal.nca_id, telemetry_id):
            raise NotFound(_not_found(principal.nca_id, telemetry_id))

    async def update_secret(
        self, principal: Principal, telemetry_id: str, given: SecretInput | None
    ) -> None:
        """PUT /secrets/telemetries/{id}: the value is replaced; the telemetry keeps its name."""
        secret = _secret(given)
        if not await self.repo.set_secret(principal.nca_id, telemetry_id, secret.value):
            raise NotFound(_not_found(principal.nca_id, telemetry_id))

    async def check_version(self, nca_id: str, telemetries: Telemetries | None) -> None:
        """Registration: each id names a telemetry of the account with the kind's type."""
        if telemetries is None:
            return
        for field, kind, wire in KINDS:
            telemetry_id = getattr(telemetries, field)
            if telemetry_id is None:
                continue
            found = await self.repo.get(nca_id, telemetry_id)
            if found is None:
                raise Invalid(
                    f"Invalid request: 'telemetries.{wire}': telemetry '{telemetry_id}' not"
                    f" found in account '{nca_id}'"
                )
            if kind not in found.types:
                have = ", ".join(t.value for t in found.types)
                raise Invalid(
                    f"Invalid telemetry type: 'telemetries.{wire}' names telemetry"
                    f" '{telemetry_id}' ('{found.name}') of types {have}; it needs {kind.value}"
                )

    # -- for the shipping worker (no key involved) -----------------------------------------

    async def endpoint_of(
        self, nca_id: str, telemetry_id: str
    ) -> tuple[Telemetry, str | dict[str, Any] | None] | None:
        """A telemetry and its secret value, or None when it is gone."""
        found = await self.repo.get(nca_id, telemetry_id)
        if found is None:
            return None
        return found, await self.repo.secret(telemetry_id)


def _not_found(nca_id: str, telemetry_id: str) -> str:
    return f"Account '{nca_id}' Telemetry '{telemetry_id}': Not found"


def _endpoint(value: str | None) -> str:
    if value is None or not value.strip():
        raise Invalid("Invalid request: 'endpoint' cannot be empty/null in the telemetry payload")
    value = value.strip()
    if len(value) > MAX_ENDPOINT or any(c.isspace() or ord(c) < 32 for c in value):
        raise Invalid(
            f"Invalid request: 'endpoint' must be a URL of at most {MAX_ENDPOINT} characters"
            " without spaces"
        )
    return value


def _required(kind: type[E], field: str, value: str | None) -> E:
    if value is None:
        raise Invalid(f"Invalid request: '{field}' cannot be empty/null in the telemetry payload")
    return parse_enum(kind, field, value)


def _types(values: Sequence[str] | None) -> tuple[TelemetryType, ...]:
    if not values:
        raise Invalid("Invalid request: 'types' must name at least one of LOGS, METRICS, TRACES")
    parsed = [_required(TelemetryType, "types", v) for v in values]
    return tuple(dict.fromkeys(parsed))


def _secret(given: SecretInput | None) -> SecretInput:
    if given is None:
        raise Invalid("Invalid request: 'secret' cannot be empty/null in the telemetry payload")
    name, value = given.name, given.value
    if not 1 <= len(name) <= MAX_SECRET_NAME:
        raise Invalid(
            f"Invalid secret name: 'secret.name' must be 1 - {MAX_SECRET_NAME} characters long"
        )
    if not SECRET_NAME_RE.fullmatch(name):
        raise Invalid(
            f"Invalid secret name: 'secret.name' must conform to regex {SECRET_NAME_RE.pattern}"
        )
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    if not 1 <= len(text) <= MAX_SECRET_VALUE:  # as a function secret's (function_fields)
        raise Invalid(
            f"Invalid request: 'secret.value' must be 1 - {MAX_SECRET_VALUE} characters long"
            " (objects count as JSON text)"
        )
    return given
