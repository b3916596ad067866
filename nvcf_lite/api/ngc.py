"""The NGC endpoints the official clients call around the NVCF API (spec §2.11, §9).

`POST /v3/keys/get-caller-info` is how ngcsdk validates an `nvapi-` key before (nearly) every
call; `GET /v2/products` and `GET /v2/orgs` are CLI start-up calls; the registry look-ups
tell the SDK whether a function's image exists (here: in the local Docker engine);
`GET /token` is the NGC token service's exchange of a key for a bearer JWT (domain/tokens.py).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath

from nvcf_lite.api.security import scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.registry import LocalImage, Registry
from nvcf_lite.errors import NotFound, Unauthorized
from nvcf_lite.models import Principal


class CallerInfoRequest(Wire):
    credentials: str = ""


@post(
    "/v3/keys/get-caller-info",
    status_code=200,
    summary="NGC key check used by ngcsdk (form body credentials=<key>)",
    tags=["ngc"],
)
async def get_caller_info(
    request: Request[Any, Any, Any],
    data: Annotated[CallerInfoRequest, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> dict[str, Any]:
    keys: Keys = services_of(request).keys
    if not data.credentials:
        raise Unauthorized("form field 'credentials' with an API key is required")
    principal = await keys.verify(data.credentials.strip())
    org = principal.org_name
    # ngcsdk reads `user.roles[].team.name` for the teams a `configure(team_name=...)` may
    # name: one role per team of the key (a key of no team lists none).
    roles: list[dict[str, Any]] = [{"org": {"name": org}, "orgRoles": ["USER"]}]
    roles += [
        {"org": {"name": org}, "team": {"name": team}, "teamRoles": ["USER"]}
        for team in principal.teams
    ]
    return {
        "type": "SERVICE_KEY",
        "orgName": org,
        "ncaId": principal.nca_id,
        "keyId": principal.key_id,
        "scopes": sorted(principal.scopes),
        "user": {"roles": roles},
    }


@get(
    "/token",
    summary="A bearer token (JWT) for an API key: Basic $oauthtoken:<key> or Bearer <key>",
    tags=["ngc"],
)
async def token(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """NGC's `GET /token?service=ngc&scope=...` (spec §7.1); the query is accepted and ignored:
    the token acts with its key's scopes and resources."""
    keys: Keys = services_of(request).keys
    credential = _credential(request.headers.get("authorization"))
    value, expires_in = await keys.token(credential, services_of(request).token_ttl_s)
    return {"token": value, "expires_in": expires_in}


def _credential(authorization: str | None) -> str:
    """The API key of `Basic base64(user:key)` (any user; NGC's is `$oauthtoken`) or
    `Bearer key`."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            _user, sep, key = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep, key = "", ""
        if sep and key:
            return key.strip()
    raise Unauthorized(
        "Authorization must be 'Basic base64($oauthtoken:<API key>)' or 'Bearer <API key>'"
    )


@get("/v2/products", opt=scopes(), summary="NGC products (CLI start-up)", tags=["ngc"])
async def products() -> dict[str, Any]:
    return {"products": [{"name": "nv-cloud-functions", "displayName": "Cloud Functions"}]}


@get("/v2/orgs", opt=scopes(), summary="NGC organizations of the caller", tags=["ngc"])
async def orgs(request: Request[Any, Any, Any]) -> dict[str, Any]:
    principal: Principal = request.state.principal
    org = principal.org_name
    return {
        "organizations": [{"name": org, "displayName": org, "type": "ENTERPRISE"}],
        "paginationInfo": {"index": 0, "size": 1, "totalPages": 1, "totalResults": 1},
    }


@dataclass(frozen=True)
class RegistryPath:
    """`[team/<t>/]repos/<repo>[/images[/<tag>] | /tags[/<tag>]]` under /v2/org/<org>/."""

    team: str | None
    repo: str
    kind: str  # "repository", "images" or "tags"
    tag: str | None


def parse_registry_path(path: str) -> RegistryPath | None:
    parts = [p for p in path.strip("/").split("/") if p]
    team = None
    if len(parts) >= 2 and parts[0] == "team":
        team, parts = parts[1], parts[2:]
    if len(parts) < 2 or parts[0] != "repos":
        return None
    parts = parts[1:]
    for kind in ("images", "tags"):
        # `.../images` (list) or `.../images/<tag>`; a tag never contains '/'.
        if len(parts) >= 2 and parts[-1] == kind:
            return RegistryPath(team, "/".join(parts[:-1]), kind, None)
        if len(parts) >= 3 and parts[-2] == kind:
            return RegistryPath(team, "/".join(parts[:-2]), kind, parts[-1])
    if "images" in parts or "tags" in parts:  # scans, digests, signatures: not served
        return None
    return RegistryPath(team, "/".join(parts), "repository", None)


_OK = {"requestStatus": {"statusCode": "SUCCESS"}}
_ONE_PAGE = {"index": 0, "size": 1, "totalPages": 1, "totalResults": 1}


def _image_answer(found: LocalImage, kind: str, tagged: bool) -> dict[str, Any]:
    """Shapes ngcsdk parses: GetManifestByTagResponse (images/<tag>), MetaImageDetails
    (tags/<tag>), image lists (images, tags) and Repository (repos/<repo>)."""
    description = f"local Docker image {found.ref}"
    details = {
        "tag": found.tag,
        "description": description,
        "isMultiArchitecture": False,
        "isSigned": False,
        "architectureVariants": [],
        "localImage": found.ref,
    }
    if kind == "images" and tagged:
        return {
            **_OK,
            "name": found.repository,
            "tag": found.tag,
            "schemaVersion": 2,
            "localImage": found.ref,
        }
    if kind == "tags" and tagged:
        return {**_OK, **details}
    if kind in ("images", "tags"):
        return {**_OK, "images": [details], "paginationInfo": _ONE_PAGE}
    return {
        **_OK,
        "name": found.repository,
        "displayName": found.repository,
        "description": description,
        "latestTag": found.tag,
        "localImage": found.ref,
    }


@get(
    "/v2/org/{org:str}/{rest:path}",
    opt=scopes(),
    summary="NGC registry image look-up, answered from the local Docker engine",
    tags=["ngc"],
)
async def registry_image(
    request: Request[Any, Any, Any], org: FromPath[str], rest: FromPath[str]
) -> dict[str, Any]:
    registry: Registry = services_of(request).registry
    where = parse_registry_path(rest)
    if where is None or not where.repo:
        raise NotFound(f"no NGC registry resource at /v2/org/{org}{rest}")
    found = await registry.find_image(org, where.team, where.repo, where.tag)
    return _image_answer(found, where.kind, where.tag is not None)


NGC_HANDLERS = [get_caller_info, token, products, orgs, registry_image]
