"""Authentication and authorization guards, and the NGC path families (spec §1.1, §6).

A route declares what it needs with `opt={"scopes": (...)}` (any one suffices); the app-wide
`authorize` guard turns the bearer key into a Principal on `request.state.principal` and
checks the scopes. Routes without `scopes` in opt are public (health, get-caller-info).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request, Router
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler
from litestar.types import ControllerRouterHandler

from nvcf_lite.api.services import services_of
from nvcf_lite.domain.auth import Keys, require_scope
from nvcf_lite.errors import Forbidden, NotFound
from nvcf_lite.models import Principal

PLAIN_PREFIX = "/v2/nvcf"
ORG_PREFIX = "/v2/orgs/{org:str}/nvcf"
TEAM_PREFIX = "/v2/orgs/{org:str}/teams/{team:str}/nvcf"


def scopes(*names: str) -> dict[str, Any]:
    """Route opt declaring that a key with any one of these scopes may call it."""
    return {"scopes": names}


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    needed: Sequence[str] | None = handler.opt.get("scopes")
    if needed is None:
        return
    keys: Keys = services_of(connection).keys
    principal = await keys.authenticate(connection.headers.get("authorization"))
    connection.state.principal = principal
    if needed:
        require_scope(principal, *needed)


async def check_org(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The org (and team) of the path must be the key's: the org selects the account, so a
    key of another org gets 404 (it cannot learn which orgs exist); a key limited to teams
    gets 403 on another team's paths. A key of no team may use any team path of its org
    (NGC org-level credentials). Runs after `authorize` (app guards run first)."""
    org = connection.path_params.get("org")
    if org is None or connection.scope.get("method") == "OPTIONS":  # Litestar's own answer
        return
    principal: Principal | None = connection.state.get("principal")
    if principal is None:  # a route that checks its key itself (pexec): the key picks the org
        keys: Keys = services_of(connection).keys
        principal = await keys.authenticate(connection.headers.get("authorization"))
        connection.state.principal = principal
    expected = principal.org_name
    if org != expected:
        raise NotFound(f"Org '{org}' not found (this key's org is '{expected}')")
    team = connection.path_params.get("team")
    if team is not None and principal.teams:
        if team not in principal.teams:
            names = ", ".join(f"'{t}'" for t in principal.teams)
            raise Forbidden(f"Team '{team}': the API key belongs to team(s) {names} only")


def server_account(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Server-wide resources (the model store) belong to the configured account: another
    account's key is 403 there (they are the server's, so their existence is no secret)."""
    principal: Principal | None = connection.state.get("principal")
    owner: str = services_of(connection).nca_id
    if principal is not None and principal.nca_id != owner:
        raise Forbidden(
            f"the model store belongs to the server's account '{owner}'; the API key is of"
            f" account '{principal.nca_id}'"
        )


def current_principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state.principal
    return principal


PRINCIPAL = {"principal": Provide(current_principal, sync_to_thread=False)}


def path_families(handlers: Sequence[ControllerRouterHandler]) -> list[Router]:
    """The same handlers under /v2/nvcf, /v2/orgs/{org}/nvcf and the team form."""
    return [
        Router(path=PLAIN_PREFIX, route_handlers=list(handlers)),
        Router(path=ORG_PREFIX, route_handlers=list(handlers), guards=[check_org]),
        Router(path=TEAM_PREFIX, route_handlers=list(handlers), guards=[check_org]),
    ]
