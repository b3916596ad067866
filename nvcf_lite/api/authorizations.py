"""Function sharing Z1-Z10 (spec §2.7), scope `authorize_clients`, in every path family.

`/authorizations/functions/{fid}` is the function-level set, `.../versions/{vid}` a version's.
POST replaces the set, PATCH `/add` and `/remove` change one party, DELETE clears it, GET reads
it; every answer is JSON (ngcsdk parses each one). The function-level GET (Z2) answers
`functions` (one entry per version, the function's parties inherited) and also `function`
(the function-level set itself, an nvcf-lite addition): ngcsdk's `authorizations.add` reads
`function.authorizedParties` to choose between POST and PATCH `/add`, so without it a second
add at function level would replace the first.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.authorizations import Authorizations, PartiesOf
from nvcf_lite.errors import Invalid
from nvcf_lite.models import AuthorizedParty, Principal

Caller = NamedDependency[Principal]
AUTHORIZE = scopes("authorize_clients")
FUNCTION = "/functions/{function_id:str}"
VERSION = FUNCTION + "/versions/{version_id:str}"


class PartyWire(Wire):
    nca_id: str
    client_id: str | None = None


class PartiesRequest(Wire):
    authorized_parties: list[PartyWire]


class PartyRequest(Wire):
    authorized_party: PartyWire


class PartiesWire(Wire, kw_only=True):
    id: str
    nca_id: str
    version_id: str | None = None
    authorized_parties: list[PartyWire]


class PartiesResponse(Wire):
    function: PartiesWire


class FunctionPartiesResponse(Wire):
    functions: list[PartiesWire]
    function: PartiesWire | None = None


def _wire(found: PartiesOf) -> PartiesWire:
    return PartiesWire(
        id=found.function_id,
        nca_id=found.nca_id,
        version_id=found.version_id,
        authorized_parties=[PartyWire(p.nca_id, p.client_id) for p in found.parties],
    )


def _party(wire: PartyWire) -> AuthorizedParty:
    return AuthorizedParty(nca_id=wire.nca_id.strip(), client_id=wire.client_id)


def _of(request: Request[Any, Any, Any]) -> Authorizations:
    return services_of(request).authorizations


def _ids(
    request: Request[Any, Any, Any], function_id: UUID, version_id: UUID | None
) -> tuple[str, str | None]:
    """The ids of a function-level (Z1-Z5) or version-level (Z6-Z10) route. On a version
    route the path's version id is a UUID: `.../versions/null` reads as None when converted,
    and would otherwise reach the function-level set."""
    if version_id is None and "version_id" in request.path_params:
        raise Invalid("Invalid request: 'version_id' must be a UUID")
    return str(function_id), str(version_id) if version_id else None


class AuthorizationsController(Controller):
    path = "/authorizations"
    dependencies = PRINCIPAL
    tags = ["authorizations"]

    @get(FUNCTION, opt=AUTHORIZE, summary="Z2: the parties of each version of a function")
    async def function_parties(
        self, request: Request[Any, Any, Any], principal: Caller, function_id: FromPath[UUID]
    ) -> FunctionPartiesResponse:
        fid = str(function_id)
        found = await _of(request).function(principal, fid)
        level = await _of(request).get(principal, fid, None)
        return FunctionPartiesResponse(functions=[_wire(f) for f in found], function=_wire(level))

    @get(VERSION, opt=AUTHORIZE, summary="Z7: a version's parties (the function's inherited)")
    async def version_parties(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID],
    ) -> PartiesResponse:
        fid, vid = _ids(request, function_id, version_id)
        return PartiesResponse(_wire(await _of(request).get(principal, fid, vid)))

    @post([FUNCTION, VERSION], opt=AUTHORIZE, status_code=200, summary="Z1/Z6: set the parties")
    async def replace(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        data: JSONBody[PartiesRequest],
        version_id: FromPath[UUID | None] = None,
    ) -> PartiesResponse:
        fid, vid = _ids(request, function_id, version_id)
        parties = [_party(p) for p in data.authorized_parties]
        return PartiesResponse(_wire(await _of(request).replace(principal, fid, vid, parties)))

    @patch([FUNCTION + "/add", VERSION + "/add"], opt=AUTHORIZE, summary="Z3/Z8: add a party")
    async def add(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        data: JSONBody[PartyRequest],
        version_id: FromPath[UUID | None] = None,
    ) -> PartiesResponse:
        fid, vid = _ids(request, function_id, version_id)
        party = _party(data.authorized_party)
        return PartiesResponse(_wire(await _of(request).add(principal, fid, vid, party)))

    @patch(
        [FUNCTION + "/remove", VERSION + "/remove"], opt=AUTHORIZE, summary="Z4/Z9: remove a party"
    )
    async def remove(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        data: JSONBody[PartyRequest],
        version_id: FromPath[UUID | None] = None,
    ) -> PartiesResponse:
        fid, vid = _ids(request, function_id, version_id)
        party = _party(data.authorized_party)
        return PartiesResponse(_wire(await _of(request).remove(principal, fid, vid, party)))

    @delete([FUNCTION, VERSION], opt=AUTHORIZE, status_code=200, summary="Z5/Z10: clear")
    async def clear(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        function_id: FromPath[UUID],
        version_id: FromPath[UUID | None] = None,
    ) -> PartiesResponse:
        fid, vid = _ids(request, function_id, version_id)
        return PartiesResponse(_wire(await _of(request).clear(principal, fid, vid)))


AUTHORIZATION_HANDLERS = [AuthorizationsController]
