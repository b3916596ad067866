"""The NGC endpoints the official clients call around the NVCF API (spec §2.11, §9).

`POST /v3/keys/get-caller-info` is how ngcsdk validates an `nvapi-` key before (nearly) every
call; `GET /v2/products` and `GET /v2/orgs` are CLI start-up calls; the registry look-ups
tell the SDK whether a function's image exists (here: in the local Docker engine).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath

from nvcf_lite.api.security import scopes
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.registry import Registry
from nvcf_lite.errors import NotFound, Unauthorized


class CallerInfoForm(Wire):
    credentials: str = ""


@post(
    "/v3/keys/get-caller-info",
    status_code=200,
    summary="NGC key check used by ngcsdk (form body credentials=<key>)",
    tags=["ngc"],
)
async def get_caller_info(
    request: Request[Any, Any, Any],
    data: Annotated[CallerInfoForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> dict[str, Any]:
    keys: Keys = request.app.state.api_keys
    if not data.credentials:
        raise Unauthorized("form field 'credentials' with an API key is required")
    principal = await keys.verify(data.credentials.strip())
    org: str = request.app.state.org_name
    return {
        "type": "SERVICE_KEY",
        "orgName": org,
        "ncaId": principal.nca_id,
        "keyId": principal.key_id,
        "scopes": sorted(principal.scopes),
        "user": {"roles": [{"org": {"name": org}, "orgRoles": ["USER"]}]},
    }


@get("/v2/products", opt=scopes(), summary="NGC products (CLI start-up)", tags=["ngc"])
async def products() -> dict[str, Any]:
    return {"products": [{"name": "nv-cloud-functions", "displayName": "Cloud Functions"}]}


@get("/v2/orgs", opt=scopes(), summary="NGC organizations of the caller", tags=["ngc"])
async def orgs(request: Request[Any, Any, Any]) -> dict[str, Any]:
    org: str = request.app.state.org_name
    return {
        "organizations": [{"name": org, "displayName": org, "type": "ENTERPRISE"}],
        "paginationInfo": {"index": 0, "size": 1, "totalPages": 1, "totalResults": 1},
    }


def _split_repo(path: str) -> tuple[str | None, str, str | None]:
    """`[team/<t>/]repos/<image>/images[/<tag>]` -> (team, image, tag)."""
    parts = path.strip("/").split("/")
    team = None
    if len(parts) >= 2 and parts[0] == "team":
        team, parts = parts[1], parts[2:]
    if not parts or parts[0] != "repos" or "images" not in parts[1:]:
        return team, "", None
    at = len(parts) - 1 - parts[::-1].index("images")
    repo = "/".join(parts[1:at])
    tag = "/".join(parts[at + 1 :]) or None
    return team, repo, tag


@get(
    "/v2/org/{org:str}/{rest:path}",
    opt=scopes(),
    summary="NGC registry image look-up, answered from the local Docker engine",
    tags=["ngc"],
)
async def registry_image(
    request: Request[Any, Any, Any], org: FromPath[str], rest: FromPath[str]
) -> dict[str, Any]:
    registry: Registry = request.app.state.registry
    team, repo, tag = _split_repo(rest)
    if not repo:
        raise NotFound(f"no NGC registry resource at /v2/org/{org}{rest}")
    found = await registry.find_image(org, team, repo, tag)
    return {"requestStatus": {"statusCode": "SUCCESS"}, "image": found, "images": [found]}


NGC_HANDLERS = [get_caller_info, products, orgs, registry_image]
