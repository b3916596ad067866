"""Answers to the NGC registry look-ups the SDKs make before creating a function (spec §9.4).

nvcf-lite has no registry: the truth is the local Docker engine. An image present there is
reported found (200). One that is absent (or a Docker engine that does not answer) is 403,
which the SDKs print as a warning before going on: the image may still be pulled at deploy
time. A 404 would make the SDK refuse to create the function.
"""

from __future__ import annotations

from typing import Protocol

from nvcf_lite.errors import Forbidden


class ImageCatalog(Protocol):
    async def image_exists(self, image: str) -> bool: ...


def candidate_refs(org: str, team: str | None, repo: str, tag: str | None) -> list[str]:
    """Local image names a look-up may mean: as given, and under nvcr.io/org[/team]/."""
    suffix = f":{tag}" if tag else ""
    scoped = "/".join(p for p in ("nvcr.io", org, team, repo) if p)
    refs = [f"{repo}{suffix}", f"{scoped}{suffix}"]
    if not tag:
        refs = [f"{r}:latest" for r in refs] + refs
    return list(dict.fromkeys(refs))


class Registry:
    def __init__(self, catalog: ImageCatalog | None) -> None:
        self._catalog = catalog

    async def find_image(
        self, org: str, team: str | None, repo: str, tag: str | None
    ) -> dict[str, object]:
        if self._catalog is None:
            raise Forbidden(
                "nvcf-lite cannot see a Docker engine, so it cannot check images; "
                "the image will be looked up at deploy time"
            )
        for ref in candidate_refs(org, team, repo, tag):
            try:
                found = await self._catalog.image_exists(ref)
            except Exception as exc:
                raise Forbidden(
                    f"cannot check local images ({exc}); checked at deploy time"
                ) from exc
            if found:
                return {"name": repo, "tag": tag or "latest", "image": ref, "local": True}
        raise Forbidden(
            f"image '{repo}{':' + tag if tag else ''}' is not present in the local Docker engine; "
            "nvcf-lite will try to pull it when the function is deployed"
        )
