"""Registry credentials and recognized registries (spec §2.8), scope `manage_registry_credentials`.

`POST|GET /registry-credentials`, `GET|PATCH|DELETE /registry-credentials/{id}` (DELETE 204),
`GET /recognized-registries`; under every path family (ngcsdk 4.37 calls
`/v2/orgs/{org}[/teams/{team}]/nvcf/registry-credentials`). Bodies are NVCF's
(`RegistryCredentialDetailsResponse`, `ListRegistryCredentialDetailsResponse`,
`RecognizedRegistriesResponse`); no answer ever carries the secret.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

from nvcf_lite.api.functions import Caller, to_domain
from nvcf_lite.api.security import PRINCIPAL, scopes
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.registry_credentials import (
    RegistryCredentialInput,
    RegistryCredentials,
    RegistryCredentialUpdate,
)
from nvcf_lite.models import RegistryCredential


class RegistrySecretWire(Wire):
    name: str
    value: str


class AddRegistryCredentialRequest(Wire):
    registry_hostname: str | None = None
    secret: RegistrySecretWire | None = None
    artifact_types: list[str] | None = None
    tags: list[str] | None = None
    description: str | None = None


class UpdateRegistryCredentialRequest(Wire):
    secret: RegistrySecretWire | None = None
    artifact_type_enums: list[str] | None = None


class RegistryCredentialWire(Wire):
    registry_credential_id: str
    nca_id: str
    registry_credential_name: str
    registry_name: str
    registry_hostname: str
    artifact_types: list[str]
    provisioned_by: str
    last_updated_at: str
    created_at: str
    tags: list[str] | None = None
    description: str | None = None


class RegistryCredentialResponse(Wire):
    registry_credential: RegistryCredentialWire


class ListRegistryCredentialsResponse(Wire):
    registry_credentials: list[RegistryCredentialWire]


class RecognizedRegistryWire(Wire):
    name: str
    hostname: str


class RecognizedRegistriesResponse(Wire):
    recognized_registries: dict[str, list[RecognizedRegistryWire]]


MANAGE = scopes("manage_registry_credentials")
CREDENTIAL_PATH = "/registry-credentials/{credential_id:str}"
CredentialsDep = NamedDependency[RegistryCredentials]
ArtifactTypeParam = Annotated[list[str] | None, QueryParameter(name="artifactType")]


def registry_credentials_of(request: Request[Any, Any, Any]) -> RegistryCredentials:
    return services_of(request).registry_credentials


def _response(credential: RegistryCredential) -> RegistryCredentialResponse:
    return RegistryCredentialResponse(
        registry_credential=to_wire(credential, RegistryCredentialWire)
    )


class RegistryCredentialsController(Controller):
    path = "/"
    tags = ["registry credentials"]
    dependencies = {
        **PRINCIPAL,
        "credentials": Provide(registry_credentials_of, sync_to_thread=False),
    }

    @post("/registry-credentials", status_code=200, opt=MANAGE, summary="Add a credential")
    async def add(
        self,
        data: JSONBody[AddRegistryCredentialRequest],
        principal: Caller,
        credentials: CredentialsDep,
    ) -> RegistryCredentialResponse:
        request = to_domain(data, RegistryCredentialInput)
        return _response(await credentials.create(principal, request))

    @get("/registry-credentials", opt=MANAGE, summary="List the account's credentials")
    async def list_credentials(
        self,
        principal: Caller,
        credentials: CredentialsDep,
        artifact_type: ArtifactTypeParam = None,
    ) -> ListRegistryCredentialsResponse:
        found = await credentials.list_all(principal, artifact_type)
        return ListRegistryCredentialsResponse(
            registry_credentials=[to_wire(c, RegistryCredentialWire) for c in found]
        )

    @get(CREDENTIAL_PATH, opt=MANAGE, summary="A credential's details (never its secret)")
    async def get_credential(
        self, credential_id: FromPath[UUID], principal: Caller, credentials: CredentialsDep
    ) -> RegistryCredentialResponse:
        return _response(await credentials.get(principal, str(credential_id)))

    @patch(CREDENTIAL_PATH, opt=MANAGE, summary="Replace the secret, add artifact types")
    async def update(
        self,
        credential_id: FromPath[UUID],
        data: JSONBody[UpdateRegistryCredentialRequest],
        principal: Caller,
        credentials: CredentialsDep,
    ) -> RegistryCredentialResponse:
        update = to_domain(data, RegistryCredentialUpdate)
        return _response(await credentials.update(principal, str(credential_id), update))

    @delete(CREDENTIAL_PATH, status_code=204, opt=MANAGE, summary="Delete a credential")
    async def remove(
        self, credential_id: FromPath[UUID], principal: Caller, credentials: CredentialsDep
    ) -> None:
        await credentials.delete(principal, str(credential_id))

    @get("/recognized-registries", opt=MANAGE, summary="The registries nvcf-lite knows")
    async def recognized(
        self, principal: Caller, credentials: CredentialsDep
    ) -> RecognizedRegistriesResponse:
        found = await credentials.recognized(principal)
        return RecognizedRegistriesResponse(
            recognized_registries={
                kind: [RecognizedRegistryWire(name=n, hostname=h) for n, h in entries]
                for kind, entries in found.items()
            }
        )


REGISTRY_CREDENTIAL_HANDLERS: list[ControllerRouterHandler] = [RegistryCredentialsController]
