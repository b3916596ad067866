"""The model store over HTTP (nvcf-lite extensions M1-M4, spec Appendix B): models and resources.

`/v2/nvcf-lite/models` and `/v2/nvcf-lite/resources` take the same four calls: list (M1), get
one version with its files and checksums (M2), push a version as a tar body (M3) and remove
it (M4). Listing needs `list_functions` (or `list_functions_details`), pushing
`register_function`, removing `delete_function`, as for the functions that mount them. The
push streams the body to disk, so it is exempt from the app's small body limit;
`models.max_push_bytes` bounds it instead (413).
"""

from __future__ import annotations

from typing import Any, ClassVar

from litestar import Controller, Request, delete, get, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler

from nvcf_lite.api.assets import request_chunks
from nvcf_lite.api.security import PRINCIPAL, scopes, server_account
from nvcf_lite.api.services import services_of
from nvcf_lite.api.wire import Wire, to_wire
from nvcf_lite.domain.artifact_refs import store_uri
from nvcf_lite.domain.artifacts import Artifacts
from nvcf_lite.models import Artifact, ArtifactKind

STORE_PATH = "/v2/nvcf-lite"
LIST = scopes("list_functions", "list_functions_details")
PUSH = scopes("register_function")
REMOVE = scopes("delete_function")
ONE = "/{name:str}/versions/{version:str}"


class ArtifactFileWire(Wire):
    path: str
    size_bytes: int
    sha256: str
    executable: bool = False


class ArtifactWire(Wire):
    artifact_id: str
    kind: str
    name: str
    version: str
    uri: str
    size_bytes: int
    file_count: int
    sha256: str
    created_at: str
    files: list[ArtifactFileWire] | None = None


class ArtifactResponse(Wire):
    artifact: ArtifactWire


class ListArtifactsResponse(Wire):
    artifacts: list[ArtifactWire]


def artifact_wire(artifact: Artifact) -> ArtifactWire:
    return ArtifactWire(
        artifact_id=artifact.artifact_id,
        kind=artifact.kind.value,
        name=artifact.name,
        version=artifact.version,
        uri=store_uri(artifact.kind, artifact.name, artifact.version),
        size_bytes=artifact.size_bytes,
        file_count=artifact.file_count,
        sha256=artifact.sha256,
        created_at=artifact.created_at,
        files=None
        if artifact.files is None
        else [to_wire(f, ArtifactFileWire) for f in artifact.files],
    )


ArtifactsDep = NamedDependency[Artifacts]


def _artifacts(request: Request[Any, Any, Any]) -> Artifacts:
    return services_of(request).artifacts


class _StoreController(Controller):
    """M1-M4 for one kind; a subclass sets `path` and `kind`."""

    kind: ClassVar[ArtifactKind]
    dependencies = {**PRINCIPAL, "artifacts": Provide(_artifacts, sync_to_thread=False)}
    guards = [server_account]
    tags = ["nvcf-lite"]

    @get("/", opt=LIST, summary="M1 list the stored versions (nvcf-lite extension)")
    async def list_versions(self, artifacts: ArtifactsDep) -> ListArtifactsResponse:
        found = await artifacts.of_kind(self.kind)
        return ListArtifactsResponse(artifacts=[artifact_wire(a) for a in found])

    @get(ONE, opt=LIST, summary="M2 one stored version, its files and checksums")
    async def get_version(
        self, name: FromPath[str], version: FromPath[str], artifacts: ArtifactsDep
    ) -> ArtifactResponse:
        found = await artifacts.get(self.kind, name, version)
        return ArtifactResponse(artifact=artifact_wire(found))

    @put(
        ONE,
        opt=PUSH,
        status_code=200,
        request_max_body_size=None,  # streamed to disk; the domain enforces max_push_bytes
        summary="M3 push a version: the body is a tar archive (gzip, bzip2, xz allowed)",
    )
    async def push_version(
        self,
        name: FromPath[str],
        version: FromPath[str],
        request: Request[Any, Any, Any],
        artifacts: ArtifactsDep,
    ) -> ArtifactResponse:
        pushed = await artifacts.push_archive(self.kind, name, version, request_chunks(request))
        return ArtifactResponse(artifact=artifact_wire(pushed))

    @delete(ONE, opt=REMOVE, summary="M4 remove a version (409 while a deployment mounts it)")
    async def remove_version(
        self, name: FromPath[str], version: FromPath[str], artifacts: ArtifactsDep
    ) -> None:
        await artifacts.remove(self.kind, name, version)


class ModelsController(_StoreController):
    path = f"{STORE_PATH}/models"
    kind = ArtifactKind.MODEL


class ResourcesController(_StoreController):
    path = f"{STORE_PATH}/resources"
    kind = ArtifactKind.RESOURCE


ARTIFACT_HANDLERS: list[ControllerRouterHandler] = [ModelsController, ResourcesController]
