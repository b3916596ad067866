"""The gateway's model entries (issue 15): `GET /v1/models` lists them (api/gateway) and
`GET /v1/models/{name}` reads one (the `openai` SDK's `models.retrieve`).

Reading one is not a route of its own: a name may hold slashes (`meta/llama3-8b-instruct`), and
any parameter route under `/v1` would stop Litestar's router from falling back to the
path-preserving catch-all (I5) for every other `/v1/...` path (it does not backtrack from a
parameter node), so the catch-all in api/invocations asks here when no Function-ID names a
function.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response

from nvcf_lite.api.services import services_of
from nvcf_lite.domain.gateway import ServedModel
from nvcf_lite.errors import NotFound

JSON = "application/json"
ONE_MODEL = "/v1/models/"  # + the model's name


def model_entry(m: ServedModel) -> dict[str, Any]:
    """One model as OpenAI lists it."""
    return {
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": m.nca_id,
        "root": m.name,
    }


async def retrieve_model(request: Request[Any, Any, Any], name: str) -> Response[Any]:
    """One model of the caller's list; 404 `model_not_found` as a chat call to it would be."""
    services = services_of(request)
    principal = await services.keys.authenticate(request.headers.get("authorization"))
    found = next((m for m in await services.gateway.models(principal) if m.name == name), None)
    if found is None:
        raise NotFound(
            f"The model '{name}' does not exist or you do not have access to it",
            openai_code="model_not_found",
        )
    return Response(msgspec.json.encode(model_entry(found)), media_type=JSON)
