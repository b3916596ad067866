"""Assets (spec §2.5): reservations, signed local uploads, use in invocations, expiry.

An asset is reserved by A1, which answers with an upload URL on this server signed by the one
`Signer` (the same scheme signs the download URLs of large results, §2.3.7). The PUT to that
URL needs no API key: its signature covers the asset id, the expiry, and the Content-Type and
`x-amz-meta-nvcf-asset-description` the client must repeat, as with S3. Bytes go to the one
`BlobStore`; SQLite keeps the metadata. Invocations name assets in
NVCF-INPUT-ASSET-REFERENCES; `stage` hard-links their files into the request's asset folder
when the request is accepted, so deleting (or expiring) an asset later does not take the bytes
away from a request that is already queued. The sweeper calls `sweep` to drop expired assets,
unused reservations and large results, files and rows together.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from nvcf_lite.config import AssetsConfig
from nvcf_lite.domain.asset_rules import (
    DESCRIPTION_HEADER,
    check_new_asset,
    header_text,
    parse_references,
    require_same,
    too_large,
)
from nvcf_lite.domain.signing import Signer
from nvcf_lite.errors import Conflict, InsufficientStorage, Invalid, NotFound
from nvcf_lite.models import Asset, Principal, new_id, now_iso, parse_uuid
from nvcf_lite.store.assets import AssetsRepo
from nvcf_lite.store.blobs import BlobMissing, BlobStore, BlobTooLarge, NoSpace

UPLOAD_PATH = "/_nvcf-lite/uploads/assets/{asset_id}"
BLOB_PATH = "/_nvcf-lite/blobs/{kind}/{blob_id}"
_BATCH = 500


class Download:
    """A blob ready to stream: its size, media type, file name and bytes."""

    def __init__(
        self, size: int, media_type: str, filename: str, chunks: AsyncIterator[bytes]
    ) -> None:
        self.size = size
        self.media_type = media_type
        self.filename = filename
        self.chunks = chunks


class Assets:
    def __init__(
        self, repo: AssetsRepo, blobs: BlobStore, signer: Signer, cfg: AssetsConfig, base_url: str
    ) -> None:
        self._repo = repo
        self._blobs = blobs
        self._signer = signer
        self._cfg = cfg
        self._base_url = base_url.rstrip("/")
        self._uploading: set[str] = set()  # the sweeper leaves these alone

    def _now(self) -> float:
        return self._signer.clock()

    def _missing(self, principal: Principal, asset_id: str) -> NotFound:
        return NotFound(f"Asset '{asset_id}' does not exist for account '{principal.nca_id}'")

    def _alive(self, asset: Asset) -> bool:
        now = self._now()
        return asset.expires_at > now and (
            asset.uploaded_at is not None or asset.upload_expires_at > now
        )

    # -- A1-A5 ---------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, content_type: str | None, description: str | None
    ) -> tuple[Asset, str]:
        """A1: reserve an asset; the record and its signed upload URL."""
        content_type, description = check_new_asset(content_type, description)
        now = self._now()
        expires = now + self._cfg.asset_ttl_s
        asset = Asset(
            asset_id=new_id(),
            nca_id=principal.nca_id,
            content_type=content_type,
            description=description,
            created_at=now_iso(),
            upload_expires_at=min(math.ceil(now + self._cfg.upload_url_ttl_s), expires),
            expires_at=expires,
        )
        await self._repo.insert(asset)
        return asset, self._upload_url(asset)

    def _upload_url(self, asset: Asset) -> str:
        path = UPLOAD_PATH.format(asset_id=asset.asset_id)
        extra = {"content-type": asset.content_type, DESCRIPTION_HEADER: asset.description}
        query = self._signer.sign("PUT", path, int(asset.upload_expires_at), extra)
        return f"{self._base_url}{path}?{query}"

    async def list_assets(self, principal: Principal) -> list[Asset]:
        return [a for a in await self._repo.of_account(principal.nca_id) if self._alive(a)]

    async def get(self, principal: Principal, asset_id: str) -> Asset:
        asset = await self._repo.get(asset_id)
        if asset is None or asset.nca_id != principal.nca_id or not self._alive(asset):
            raise self._missing(principal, asset_id)
        return asset

    async def delete(self, principal: Principal, asset_id: str) -> None:
        """A4. Requests already accepted keep their hard-linked copy (see `stage`)."""
        await self.get(principal, asset_id)
        await self._blobs.delete("assets", asset_id)  # file first: a crash leaves a row to sweep
        await self._repo.delete([asset_id])

    async def content_redirect(self, principal: Principal, asset_id: str) -> str:
        """A5: a signed GET URL of the uploaded bytes."""
        asset = await self.get(principal, asset_id)
        if asset.uploaded_at is None:  # its state, not the request, is wrong: 409
            raise Conflict(f"Asset '{asset_id}' has not been uploaded yet")
        expires = min(math.ceil(self._now() + self._cfg.download_url_ttl_s), asset.expires_at)
        return self._download_url("assets", asset_id, int(expires))

    # -- the signed upload ---------------------------------------------------------------------

    async def accept_upload(
        self,
        asset_id: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        chunks: AsyncIterator[bytes],
    ) -> Asset:
        """The PUT to an upload URL: check it, stream the body to the blob store, record it."""
        asset = await self._repo.get(asset_id) if parse_uuid(asset_id) == asset_id else None
        content_type = header_text(headers.get("content-type"))
        description = header_text(headers.get(DESCRIPTION_HEADER))
        signed = (
            {"content-type": asset.content_type, DESCRIPTION_HEADER: asset.description}
            if asset is not None
            else {"content-type": content_type, DESCRIPTION_HEADER: description}
        )
        self._signer.verify("PUT", UPLOAD_PATH.format(asset_id=asset_id), query, signed)
        if asset is None or not self._alive(asset):
            raise NotFound(f"Asset '{asset_id}' does not exist (deleted or expired)")
        require_same("Content-Type", content_type, asset.content_type)
        require_same(DESCRIPTION_HEADER, description, asset.description)
        if asset.uploaded_at is not None:
            raise Conflict(f"Asset '{asset_id}' has already been uploaded")
        if asset_id in self._uploading:
            raise Conflict(f"An upload of asset '{asset_id}' is already in progress")
        limit = self._cfg.max_asset_bytes
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise too_large(limit)
        self._uploading.add(asset_id)
        try:
            size, sha256 = await self._write(asset_id, chunks, limit)
            if not await self._repo.mark_uploaded(asset_id, now_iso(), size, sha256):
                await self._blobs.delete("assets", asset_id)
                raise NotFound(f"Asset '{asset_id}' was deleted during its upload")
        finally:
            self._uploading.discard(asset_id)
        return await self._repo.get(asset_id) or asset

    async def _write(
        self, asset_id: str, chunks: AsyncIterator[bytes], limit: int
    ) -> tuple[int, str]:
        try:
            return await self._blobs.write_stream("assets", asset_id, chunks, limit)
        except BlobTooLarge:
            raise too_large(limit) from None
        except NoSpace:
            raise InsufficientStorage(
                "Not enough disk space on the server to store the asset"
            ) from None

    # -- use in invocations --------------------------------------------------------------------

    async def resolve_references(self, principal: Principal, header_value: str | None) -> list[str]:
        """NVCF-INPUT-ASSET-REFERENCES -> asset ids (trimmed, empties dropped, duplicates once).

        400 for a non-UUID item or an asset not uploaded yet; 404 for an unknown asset or one
        of another account.
        """
        ids = parse_references(header_value)
        found = await self._repo.many(ids)
        for asset_id in ids:
            asset = found.get(asset_id)
            if asset is None or asset.nca_id != principal.nca_id or not self._alive(asset):
                raise self._missing(principal, asset_id)
            if asset.uploaded_at is None:
                raise Invalid(f"Asset '{asset_id}' has not been uploaded yet")
        return ids

    async def stage(self, asset_ids: list[str], dest_dir: Path) -> list[Path]:
        """Make each asset appear as `dest_dir/<assetId>` (hard link; copy across filesystems).

        Call it when the request is accepted: the link keeps the bytes for the request even if
        the asset is deleted or expires before the request runs. On an error the links made so
        far stay in `dest_dir` (the caller owns that folder and removes it with the request).
        """
        staged = []
        for asset_id in asset_ids:
            dest = dest_dir / asset_id
            try:
                await self._blobs.link_into("assets", asset_id, dest)
            except BlobMissing:
                raise NotFound(f"Asset '{asset_id}' no longer exists") from None
            except NoSpace:
                raise InsufficientStorage(
                    "Not enough disk space to stage the input assets"
                ) from None
            staged.append(dest)
        return staged

    # -- signed downloads and large results ----------------------------------------------------

    def _download_url(self, kind: str, blob_id: str, expires: int) -> str:
        path = BLOB_PATH.format(kind=kind, blob_id=blob_id)
        return f"{self._base_url}{path}?{self._signer.sign('GET', path, expires)}"

    def result_url(self, request_id: str, expires_epoch: float | None = None) -> str:
        """A signed download URL (no API key needed) of the large result of a request."""
        if expires_epoch is None:
            expires_epoch = self._now() + self._cfg.download_url_ttl_s
        return self._download_url("results", request_id, math.ceil(expires_epoch))

    async def put_result(self, request_id: str, zip_path: Path) -> str:
        """Move a finished result zip into the blob store; its download URL (302 Location).

        The blob is kept `download_url_ttl_s`, as long as the URL is valid, then swept.
        """
        expires = self._now() + self._cfg.download_url_ttl_s
        size = (await asyncio.to_thread(zip_path.stat)).st_size
        await self._repo.insert_result(request_id, size, now_iso(), expires)  # row first
        try:
            await self._blobs.put_file("results", request_id, zip_path)
        except BaseException as exc:
            await self._repo.delete_results([request_id])
            if isinstance(exc, NoSpace):
                raise InsufficientStorage("Not enough disk space to store the result") from None
            raise
        return self.result_url(request_id, expires)

    async def download(self, kind: str, blob_id: str, query: Mapping[str, str]) -> Download:
        """A signed GET of an asset's or a result's bytes; 403 tampered or expired, 404 gone."""
        self._signer.verify("GET", BLOB_PATH.format(kind=kind, blob_id=blob_id), query)
        media_type, filename = "application/zip", f"{blob_id}.zip"
        if kind == "assets":
            asset = await self._repo.get(blob_id)
            if asset is None or asset.uploaded_at is None:
                raise NotFound(f"Asset '{blob_id}' does not exist")
            media_type, filename = asset.content_type, blob_id
        try:
            reader = await self._blobs.open(kind, blob_id)
        except (BlobMissing, ValueError):
            raise NotFound(f"No {kind[:-1]} '{blob_id}' is stored (deleted or expired)") from None
        return Download(reader.size, media_type, filename, reader.chunks())

    # -- lifetime --------------------------------------------------------------------------------

    async def recover(self) -> int:
        """At start: drop the temp files of uploads a crash interrupted."""
        return await self._blobs.remove_partials()

    async def sweep(self, now: float | None = None) -> int:
        """Delete expired assets, reservations never uploaded, and expired large results."""
        now = self._now() if now is None else now
        assets = [a for a in await self._repo.expired(now) if a not in self._uploading]
        results = await self._repo.expired_results(now)
        for start in range(0, len(assets), _BATCH):
            batch = assets[start : start + _BATCH]
            for asset_id in batch:
                await self._blobs.delete("assets", asset_id)
            await self._repo.delete(batch)
        for start in range(0, len(results), _BATCH):
            batch = results[start : start + _BATCH]
            for request_id in batch:
                await self._blobs.delete("results", request_id)
            await self._repo.delete_results(batch)
        return len(assets) + len(results)
