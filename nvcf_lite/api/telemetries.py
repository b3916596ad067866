"""Telemetry endpoints (spec §2.8): E1-E4 under `/telemetries` (scope `manage_telemetries`)
and E5 `PUT /secrets/telemetries/{telemetryId}` (scope `update_secrets`, 204).

Bodies are NVCF's `TelemetryRequest` / `TelemetryResponse` / `ListTelemetryResponse`
([OSS] `rest/telemetry/dto`); ngcsdk 4.37 `telemetry_endpoint.py` calls the NGC form
`/v2/orgs/{org}/nvcf/telemetries`. The secret is accepted, sealed and never returned.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from nvcf_lite.api.functions import Caller, SecretWire, to_domain
from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.telemetries import SecretInput, TelemetryEndpoints, TelemetryInput


class TelemetryRequest(Wire):
    endpoint: str | None = None
    protocol: str | None = None
    provider: str | None = None
    types: list[str] | None = None
    secret: SecretWire | None = None


class TelemetryWire(Wire):
    telemetry_id: str
    name: str
    endpoint: str
    protocol: str
    provider: str
    types: list[str]
    created_at: str


class TelemetryResponse(Wire):
    telemetry: TelemetryWire


class ListTelemetryResponse(Wire):
    telemetries: list[TelemetryWire]


class UpdateTelemetrySecretRequest(Wire):
    secret: SecretWire | None = None


def telemetries_of(request: Request[Any, Any, Any]) -> TelemetryEndpoints:
    return services_of(request).telemetries


TelemetriesDep = NamedDependency[TelemetryEndpoints]
MANAGE = scopes("manage_telemetries")
ONE = "/telemetries/{telemetry_id:str}"


class TelemetriesController(Controller):
    path = "/"
    tags = ["telemetries"]
    dependencies = {**PRINCIPAL, "telemetries": Provide(telemetries_of, sync_to_thread=False)}

    @post("/telemetries", status_code=200, opt=MANAGE, summary="E1 create a telemetry endpoint")
    async def create_telemetry(
        self, data: JSONBody[TelemetryRequest], principal: Caller, telemetries: TelemetriesDep
    ) -> TelemetryResponse:
        made = await telemetries.create(principal, to_domain(data, TelemetryInput))
        return TelemetryResponse(telemetry=to_wire(made, TelemetryWire))

    @get("/telemetries", opt=MANAGE, summary="E2 list the account's telemetry endpoints")
    async def list_telemetries(
        self, principal: Caller, telemetries: TelemetriesDep
    ) -> ListTelemetryResponse:
        found = await telemetries.list(principal)
        return ListTelemetryResponse(telemetries=[to_wire(t, TelemetryWire) for t in found])

    @get(ONE, opt=MANAGE, summary="E3 get a telemetry endpoint")
    async def get_telemetry(
        self, telemetry_id: FromPath[UUID], principal: Caller, telemetries: TelemetriesDep
    ) -> TelemetryResponse:
        found = await telemetries.get(principal, str(telemetry_id))
        return TelemetryResponse(telemetry=to_wire(found, TelemetryWire))

    @delete(ONE, opt=MANAGE, summary="E4 delete a telemetry endpoint (400 while a version uses it)")
    async def delete_telemetry(
        self, telemetry_id: FromPath[UUID], principal: Caller, telemetries: TelemetriesDep
    ) -> None:
        await telemetries.delete(principal, str(telemetry_id))

    @put(
        "/secrets" + ONE,
        status_code=204,
        opt=scopes("update_secrets"),
        summary="E5 replace a telemetry endpoint's secret",
    )
    async def update_telemetry_secret(
        self,
        telemetry_id: FromPath[UUID],
        data: JSONBody[UpdateTelemetrySecretRequest],
        principal: Caller,
        telemetries: TelemetriesDep,
    ) -> None:
        given = None if data.secret is None else to_domain(data.secret, SecretInput)
        await telemetries.update_secret(principal, str(telemetry_id), given)


TELEMETRY_HANDLERS: list[ControllerRouterHandler] = [TelemetriesController]
