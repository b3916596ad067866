"""Registry credentials and recognized registries over HTTP (spec §2.8), in process.

NVCF's bodies: POST takes `registryHostname`, `secret` {name, value: base64 of
`username:password`}, `artifactTypes`, `tags`, `description` and answers
`{"registryCredential": {...}}`; GET lists `{"registryCredentials": [...]}`; PATCH replaces the
secret and adds artifact types (`artifactTypeEnums`); DELETE is 204. No answer carries the
secret, and the data_dir holds it only sealed. Every path family serves the same handlers.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, call, make_config
from function_support import FAMILIES, ISO_INSTANT, PLAIN, UNKNOWN_ID, problem
from litestar.testing import TestClient

from nvcf_lite.models import RegistryAuth
from nvcf_lite.runtime.base import RuntimeFailure
from nvcf_lite.store.sealing import KEY_FILE

PASSWORD = "registry-password-never-shown-Qx93"
CREDS = base64.b64encode(f"puller:{PASSWORD}".encode()).decode()
BODY: dict[str, Any] = {
    "registryHostname": "127.0.0.1:5000",
    "secret": {"name": "local-registry", "value": CREDS},
    "artifactTypes": ["CONTAINER"],
    "tags": ["site", "lab"],
    "description": "the lab's registry",
}
MIRRORS = '{"nvcr.io/": "127.0.0.1:5000/nvcr/"}'


def data_bytes(data_dir: Path) -> bytes:
    """Every byte of every file under data_dir except the key file itself."""
    return b"".join(
        p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file() and p.name != KEY_FILE
    )


@pytest.fixture
def api(app_factory: Any, tmp_path: Path) -> TestClient[Any]:
    config = make_config(tmp_path / "data", NVCF_LITE_REGISTRY__MIRRORS=MIRRORS)
    client: TestClient[Any] = app_factory(config)
    return client


def add(api: TestClient[Any], prefix: str = PLAIN, **fields: Any) -> dict[str, Any]:
    r = api.post(f"{prefix}/registry-credentials", json={**BODY, **fields}, headers=bearer())
    assert r.status_code == 200, r.text
    credential: dict[str, Any] = r.json()["registryCredential"]
    return credential


def test_add_answers_nvcfs_record_without_the_secret(api: TestClient[Any]) -> None:
    r = api.post(f"{PLAIN}/registry-credentials", json=BODY, headers=bearer())
    assert r.status_code == 200, r.text
    assert PASSWORD not in r.text and CREDS not in r.text
    got = r.json()["registryCredential"]
    assert set(got) == {
        "registryCredentialId",
        "ncaId",
        "registryCredentialName",
        "registryName",
        "registryHostname",
        "artifactTypes",
        "tags",
        "description",
        "provisionedBy",
        "lastUpdatedAt",
        "createdAt",
    }
    assert got["registryHostname"] == "127.0.0.1:5000"
    assert got["registryName"] == "127.0.0.1:5000"  # not a well-known registry
    assert got["registryCredentialName"] == "local-registry"
    assert got["artifactTypes"] == ["CONTAINER"] and got["tags"] == ["site", "lab"]
    assert got["provisionedBy"] == "USER" and got["ncaId"] == "nvcf-lite-local"
    assert ISO_INSTANT.match(got["createdAt"]) and got["lastUpdatedAt"] == got["createdAt"]


def test_list_get_patch_delete_in_every_path_family(api: TestClient[Any]) -> None:
    for n, prefix in enumerate(FAMILIES):
        made = add(api, prefix, registryHostname=f"registry{n}.example:5000")
        path = f"{prefix}/registry-credentials/{made['registryCredentialId']}"
        r = api.get(f"{prefix}/registry-credentials", headers=bearer())
        assert r.status_code == 200, r.text
        ids = [c["registryCredentialId"] for c in r.json()["registryCredentials"]]
        assert made["registryCredentialId"] in ids
        r = api.get(path, headers=bearer())
        assert r.status_code == 200 and r.json()["registryCredential"] == made
        new = base64.b64encode(b"puller:another-password").decode()
        patch = {"secret": {"name": "renamed", "value": new}, "artifactTypeEnums": ["helm"]}
        r = api.patch(path, json=patch, headers=bearer())
        assert r.status_code == 200, r.text
        updated = r.json()["registryCredential"]
        assert updated["artifactTypes"] == ["CONTAINER", "HELM"]  # added, not replaced
        assert updated["registryCredentialName"] == "renamed"
        assert updated["createdAt"] == made["createdAt"]
        assert "another-password" not in r.text and new not in r.text
        r = api.delete(path, headers=bearer())
        assert r.status_code == 204 and r.content == b""
        problem(api.get(path, headers=bearer()), 404)
        problem(api.delete(path, headers=bearer()), 404)


def test_the_list_filters_by_artifact_type(api: TestClient[Any]) -> None:
    add(api)
    helm = add(api, registryHostname="charts.example", artifactTypes=["HELM"])
    r = api.get(f"{PLAIN}/registry-credentials?artifactType=HELM", headers=bearer())
    assert r.status_code == 200, r.text
    assert [c["registryCredentialId"] for c in r.json()["registryCredentials"]] == [
        helm["registryCredentialId"]
    ]
    r = api.get(f"{PLAIN}/registry-credentials", headers=bearer())
    assert len(r.json()["registryCredentials"]) == 2


def test_a_second_credential_for_one_registry_is_a_conflict(api: TestClient[Any]) -> None:
    add(api, registryHostname="Registry.Example:5000")
    r = api.post(
        f"{PLAIN}/registry-credentials",
        json={**BODY, "registryHostname": "registry.example:5000"},  # the same host, any case
        headers=bearer(),
    )
    assert "already exists" in problem(r, 409)["detail"]


def test_docker_hub_aliases_are_one_registry(api: TestClient[Any]) -> None:
    got = add(api, registryHostname="index.docker.io")
    assert got["registryHostname"] == "docker.io" and got["registryName"] == "DockerHub"
    r = api.post(
        f"{PLAIN}/registry-credentials",
        json={**BODY, "registryHostname": "docker.io"},
        headers=bearer(),
    )
    problem(r, 409)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"registryHostname": ""}, "'registryHostname' must not be blank"),
        ({"registryHostname": "not a host"}, "Invalid hostname: Must conform to regex"),
        ({"registryHostname": "a" * 254}, "Must be 1 - 253 chars long"),
        ({"secret": None}, "'secret' must not be null"),
        ({"secret": {"name": "x", "value": "not base64!"}}, "username:password format"),
        (
            {"secret": {"name": "x", "value": base64.b64encode(b"no-colon").decode()}},
            "username:password format",
        ),
        ({"secret": {"name": " ", "value": CREDS}}, "'secret.name' must not be blank"),
        ({"artifactTypes": []}, "'artifactTypes' must not be empty"),
        ({"artifactTypes": ["IMAGES"]}, "must be among CONTAINER, HELM, MODEL, RESOURCE"),
        ({"tags": ["bad tag!"]}, "must conform to regex"),
        ({"description": "d" * 257}, "Maximum description length of 256"),
    ],
)
def test_invalid_bodies_are_400_with_the_field(
    api: TestClient[Any], change: dict[str, Any], words: str
) -> None:
    r = api.post(f"{PLAIN}/registry-credentials", json={**BODY, **change}, headers=bearer())
    assert words in problem(r, 400)["detail"]
    assert api.get(f"{PLAIN}/registry-credentials", headers=bearer()).json() == {
        "registryCredentials": []
    }


def test_patch_needs_a_change_and_a_valid_secret(api: TestClient[Any]) -> None:
    path = f"{PLAIN}/registry-credentials/{add(api)['registryCredentialId']}"
    assert "at least one of" in problem(api.patch(path, json={}, headers=bearer()), 400)["detail"]
    bad = {"secret": {"name": "x", "value": "!!"}}
    assert (
        "username:password" in problem(api.patch(path, json=bad, headers=bearer()), 400)["detail"]
    )
    unknown = f"{PLAIN}/registry-credentials/{UNKNOWN_ID}"
    problem(api.patch(unknown, json={"artifactTypeEnums": ["HELM"]}, headers=bearer()), 404)


def test_recognized_registries_are_the_well_known_the_mirrors_and_the_credentials(
    api: TestClient[Any],
) -> None:
    add(api, registryHostname="private.example")
    r = api.get(f"{PLAIN}/recognized-registries", headers=bearer())
    assert r.status_code == 200, r.text
    got = r.json()["recognizedRegistries"]
    assert set(got) == {"CONTAINER", "HELM", "MODEL", "RESOURCE"}
    containers = {e["hostname"]: e["name"] for e in got["CONTAINER"]}
    assert containers["nvcr.io"] == "NGC" and containers["docker.io"] == "DockerHub"
    assert "127.0.0.1:5000" in containers  # the mirror's host
    assert "private.example" in containers  # has a credential


def test_the_secret_is_sealed_at_rest_and_opens_for_a_pull(
    api: TestClient[Any], tmp_path: Path
) -> None:
    made = add(api)
    blob = data_bytes(tmp_path / "data")
    assert PASSWORD.encode() not in blob and CREDS.encode() not in blob
    creds = api.app.state.platform.registry_credentials
    auth = call(api, creds.pull_auth, "nvcf-lite-local", "127.0.0.1:5000/nvcr/org/echo:1")
    assert auth == RegistryAuth(
        registry="127.0.0.1:5000",
        username="puller",
        password=PASSWORD,
        credential_id=made["registryCredentialId"],
    )
    assert PASSWORD not in repr(auth)
    assert call(api, creds.pull_auth, "nvcf-lite-local", "nvcr.io/org/echo:1") is None
    assert call(api, creds.pull_auth, "nvcf-lite-local", "echo:1") is None  # docker.io


def test_a_credential_for_helm_only_is_not_used_for_container_pulls(api: TestClient[Any]) -> None:
    add(api, artifactTypes=["HELM"])
    creds = api.app.state.platform.registry_credentials
    assert call(api, creds.pull_auth, "nvcf-lite-local", "127.0.0.1:5000/echo:1") is None


def test_a_secret_that_does_not_open_fails_the_pull_with_why(
    api: TestClient[Any], tmp_path: Path
) -> None:
    """A secret copied onto another credential's row (sealed for its own row) does not open:
    the launch's credential lookup, as the scheduler has it, fails with the reason."""
    mine = add(api)
    other = add(api, registryHostname="other.example")
    db = tmp_path / "data" / "nvcf-lite.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE registry_credentials SET secret = (SELECT secret FROM registry_credentials"
            " WHERE registry_credential_id = ?) WHERE registry_credential_id = ?",
            (mine["registryCredentialId"], other["registryCredentialId"]),
        )
    lookup = api.app.state.platform.scheduler.life.pulls.pull_auth
    with pytest.raises(RuntimeFailure, match=r"registry-credential\) does not open with secrets"):
        call(api, lookup, "nvcf-lite-local", "other.example/echo:1")
    auth = call(api, lookup, "nvcf-lite-local", "127.0.0.1:5000/echo:1")  # its own still opens
    assert auth is not None and auth.password == PASSWORD
