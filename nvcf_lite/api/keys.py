"""API keys over HTTP (an nvcf-lite extension, spec §2.10 "nvcf-lite may offer its own
key-minting endpoint"): what `nvcf-lite keys` does, for the console's keys page.

K1-K3 (docs/nvcf-api.md Appendix B): `GET|POST /v2/nvcf-lite/keys`,
`DELETE /v2/nvcf-lite/keys/{keyId}`. Any valid key reaches the handlers; managing keys then
takes a key with every scope (domain/auth.require_every_scope), so no key mints one that
could do more than itself; and the keys listed, made and revoked are the caller's account's
(made with its teams): another account's key is not found. A new key's plaintext is in the answer to
its POST only; the server keeps its SHA-256.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.auth import Keys, require_every_scope
from nvcf_lite.models import Principal

KEYS_PATH = "/v2/nvcf-lite/keys"
ANY_KEY = scopes()  # authenticated; the handler checks the scopes
Caller = NamedDependency[Principal]


class KeyResourceWire(Wire, kw_only=True):
    type: str
    id: str


class ApiKeyWire(Wire, kw_only=True):
    key_id: str
    key_prefix: str
    nca_id: str
    description: str
    scopes: list[str]
    resources: list[KeyResourceWire]
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    teams: list[str] = []
    org_name: str = ""


class KeysResponse(Wire, kw_only=True):
    keys: list[ApiKeyWire]


class CreateKeyRequest(Wire, kw_only=True):
    scopes: list[str]
    functions: list[str] = []  # FID, FID/* or FID/VID; none: every function of the account
    description: str = ""


class CreateKeyResponse(Wire, kw_only=True):
    key: str  # the plaintext, shown this once
    api_key: ApiKeyWire


class RevokeKeyResponse(Wire, kw_only=True):
    key_id: str


def _keys(request: Request[Any, Any, Any], principal: Principal) -> Keys:
    require_every_scope(principal)
    keys: Keys = services_of(request).keys
    return keys


@get(KEYS_PATH, opt=ANY_KEY, dependencies=PRINCIPAL, tags=["nvcf-lite"], summary="List API keys")
async def list_keys(request: Request[Any, Any, Any], principal: Caller) -> KeysResponse:
    found = await _keys(request, principal).list(principal.nca_id)
    return KeysResponse(keys=[to_wire(k, ApiKeyWire) for k in found])


@post(
    KEYS_PATH,
    opt=ANY_KEY,
    dependencies=PRINCIPAL,
    status_code=200,
    tags=["nvcf-lite"],
    summary="Create an API key (its plaintext is in this answer only)",
)
async def create_key(
    request: Request[Any, Any, Any], principal: Caller, data: JSONBody[CreateKeyRequest]
) -> CreateKeyResponse:
    keys = _keys(request, principal)
    token, key = await keys.create(
        data.scopes,
        data.functions,
        data.description,
        nca_id=principal.nca_id,
        teams=principal.teams,  # a team-limited key mints no key that escapes its teams
    )
    return CreateKeyResponse(key=token, api_key=to_wire(key, ApiKeyWire))


@delete(
    KEYS_PATH + "/{key_id:str}",
    opt=ANY_KEY,
    dependencies=PRINCIPAL,
    status_code=200,
    tags=["nvcf-lite"],
    summary="Revoke an API key (by id or printed prefix)",
)
async def revoke_key(
    request: Request[Any, Any, Any], principal: Caller, key_id: FromPath[str]
) -> RevokeKeyResponse:
    revoked = await _keys(request, principal).revoke(key_id, principal.nca_id)
    return RevokeKeyResponse(key_id=revoked)


KEY_HANDLERS = [list_keys, create_key, revoke_key]
