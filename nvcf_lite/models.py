"""Domain records and enums shared across layers (NVCF status strings exactly)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

import msgspec


class FunctionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DEPLOYING = "DEPLOYING"
    ERROR = "ERROR"
    INACTIVE = "INACTIVE"
    DELETED = "DELETED"
    DEGRADED = "DEGRADED"
    DEGRADING = "DEGRADING"


SCOPES: tuple[str, ...] = (
    "register_function",
    "update_function",
    "delete_function",
    "deploy_function",
    "list_functions",
    "list_functions_details",
    "invoke_function",
    "queue_details",
    "authorize_clients",
    "update_secrets",
    "manage_telemetries",
    "manage_registry_credentials",
    "list_cluster_groups",
)

RESOURCE_TYPES: tuple[str, ...] = ("account-functions", "authorized-functions", "function")


class KeyResource(msgspec.Struct, frozen=True):
    type: str
    id: str


class ApiKey(msgspec.Struct, frozen=True):
    key_id: str
    key_prefix: str
    nca_id: str
    description: str
    scopes: tuple[str, ...]
    resources: tuple[KeyResource, ...]
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the key's account, scopes and function resources."""

    key_id: str
    nca_id: str
    scopes: frozenset[str]
    resources: tuple[KeyResource, ...]

    @property
    def subject(self) -> str:
        return f"apikey:{self.key_id}"


def now_iso() -> str:
    """UTC now as NVCF prints Java Instants: 2024-05-01T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def parse_uuid(value: str) -> str | None:
    """The canonical form of a UUID string, or None when it is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None
