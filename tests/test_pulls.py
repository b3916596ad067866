"""What a launch pulls (workers/pulls.py, domain/image_references.py), on the fake runtime.

An image reference names its registry by Docker's rules; `registry.mirrors` rewrites the
longest matching prefix; a local image (mirrored, as stored, or without ngcsdk's nvcr.io/)
spares the pull; the pull sends the account's credential for the pulled reference's registry,
and a registry that refuses it says what to do, with or without credentials.
"""

from __future__ import annotations

import pytest
from fake_runtime import PRIVATE_AUTH, FakeRuntime

from nvcf_lite.domain.image_references import full_reference, mirrored, registry_host
from nvcf_lite.models import HealthCheck, RegistryAuth
from nvcf_lite.runtime.base import RuntimeFailure
from nvcf_lite.workers.instances import LaunchInfo
from nvcf_lite.workers.pulls import Pulls

NVCR_MIRROR = {"nvcr.io/": "127.0.0.1:5000/nvcr/", "nvcr.io/nim/": "mirror.lab:443/nim/"}


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("ubuntu:22.04", "docker.io"),
        ("org/app:1", "docker.io"),
        ("index.docker.io/library/ubuntu", "docker.io"),
        ("registry-1.docker.io/org/app", "docker.io"),
        ("nvcr.io/org/team/app:1", "nvcr.io"),
        ("127.0.0.1:5000/echo:1", "127.0.0.1:5000"),
        ("localhost/echo", "localhost"),
        ("localhost:5000/echo@sha256:" + "a" * 64, "localhost:5000"),
        ("Registry.Example/x", "registry.example"),
    ],
)
def test_the_registry_of_a_reference_follows_dockers_rules(image: str, host: str) -> None:
    assert registry_host(image) == host


def test_mirrors_rewrite_the_longest_prefix_and_docker_hubs_full_form() -> None:
    assert mirrored("nvcr.io/org/app:1", NVCR_MIRROR) == "127.0.0.1:5000/nvcr/org/app:1"
    assert mirrored("nvcr.io/nim/llm:2", NVCR_MIRROR) == "mirror.lab:443/nim/llm:2"
    assert mirrored("quay.io/x/y:1", NVCR_MIRROR) == "quay.io/x/y:1"
    hub = {"docker.io/": "127.0.0.1:5000/hub/"}
    assert full_reference("ubuntu:22.04") == "docker.io/library/ubuntu:22.04"
    assert mirrored("ubuntu:22.04", hub) == "127.0.0.1:5000/hub/library/ubuntu:22.04"
    assert mirrored("org/app:1", hub) == "127.0.0.1:5000/hub/org/app:1"
    assert mirrored("ubuntu:22.04", {}) == "ubuntu:22.04"


def info(image: str) -> LaunchInfo:
    health = HealthCheck(
        protocol="HTTP", uri="/health", port=8000, timeout="PT10S", expected_status_code=200
    )
    return LaunchInfo(
        function_id="f",
        version_id="v",
        nca_id="acct",
        name="echo",
        inference_url="/echo",
        image=image,
        args=None,
        env={},
        inference_port=8000,
        health=health,
        secrets={},
    )


async def test_a_local_image_spares_the_pull_mirrored_or_as_stored() -> None:
    runtime = FakeRuntime()
    pulls = Pulls(runtime, {"nvcr.io/": "fake/"})
    assert await pulls.resolve("nvcr.io/echo") == ("fake/echo", True)  # the mirrored one
    assert await pulls.resolve("fake/unhealthy") == ("fake/unhealthy", True)
    assert await pulls.resolve("nvcr.io/fake/exit") == ("fake/exit", True)  # ngcsdk's twin
    assert await pulls.resolve("nvcr.io/fake/none") == ("fake/fake/none", False)  # to pull
    assert await Pulls(runtime, {}).resolve("nvcr.io/none") == ("nvcr.io/none", False)


async def test_the_pull_sends_the_accounts_credential_for_the_pulled_registry() -> None:
    asked: list[tuple[str, str]] = []

    async def lookup(nca_id: str, image: str) -> RegistryAuth | None:
        asked.append((nca_id, image))
        return PRIVATE_AUTH

    pulls = Pulls(FakeRuntime(), {"nvcr.io/": "fake/pull-private-"}, lookup)
    image, local = await pulls.resolve("nvcr.io/a")
    assert (image, local) == ("fake/pull-private-a", False)
    assert await pulls.pull(info("nvcr.io/a"), image) is True
    assert asked == [("acct", "fake/pull-private-a")]  # the mirror's reference, not nvcr.io's


async def test_a_refused_pull_says_what_to_do_without_credentials_and_with_wrong_ones() -> None:
    wrong = RegistryAuth(
        registry="docker.io", username="puller", password="nope", credential_id="c-1"
    )

    async def none(nca_id: str, image: str) -> RegistryAuth | None:
        return None

    async def bad(nca_id: str, image: str) -> RegistryAuth | None:
        return wrong

    with pytest.raises(RuntimeFailure) as refused:
        await Pulls(FakeRuntime(), {}, none).pull(
            info("fake/pull-private-x"), "fake/pull-private-x"
        )
    assert str(refused.value).startswith(
        "pull of fake/pull-private-x was refused by the registry (authentication required): "
        "add a registry credential for docker.io (POST /v2/nvcf/registry-credentials)"
    )
    assert "the registry said: unauthorized" in str(refused.value)
    mirrors = {"nvcr.io/": "fake/pull-private-"}
    with pytest.raises(RuntimeFailure) as rejected:
        await Pulls(FakeRuntime(), mirrors, bad).pull(info("nvcr.io/y"), "fake/pull-private-y")
    text = str(rejected.value)
    assert text.startswith(
        "credentials for docker.io were rejected by the registry when pulling "
        "fake/pull-private-y (mirror of nvcr.io/y): check the username and password of "
        "registry credential c-1 (PATCH /v2/nvcf/registry-credentials/c-1)"
    )
    assert "nope" not in text
