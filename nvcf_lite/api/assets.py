"""Assets A1-A5 (spec §2.5) and the signed upload and download URLs nvcf-lite serves itself.

`ASSET_HANDLERS` go under every path family (`/v2/nvcf`, `/v2/orgs/{org}[/teams/{team}]/nvcf`)
and need `invoke_function`. `SIGNED_HANDLERS` take no API key, as S3 takes none: the URL's
signature is the credential. The upload streams the request body to the blob store, so it is
exempt from the app's small body limit; the domain enforces `assets.max_asset_bytes` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import InternalServerException
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from litestar.types import ControllerRouterHandler

from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire
from nvcf_lite.domain.assets import BLOB_PATH, UPLOAD_PATH, Assets
from nvcf_lite.errors import Invalid
from nvcf_lite.models import Asset, Principal

INVOKE = scopes("invoke_function")
DEFAULT_DESCRIPTION = "Description not available"


class CreateAssetRequest(Wire):
    content_type: str | None = None
    description: str | None = None


class CreateAssetResponse(Wire):
    asset_id: str
    upload_url: str
    content_type: str
    description: str


class AssetWire(Wire):
    asset_id: str
    description: str | None = None
    content_type: str | None = None
    created_at: str | None = None


class ListAssetsResponse(Wire):
    assets: list[AssetWire]


class AssetResponse(Wire):
    asset: AssetWire


class ContentRedirectResponse(Wire):
    presigned_url: str


def _wire(asset: Asset) -> AssetWire:
    return AssetWire(
        asset_id=asset.asset_id,
        description=asset.description or DEFAULT_DESCRIPTION,
        content_type=asset.content_type,
        created_at=asset.created_at,
    )


def _assets(request: Request[Any, Any, Any]) -> Assets:
    return services_of(request).assets


ASSETS = {"assets": Provide(_assets, sync_to_thread=False)}
Caller = NamedDependency[Principal]
AssetsDep = NamedDependency[Assets]


class AssetsController(Controller):
    path = "/assets"
    tags = ["assets"]
    dependencies = {**PRINCIPAL, **ASSETS}

    @post("/", status_code=200, opt=INVOKE, summary="A1 create an asset (and its upload URL)")
    async def create_asset(
        self, data: JSONBody[CreateAssetRequest], principal: Caller, assets: AssetsDep
    ) -> CreateAssetResponse:
        asset, url = await assets.create(principal, data.content_type, data.description)
        return CreateAssetResponse(
            asset_id=asset.asset_id,
            upload_url=url,
            content_type=asset.content_type,
            description=asset.description,
        )

    @get("/", opt=INVOKE, summary="A2 list the account's assets")
    async def list_assets(self, principal: Caller, assets: AssetsDep) -> ListAssetsResponse:
        return ListAssetsResponse(assets=[_wire(a) for a in await assets.list_assets(principal)])

    @get("/{asset_id:str}", opt=INVOKE, summary="A3 get one asset")
    async def get_asset(
        self, asset_id: FromPath[UUID], principal: Caller, assets: AssetsDep
    ) -> AssetResponse:
        return AssetResponse(asset=_wire(await assets.get(principal, str(asset_id))))

    @delete("/{asset_id:str}", opt=INVOKE, summary="A4 delete an asset")
    async def delete_asset(
        self, asset_id: FromPath[UUID], principal: Caller, assets: AssetsDep
    ) -> None:
        await assets.delete(principal, str(asset_id))

    @get("/{asset_id:str}/content-redirect", opt=INVOKE, summary="A5 signed URL of the bytes")
    async def content_redirect(
        self, asset_id: FromPath[UUID], principal: Caller, assets: AssetsDep
    ) -> ContentRedirectResponse:
        url = await assets.content_redirect(principal, str(asset_id))
        return ContentRedirectResponse(presigned_url=url)


ASSET_HANDLERS: list[ControllerRouterHandler] = [AssetsController]


async def request_chunks(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """A streamed request body, chunk by chunk (asset uploads, model store pushes)."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except InternalServerException as exc:  # Litestar's word for "the client disconnected"
        raise Invalid("The upload was interrupted before its whole body arrived") from exc


def _etag(asset: Asset) -> dict[str, str]:
    return {"ETag": f'"{asset.sha256}"'} if asset.sha256 else {}


@put(
    UPLOAD_PATH.replace("{asset_id}", "{asset_id:str}"),
    status_code=200,
    dependencies=ASSETS,
    request_max_body_size=None,  # streamed to disk; the domain enforces max_asset_bytes
    include_in_schema=False,
)
async def upload_asset(
    asset_id: FromPath[str], request: Request[Any, Any, Any], assets: AssetsDep
) -> Response[bytes]:
    """The signed PUT of an asset's bytes (the A1 uploadUrl); 200 with an empty body, as S3."""
    query = dict(request.query_params.items())
    asset = await assets.accept_upload(asset_id, query, request.headers, request_chunks(request))
    return Response(b"", status_code=200, media_type="text/plain", headers=_etag(asset))


@get(
    BLOB_PATH.replace("{kind}", "{kind:str}").replace("{blob_id}", "{blob_id:str}"),
    dependencies=ASSETS,
    include_in_schema=False,
)
async def download_blob(
    kind: FromPath[str], blob_id: FromPath[str], request: Request[Any, Any, Any], assets: AssetsDep
) -> Stream:
    """A signed GET of stored bytes: an asset (A5 presignedUrl) or a large result (302 Location)."""
    blob = await assets.download(kind, blob_id, dict(request.query_params.items()))
    return Stream(
        blob.chunks,
        media_type=blob.media_type,
        headers={
            "Content-Length": str(blob.size),
            "Content-Disposition": f'attachment; filename="{blob.filename}"',
            "X-Content-Type-Options": "nosniff",  # an asset's own type, never sniffed as HTML
        },
    )


SIGNED_HANDLERS: list[ControllerRouterHandler] = [upload_asset, download_blob]
