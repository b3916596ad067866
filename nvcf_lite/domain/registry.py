"""Answers to the NGC registry look-ups the SDKs make before creating a function (spec §9 item 4).

ngcsdk 4.37.0 parses a container image `org/[team/]name:tag` (registry prefix removed) and asks
`GET /v2/org/{org}[/team/{team}]/repos/{name}/images/{tag}`, then, when that is found,
`GET .../repos/{name}/tags/{tag}`. It then stores the image as `nvcr.io/org/[team/]name:tag`.
(Images naming docker.io, ECR or ACR are not looked up and are stored as given.)

nvcf-lite has no registry: the truth is the local Docker engine. An image present there, as
`org/[team/]name:tag` or `nvcr.io/org/[team/]name:tag`, is reported found (200). One that is
absent (or a Docker engine that does not answer) is 403, which the SDK prints as a warning
("couldn't get access to resource ... Proceeding.") before creating the function: the image may
still be pulled at deploy time. A 404 would make the SDK refuse to create the function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nvcf_lite.errors import Forbidden

NGC_REGISTRY = "nvcr.io"


class ImageCatalog(Protocol):
    async def image_exists(self, image: str) -> bool: ...


@dataclass(frozen=True)
class LocalImage:
    """A registry look-up answered by an image of the local Docker engine."""

    repository: str  # org/[team/]name, as NGC names the repository
    tag: str
    ref: str  # the local image reference that matched


def repository_name(org: str, team: str | None, repo: str) -> str:
    return "/".join(p for p in (org, team, repo) if p)


def candidate_refs(org: str, team: str | None, repo: str, tag: str | None) -> list[str]:
    """Local image names a look-up may mean: `org/[team/]repo:tag`, then under nvcr.io/.

    A bare `repo:tag` is not a candidate: the SDK stores `nvcr.io/org/[team/]repo:tag`, so
    reporting an unrelated local `repo:tag` as found would only fail later, at deploy time.
    """
    name = repository_name(org, team, repo)
    suffix = f":{tag or 'latest'}"
    return [f"{name}{suffix}", f"{NGC_REGISTRY}/{name}{suffix}"]


def local_image_candidates(image: str) -> list[str]:
    """Local references to try for a function's stored image (deploy time), best first.

    ngcsdk rewrites `org/name:tag` to `nvcr.io/org/name:tag`; when only `org/name:tag` is in
    the local engine (a locally built image) that is the one to run.
    """
    refs = [image]
    prefix = NGC_REGISTRY + "/"
    if image.startswith(prefix) and len(image) > len(prefix):
        refs.append(image[len(prefix) :])
    return refs


class Registry:
    def __init__(self, catalog: ImageCatalog | None) -> None:
        self._catalog = catalog

    async def find_image(
        self, org: str, team: str | None, repo: str, tag: str | None
    ) -> LocalImage:
        """The local image a registry look-up names, else Forbidden (the SDK warns, goes on)."""
        shown = f"{repository_name(org, team, repo)}{':' + tag if tag else ''}"
        if self._catalog is None:
            raise Forbidden(
                f"nvcf-lite cannot see a Docker engine, so it cannot check image '{shown}'; "
                "the image will be looked up at deploy time"
            )
        for ref in candidate_refs(org, team, repo, tag):
            try:
                found = await self._catalog.image_exists(ref)
            except Exception as exc:
                raise Forbidden(
                    f"cannot check local images for '{shown}' ({exc}); checked at deploy time"
                ) from exc
            if found:
                return LocalImage(repository_name(org, team, repo), tag or "latest", ref)
        raise Forbidden(
            f"image '{shown}' is not present in the local Docker engine; "
            "nvcf-lite will try to pull it when the function is deployed"
        )
