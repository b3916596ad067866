"""Registry credentials used by real pulls: a real `docker-registry` with htpasswd auth on
127.0.0.1 (docker_registry_support), the real Docker engine, the public API in process.

A deployment of an image on that registry, with `deploy_attempts` 1:
- without a credential for the registry is ERROR, and its health info says the registry
  refused the pull for authentication and which endpoint adds a credential for which host;
- with a credential whose password is wrong is ERROR, saying the credentials were rejected;
- with the right credential (POST /v2/nvcf/registry-credentials) is ACTIVE and answers 200;
- of an `nvcr.io/...` image under `registry.mirrors` pulls the mirror's reference from the
  local registry with the mirror host's credential, and answers 200.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, wait_for
from docker_registry_support import LocalRegistry
from docker_support import ECHO_IMAGE, docker_client_or_skip, ensure_test_images
from invocation_support import deploy, docker_config, register, wait_active
from litestar.testing import TestClient

from nvcf_lite.app import docker_runtime

pytestmark = pytest.mark.docker

USER, PASSWORD = "puller", "registry-pass-Wm42"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    client = docker_client_or_skip()
    ensure_test_images()
    folder = tmp_path_factory.mktemp("registry")
    with LocalRegistry(client, folder, {USER: PASSWORD}) as started:
        yield started


def _api(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str, **env: str
) -> TestClient[Any]:
    config = docker_config(tmp_path, ns, NVCF_LITE_SCHEDULER__DEPLOY_ATTEMPTS="1", **env)
    return app_factory(config, runtime_factory=docker_runtime)


def _add_credential(api: TestClient[Any], host: str, password: str) -> str:
    value = base64.b64encode(f"{USER}:{password}".encode()).decode()
    body = {
        "registryHostname": host,
        "secret": {"name": "lab", "value": value},
        "artifactTypes": ["CONTAINER"],
    }
    r = api.post("/v2/nvcf/registry-credentials", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    return str(r.json()["registryCredential"]["registryCredentialId"])


def _failed(api: TestClient[Any], fid: str, vid: str) -> str:
    """The health info error of a deployment that went to ERROR."""

    def settled() -> dict[str, Any] | None:
        r = api.get(f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=bearer())
        assert r.status_code == 200, r.text
        d: dict[str, Any] = r.json()["deployment"]
        return d if d["functionStatus"] != "DEPLOYING" else None

    d = wait_for(settled, timeout=60, what="the deployment to settle")
    assert d["functionStatus"] == "ERROR", d
    (health,) = d["healthInfo"]
    return str(health["error"])


def _invoke(api: TestClient[Any], fid: str) -> None:
    r = api.post(f"/v2/nvcf/pexec/functions/{fid}", json={"hello": "registry"}, headers=bearer())
    assert r.status_code == 200, r.text
    assert r.json()["body"] == {"hello": "registry"}  # the echo function's answer


def _name() -> str:
    return f"nvcf-lite-test/private-{secrets.token_hex(4)}"


def test_without_a_credential_the_pull_is_refused_with_what_to_do(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str, registry: LocalRegistry
) -> None:
    api = _api(app_factory, tmp_path, ns)
    image = registry.push(ECHO_IMAGE, _name())
    fid, vid = register(api, image=image)
    deploy(api, fid, vid)
    error = _failed(api, fid, vid)
    assert error.startswith(
        f"pull of {image} was refused by the registry (authentication required): add a "
        f"registry credential for {registry.host} (POST /v2/nvcf/registry-credentials)"
    ), error
    assert "no basic auth credentials" in error  # what the engine said, for the curious


def test_a_wrong_password_is_rejected_with_what_to_do(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str, registry: LocalRegistry
) -> None:
    api = _api(app_factory, tmp_path, ns)
    credential_id = _add_credential(api, registry.host, "not-the-password")
    image = registry.push(ECHO_IMAGE, _name())
    fid, vid = register(api, image=image)
    deploy(api, fid, vid)
    error = _failed(api, fid, vid)
    assert error.startswith(
        f"credentials for {registry.host} were rejected by the registry when pulling {image}: "
        f"check the username and password of registry credential {credential_id} "
        f"(PATCH /v2/nvcf/registry-credentials/{credential_id})"
    ), error
    assert "not-the-password" not in error


def test_the_right_credential_pulls_and_the_function_answers(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str, registry: LocalRegistry
) -> None:
    api = _api(app_factory, tmp_path, ns)
    _add_credential(api, registry.host, PASSWORD)
    image = registry.push(ECHO_IMAGE, _name())
    fid, vid = register(api, image=image)
    deploy(api, fid, vid)
    wait_active(api, fid, vid)
    _invoke(api, fid)
    assert registry.client.images.get(image).tags == [image]  # pulled from the registry


def test_a_mirror_pulls_an_nvcr_image_from_the_local_registry(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path, ns: str, registry: LocalRegistry
) -> None:
    mirrors = f'{{"nvcr.io/": "{registry.host}/nvcr/"}}'
    api = _api(app_factory, tmp_path, ns, NVCF_LITE_REGISTRY__MIRRORS=mirrors)
    _add_credential(api, registry.host, PASSWORD)  # the mirror's host, not nvcr.io
    name = _name()
    pulled = registry.push(ECHO_IMAGE, f"nvcr/{name}")
    fid, vid = register(api, image=f"nvcr.io/{name}:1")
    deploy(api, fid, vid)
    wait_active(api, fid, vid)
    _invoke(api, fid)
    assert registry.client.images.get(pulled).tags == [pulled]
    r = api.get(f"/v2/nvcf/functions/{fid}/versions/{vid}", headers=bearer())
    assert r.json()["function"]["containerImage"] == f"nvcr.io/{name}:1"  # stored as given
