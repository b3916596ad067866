"""Registry credentials (spec §2.8) and the credential a pull of an image uses.

An account keeps one credential per registry host. The secret is NVCF's: `{"name", "value"}`
with `value` the base64 of `username:password` (ngcsdk sends `$oauthtoken:<key>` for NGC);
it is sealed at rest and never answered. PATCH replaces the secret and adds artifact types;
DELETE removes the credential. A pull of an image whose registry (after `registry.mirrors`)
has a CONTAINER credential sends it to the engine (`pull_auth`).

Recognized registries: NVCF lists the registries it accepts credentials for. nvcf-lite accepts
a credential for any host (a site's own registry must be addable) and lists what it knows: the
well-known public registries, the hosts `registry.mirrors` rewrites to, and the hosts that have
a credential **(nvcf-lite choice)**.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from nvcf_lite.domain.function_rules import MAX_DESCRIPTION, tags
from nvcf_lite.domain.image_references import canonical_host, registry_host
from nvcf_lite.errors import Conflict, Invalid, NotFound
from nvcf_lite.models import (
    ARTIFACT_TYPES,
    Principal,
    RegistryAuth,
    RegistryCredential,
    new_id,
    now_iso,
    parse_uuid,
)
from nvcf_lite.store.registry_credentials import DuplicateRegistry, RegistryCredentialsRepo

MAX_HOSTNAME = 253
HOSTNAME_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(:[0-9]{1,5})?$"
)
# Container registries everyone knows, as NVCF names them (name -> hostname).
WELL_KNOWN: Mapping[str, str] = {
    "NGC": "nvcr.io",
    "DockerHub": "docker.io",
    "ECR Public": "public.ecr.aws",
}
CREDENTIALS_PATH = "/v2/nvcf/registry-credentials"


class RegistrySecretInput(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: str


class RegistryCredentialInput(msgspec.Struct, frozen=True, kw_only=True):
    registry_hostname: str | None = None
    secret: RegistrySecretInput | None = None
    artifact_types: Sequence[str] | None = None
    tags: Sequence[str] | None = None
    description: str | None = None


class RegistryCredentialUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """PATCH: a new secret, and artifact types added to the existing ones (NVCF's names)."""

    secret: RegistrySecretInput | None = None
    artifact_type_enums: Sequence[str] | None = None


def hostname(value: str | None) -> str:
    if value is None or not value.strip():
        raise Invalid("Invalid request: 'registryHostname' must not be blank")
    if len(value) > MAX_HOSTNAME:
        raise Invalid(f"Invalid hostname: Must be 1 - {MAX_HOSTNAME} chars long")
    if not HOSTNAME_RE.fullmatch(value):
        raise Invalid(f"Invalid hostname: Must conform to regex {HOSTNAME_RE.pattern}")
    return canonical_host(value)


def artifact_types(values: Iterable[str] | None, field: str) -> tuple[str, ...]:
    """Artifact types upper-cased (NVCF matches enums case-insensitively), duplicates dropped."""
    found = tuple(dict.fromkeys(v.upper() for v in values or ()))
    if not found:
        raise Invalid(f"Invalid request: '{field}' must not be empty")
    for value in found:
        if value not in ARTIFACT_TYPES:
            raise Invalid(
                f"Invalid request: '{field}' must be among {', '.join(ARTIFACT_TYPES)},"
                f" got '{value}'"
            )
    return found


def secret(given: RegistrySecretInput | None) -> tuple[str, bytes]:
    """(the secret's name, `username:password`) from NVCF's base64 secret value."""
    if given is None:
        raise Invalid("Invalid request: 'secret' must not be null")
    if not given.name.strip():
        raise Invalid("Invalid request: 'secret.name' must not be blank")
    try:
        plain = base64.b64decode(given.value.strip(), validate=True)
    except (binascii.Error, ValueError):
        plain = b""
    user, sep, password = plain.partition(b":")
    if not sep or not user or not password:
        raise Invalid(
            "Invalid request: 'secret.value' must be a base64 encoded string in "
            "username:password format"
        )
    return given.name, plain


def _description(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_DESCRIPTION:
        raise Invalid(
            f"Invalid request: 'description': Maximum description length of {MAX_DESCRIPTION}"
            " is exceeded."
        )
    return value or None


def refused_reason(image: str, auth: RegistryAuth | None, source: str | None = None) -> str:
    """What an operator reads when a registry refused a pull for authentication."""
    pulled = f"{image} (mirror of {source})" if source and source != image else image
    host = auth.registry if auth else registry_host(image)
    if auth is None:
        return (
            f"pull of {pulled} was refused by the registry (authentication required): "
            f"add a registry credential for {host} (POST {CREDENTIALS_PATH})"
        )
    return (
        f"credentials for {host} were rejected by the registry when pulling {pulled}: "
        f"check the username and password of registry credential {auth.credential_id} "
        f"(PATCH {CREDENTIALS_PATH}/{auth.credential_id})"
    )


class RegistryCredentials:
    def __init__(self, repo: RegistryCredentialsRepo, mirrors: Mapping[str, str]) -> None:
        self._repo = repo
        self._mirror_hosts = sorted({registry_host(target) for target in mirrors.values()})

    async def create(
        self, principal: Principal, req: RegistryCredentialInput
    ) -> RegistryCredential:
        host = hostname(req.registry_hostname)
        name, plain = secret(req.secret)
        now = now_iso()
        credential = RegistryCredential(
            registry_credential_id=new_id(),
            nca_id=principal.nca_id,
            registry_credential_name=name,
            registry_name=self._name_of(host),
            registry_hostname=host,
            artifact_types=artifact_types(req.artifact_types, "artifactTypes"),
            tags=tags(req.tags or ()),
            description=_description(req.description),
            created_at=now,
            last_updated_at=now,
        )
        try:
            await self._repo.insert(credential, plain)
        except DuplicateRegistry:
            raise Conflict(
                f"A registry credential for '{host}' already exists in this account: update it"
                f" (PATCH {CREDENTIALS_PATH}/{{id}}) or delete it first"
            ) from None
        return credential

    async def list_all(
        self, principal: Principal, artifact_type: Iterable[str] | None = None
    ) -> list[RegistryCredential]:
        found = await self._repo.list_all(principal.nca_id)
        if artifact_type:
            wanted = set(artifact_types(artifact_type, "artifactType"))
            found = [c for c in found if wanted & set(c.artifact_types)]
        return found

    async def get(self, principal: Principal, credential_id: str) -> RegistryCredential:
        canonical = parse_uuid(credential_id)
        found = await self._repo.get(principal.nca_id, canonical) if canonical else None
        if found is None:
            raise NotFound(f"Registry credential id '{credential_id}' not found")
        return found

    async def update(
        self, principal: Principal, credential_id: str, upd: RegistryCredentialUpdate
    ) -> RegistryCredential:
        current = await self.get(principal, credential_id)
        if upd.secret is None and not upd.artifact_type_enums:
            raise Invalid("Invalid request: at least one of 'secret' or 'artifactTypeEnums'")
        name, plain = current.registry_credential_name, None
        if upd.secret is not None:
            name, plain = secret(upd.secret)
        added: tuple[str, ...] = ()
        if upd.artifact_type_enums:
            added = artifact_types(upd.artifact_type_enums, "artifactTypeEnums")
        updated = msgspec.structs.replace(
            current,
            registry_credential_name=name,
            artifact_types=tuple(dict.fromkeys((*current.artifact_types, *added))),
            last_updated_at=now_iso(),
        )
        if not await self._repo.update(updated, plain):
            raise NotFound(f"Registry credential id '{credential_id}' not found")
        return updated

    async def delete(self, principal: Principal, credential_id: str) -> None:
        canonical = parse_uuid(credential_id)
        if not canonical or not await self._repo.delete(principal.nca_id, canonical):
            raise NotFound(f"Registry credential id '{credential_id}' not found")

    async def recognized(self, principal: Principal) -> dict[str, list[tuple[str, str]]]:
        """Artifact type -> (name, hostname) of each registry nvcf-lite knows, by name."""
        known = {host: name for name, host in WELL_KNOWN.items()}
        for host in self._mirror_hosts:
            known.setdefault(host, host)
        containers = {c.registry_hostname for c in await self.list_all(principal, ["CONTAINER"])}
        for host in containers:
            known.setdefault(host, host)
        listed = sorted((name, host) for host, name in known.items())
        return {"CONTAINER": listed, "HELM": [], "MODEL": [], "RESOURCE": []}

    async def pull_auth(self, nca_id: str, image: str) -> RegistryAuth | None:
        """The credential a pull of `image` (the reference pulled, after mirrors) sends: the
        account's CONTAINER credential for the image's registry host, else None. Raises
        SealBroken when its secret does not open."""
        found = await self._repo.with_secret(nca_id, registry_host(image))
        if found is None or "CONTAINER" not in found[0].artifact_types:
            return None
        credential, plain = found
        user, _, password = plain.decode("utf-8", errors="replace").partition(":")
        return RegistryAuth(
            registry=credential.registry_hostname,
            username=user,
            password=password,
            credential_id=credential.registry_credential_id,
        )

    def _name_of(self, host: str) -> str:
        return next((name for name, known in WELL_KNOWN.items() if known == host), host)
