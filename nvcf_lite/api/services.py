"""What the handlers use: one typed `Services`, built by the platform and put on the app once.

Handlers read it through `services(app)` (or `services_of(connection)`), never through loose
`app.state.*` attributes: a reader finds here what each one is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nvcf_lite.domain.accounts import Accounts
from nvcf_lite.domain.artifacts import Artifacts
from nvcf_lite.domain.assets import Assets
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.authorizations import Authorizations
from nvcf_lite.domain.deployments import Deployments
from nvcf_lite.domain.functions import Functions
from nvcf_lite.domain.gateway import Gateway
from nvcf_lite.domain.invocations import Invocations, Queues
from nvcf_lite.domain.placement import Host
from nvcf_lite.domain.registry import Registry
from nvcf_lite.domain.registry_credentials import RegistryCredentials
from nvcf_lite.domain.status import Overview
from nvcf_lite.domain.telemetries import TelemetryEndpoints
from nvcf_lite.domain.traffic import Traffic

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.datastructures import State

    from nvcf_lite.api.health import HealthResponse
    from nvcf_lite.api.logs import LogSource


@dataclass(frozen=True, slots=True)
class Services:
    """The domain services and settings the api layer needs, all of them."""

    keys: Keys
    accounts: Accounts
    authorizations: Authorizations
    artifacts: Artifacts
    functions: Functions
    assets: Assets
    deployments: Deployments
    invocations: Invocations
    queues: Queues
    gateway: Gateway
    registry: Registry
    telemetries: TelemetryEndpoints
    registry_credentials: RegistryCredentials
    overview: Overview
    traffic: Traffic
    container_logs: LogSource
    host: Host
    health_report: Callable[[], Awaitable[HealthResponse]]
    metrics_text: Callable[[], str]
    nca_id: str
    org_name: str
    token_ttl_s: int
    max_body_bytes: int


def services(state: State) -> Services:
    """The app's `Services` (put on `app.state.services` by the lifespan)."""
    found = state.get("services")
    if not isinstance(found, Services):
        raise RuntimeError("the platform has not started")
    return found


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    return services(connection.app.state)
