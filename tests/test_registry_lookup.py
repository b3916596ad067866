"""The NGC registry look-ups ngcsdk makes before creating a function (spec §9 item 4), in process.

The same paths are exercised end to end by the real SDK in test_ngc_sdk.py.
"""

from __future__ import annotations

import pytest

from nvcf_lite.api.ngc import RegistryPath, parse_registry_path
from nvcf_lite.domain.registry import (
    LocalImage,
    Registry,
    candidate_refs,
    local_image_candidates,
)
from nvcf_lite.errors import Forbidden


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("repos/echo/images/1", RegistryPath(None, "echo", "images", "1")),
        ("repos/echo/tags/1", RegistryPath(None, "echo", "tags", "1")),
        ("team/t1/repos/echo/images/1.2", RegistryPath("t1", "echo", "images", "1.2")),
        ("repos/echo/images", RegistryPath(None, "echo", "images", None)),  # ngcsdk 3.x
        ("repos/team/echo/images", RegistryPath(None, "team/echo", "images", None)),
        ("repos/echo", RegistryPath(None, "echo", "repository", None)),
        ("repos/echo/images/1/scan", None),
        ("repos/echo/images/1/digest/sha256:x/scan", None),
        ("models/m/1", None),
        ("repos", None),
    ],
)
def test_parse_registry_path(path: str, expected: RegistryPath | None) -> None:
    assert parse_registry_path(path) == expected


def test_candidates_are_the_names_the_sdk_means() -> None:
    assert candidate_refs("nvcf-lite-test", None, "echo", "1") == [
        "nvcf-lite-test/echo:1",
        "nvcr.io/nvcf-lite-test/echo:1",
    ]
    assert candidate_refs("o", "t", "x", None) == ["o/t/x:latest", "nvcr.io/o/t/x:latest"]
    assert local_image_candidates("nvcr.io/nvcf-lite-test/echo:1") == [
        "nvcr.io/nvcf-lite-test/echo:1",
        "nvcf-lite-test/echo:1",
    ]
    assert local_image_candidates("docker.io/library/nginx:1") == ["docker.io/library/nginx:1"]


class Catalog:
    def __init__(self, *present: str, broken: bool = False) -> None:
        self.present = set(present)
        self.broken = broken
        self.asked: list[str] = []

    async def image_exists(self, image: str) -> bool:
        self.asked.append(image)
        if self.broken:
            raise RuntimeError("engine down")
        return image in self.present


async def test_found_locally_under_either_name() -> None:
    registry = Registry(Catalog("nvcr.io/o/t/x:2"))
    assert await registry.find_image("o", "t", "x", "2") == LocalImage(
        "o/t/x", "2", "nvcr.io/o/t/x:2"
    )


@pytest.mark.parametrize("catalog", [None, Catalog("x:2"), Catalog(broken=True)])
async def test_absent_or_unknowable_is_forbidden_so_the_sdk_goes_on(
    catalog: Catalog | None,
) -> None:
    with pytest.raises(Forbidden) as caught:
        await Registry(catalog).find_image("o", None, "x", "2")
    assert "deploy time" in caught.value.detail or "deployed" in caught.value.detail
