"""Function management (spec §2.1, F1-F9): register, list, get, update and delete versions.

Who may see what: a version is visible to a key when it is the key's account's own
(`private`) or shared with it (`authorized`: a party with its NCA id; `public`: the wildcard
party '*'), and the key's resources cover it (spec §2.7, §6.3; domain/auth.py `reach`).
Another account's version that is not shared with the caller is 404 everywhere, as if it did
not exist. A shared version can be listed (F3-F5) and read (F6, without secret names) by the
party; every change (F2, F7, F8, secrets, deployments, sharing) is its owner's alone: 403.

Deployments plug in through the constructor: `instances` (F6 `activeInstances`),
`before_delete` (F7 force-removes the deployment of a version before it is deleted) and
`after_secrets_change` (running instances get the new secret values); telemetries through
`check_telemetries` (a new version's telemetry ids must name usable telemetries, spec §2.8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any

import msgspec

from nvcf_lite.domain.auth import Reach, covers, require_function
from nvcf_lite.domain.function_fields import SecretInput
from nvcf_lite.domain.function_fields import secrets as validate_secrets
from nvcf_lite.domain.function_rules import (
    FunctionInput,
    FunctionUpdate,
    apply_update,
    build_version,
)
from nvcf_lite.domain.function_sharing import Sharing, reach_version, shared_only, shown
from nvcf_lite.errors import Forbidden, Invalid, NotFound
from nvcf_lite.models import (
    ActiveInstance,
    FunctionStatus,
    FunctionType,
    FunctionVersion,
    Principal,
    Telemetries,
    new_id,
    now_iso,
)
from nvcf_lite.store.authorized_parties import AuthorizedPartiesRepo
from nvcf_lite.store.functions import FunctionsRepo

InstancesProvider = Callable[[str], Awaitable[list[ActiveInstance]]]
"""version_id -> the instances of that version (for F6 `activeInstances`)."""
BeforeDelete = Callable[[str, str], Awaitable[None]]
"""(function_id, version_id) -> None; called before a version is deleted."""
SecretsChanged = Callable[[str, dict[str, Any]], Awaitable[None]]
"""(version_id, all secret values) -> None; called after a version's secrets changed."""
TelemetryCheck = Callable[[str, Telemetries | None], Awaitable[None]]
"""(nca_id, a new version's telemetries) -> None; raises Invalid for an id it cannot use."""
Updated = Callable[[], None]
"""Called after a version's record changed (F8: its rate limit applies to the next call)."""

DETAILS_SCOPE = "list_functions_details"


class Visibility(StrEnum):
    AUTHORIZED = "authorized"
    PRIVATE = "private"
    PUBLIC = "public"


def parse_visibility(values: Iterable[str] | None) -> frozenset[Visibility]:
    """`?visibility=` repeated and/or comma-joined, any case; none given means all three."""
    names = [v.strip() for value in values or () for v in value.split(",") if v.strip()]
    if not names:
        return frozenset(Visibility)
    known = {v.value: v for v in Visibility}
    unknown = [n for n in names if n.lower() not in known]
    if unknown:
        raise Invalid(
            f"Invalid request: 'visibility' value '{unknown[0]}' is not one of {', '.join(known)}"
        )
    return frozenset(known[n.lower()] for n in names)


class Functions:
    def __init__(
        self,
        repo: FunctionsRepo,
        nca_id: str,
        *,
        instances: InstancesProvider,
        before_delete: BeforeDelete,
        after_secrets_change: SecretsChanged,
        check_telemetries: TelemetryCheck,
        after_update: Updated,
        parties: AuthorizedPartiesRepo | None = None,
    ) -> None:
        self.repo = repo
        self.parties = parties
        self.sharing = Sharing(repo, parties)
        self.nca_id = nca_id
        self.instances = instances
        self.before_delete = before_delete
        self.after_secrets_change = after_secrets_change
        self.check_telemetries = check_telemetries
        self.after_update = after_update
        # One rewrite of a version's record at a time (F8, secrets, rate limits read, change
        # and write it back): two at once would each drop the other's change.
        self._rewrites = asyncio.Lock()

    # -- F1, F2 ---------------------------------------------------------------------------

    async def create(self, principal: Principal, request: FunctionInput) -> FunctionVersion:
        """F1: a new function with its first version."""
        function_id = new_id()
        if not covers(principal.resources, function_id, None):
            raise Forbidden(
                "The API key is limited to specific functions and cannot register a new function"
            )
        return await self._register(principal, function_id, request)

    async def create_version(
        self, principal: Principal, function_id: str, request: FunctionInput
    ) -> FunctionVersion:
        """F2: a new version of an existing function (same id, new versionId)."""
        existing = await self.own_versions(principal, function_id)
        version = await self._register(principal, function_id, request, existing)
        return version

    async def _register(
        self,
        principal: Principal,
        function_id: str,
        request: FunctionInput,
        existing: list[FunctionVersion] | None = None,
    ) -> FunctionVersion:
        version, secrets = build_version(
            request,
            function_id=function_id,
            version_id=new_id(),
            nca_id=principal.nca_id,
            created_at=now_iso(),
        )
        if existing:
            _check_llm_stays_llm(existing[0], version)
        await self.check_telemetries(principal.nca_id, version.telemetries)
        await self.repo.insert(version, secrets)
        return version

    # -- F3, F4, F5 -------------------------------------------------------------------------

    async def list_functions(
        self, principal: Principal, visibility: Iterable[str] | None = None
    ) -> list[FunctionVersion]:
        """F3: every version visible to the key, one entry per version, oldest first."""
        wanted = parse_visibility(visibility)
        found: dict[str, FunctionVersion] = {}
        if Visibility.PRIVATE in wanted:
            for version in await self.repo.list_all(principal.nca_id):
                found.setdefault(version.version_id, version)
        if Visibility.AUTHORIZED in wanted:
            for version in await self.sharing.shared(principal, wildcard=False):
                found.setdefault(version.version_id, version)
        if Visibility.PUBLIC in wanted:
            for version in await self.sharing.shared(principal, wildcard=True):
                found.setdefault(version.version_id, version)
        return [v for v in found.values() if self._may_see(principal, v)]

    async def list_ids(
        self, principal: Principal, visibility: Iterable[str] | None = None
    ) -> list[str]:
        """F4: distinct ids of the functions visible to the key."""
        versions = await self.list_functions(principal, visibility)
        return list(dict.fromkeys(v.function_id for v in versions))

    async def list_versions(self, principal: Principal, function_id: str) -> list[FunctionVersion]:
        """F5: 404 when the function has no version visible at all, 403 when the key's
        resources cover none of them."""
        versions = await self.repo.list_versions(function_id)
        parties = await self.sharing.parties_of(function_id)
        reaches = [(v, reach_version(principal, v, parties)) for v in versions]
        found = [shown(principal, v) for v, r in reaches if r in (Reach.OWN, Reach.SHARED)]
        if not found:
            if any(r is Reach.DENIED for _, r in reaches):
                require_function(principal, function_id)  # raises: the resources miss it
            raise NotFound(_function_not_found(function_id, principal.nca_id))
        return found

    async def own_versions(self, principal: Principal, function_id: str) -> list[FunctionVersion]:
        """The versions of one of the key's account's functions (for changes to it): 404 when
        it has none the caller may know of, 403 when it is only shared with the caller or
        the key's resources miss it."""
        visible = await self.list_versions(principal, function_id)
        own = [v for v in visible if v.nca_id == principal.nca_id]
        if not own:
            raise Forbidden(shared_only(function_id, None))
        require_function(principal, function_id)
        return own

    # -- F6, F7, F8/F9 ----------------------------------------------------------------------

    async def get(
        self,
        principal: Principal,
        function_id: str,
        version_id: str,
        *,
        include_secrets: bool = True,
    ) -> FunctionVersion:
        """F6: secret names only with include_secrets; instances only with the details scope."""
        version = await self.find_visible(principal, function_id, version_id)
        changes: dict[str, Any] = {}
        if not include_secrets:
            changes["secrets"] = None
        if DETAILS_SCOPE in principal.scopes and version.nca_id == principal.nca_id:
            # an undeployed version has none: omitted like every other empty field
            found = [
                msgspec.structs.replace(i, nca_id=version.nca_id)  # the owner's instances
                for i in await self.instances(version_id)
            ]
            changes["active_instances"] = tuple(found) or None
        return msgspec.structs.replace(version, **changes) if changes else version

    async def update(
        self, principal: Principal, function_id: str, version_id: str, update: FunctionUpdate
    ) -> FunctionVersion:
        """F8/F9: tags, rateLimit, modelUpdates, llmInvocationConfig (and description)."""
        async with self._rewrites:
            version = await self.find(principal, function_id, version_id)
            updated = apply_update(version, update)
            if not await self.repo.update_spec(updated):
                raise NotFound(_version_not_found(function_id, version_id, principal.nca_id))
            self.after_update()
        return await self.find(principal, function_id, version_id)

    async def update_secrets(
        self,
        principal: Principal,
        function_id: str,
        version_id: str,
        items: Sequence[SecretInput],
    ) -> None:
        """PUT .../secrets/functions/{fid}/versions/{vid} (spec §2.8).

        NVCF updates secrets "if they were specified upon creation", so a version made without
        secrets is a 400. The given secrets are merged by name into the stored ones (a new
        name is added, the others keep their values: an nvcf-lite choice, so that updating one
        secret never drops the rest). Running instances see the new values in
        /var/secrets/secrets.json at once (`after_secrets_change`).
        """
        async with self._rewrites:
            version = await self.find(principal, function_id, version_id)
            if not version.secrets:
                raise Invalid(
                    f"Function version '{version_id}' was created without secrets; secrets can"
                    " only be updated on a version created with them"
                )
            if not items:
                raise Invalid("Invalid request: 'secrets' must not be empty")
            merged = {**await self.repo.secrets(version_id), **validate_secrets(items)}
            names = tuple(dict.fromkeys((*version.secrets, *merged)))
            updated = msgspec.structs.replace(version, secrets=names)
            if not await self.repo.update_secrets(updated, merged):
                raise NotFound(_version_not_found(function_id, version_id, principal.nca_id))
            # in order: the last update wins
            await self.after_secrets_change(version_id, merged)

    async def delete(self, principal: Principal, function_id: str, version_id: str) -> None:
        """F7: force-removes the version's deployment (hook) first; secrets go with the row."""
        await self.find(principal, function_id, version_id)
        await self.before_delete(function_id, version_id)
        if not await self.repo.delete(function_id, version_id):
            raise NotFound(_version_not_found(function_id, version_id, principal.nca_id))

    # -- for the deployments code and the scheduler ---------------------------------------

    async def find(
        self, principal: Principal, function_id: str, version_id: str
    ) -> FunctionVersion:
        """A version the key may change: 404 when not visible at all, 403 when not covered
        or only shared with the caller's account."""
        version = await self.find_visible(principal, function_id, version_id)
        if version.nca_id != principal.nca_id:
            raise Forbidden(shared_only(function_id, version_id))
        return version

    async def find_visible(
        self, principal: Principal, function_id: str, version_id: str
    ) -> FunctionVersion:
        """A version the key may read (F6): its account's own or shared with it."""
        version = await self.repo.get(function_id, version_id)
        if version is None:
            raise NotFound(_version_not_found(function_id, version_id, principal.nca_id))
        match reach_version(principal, version, await self.sharing.parties_of(function_id)):
            case Reach.HIDDEN:
                raise NotFound(_version_not_found(function_id, version_id, principal.nca_id))
            case Reach.DENIED:
                require_function(principal, function_id, version_id)
                raise Forbidden(
                    f"Function id '{function_id}': Missing resource entry in ApiKey for the"
                    " function (a shared function needs 'authorized-functions')"
                )
            case _:
                return shown(principal, version)

    async def version(self, function_id: str, version_id: str) -> FunctionVersion:
        """A version by id, no key involved (workers); NotFound if it is gone."""
        version = await self.repo.get(function_id, version_id)
        if version is None:
            raise NotFound(_version_not_found(function_id, version_id, self.nca_id))
        return version

    async def set_status(self, version_id: str, status: FunctionStatus) -> None:
        await self.repo.set_status(version_id, status)

    async def secrets(self, version_id: str) -> dict[str, Any]:
        """Secret values of a version (for /var/secrets/secrets.json in its containers)."""
        return await self.repo.secrets(version_id)

    # -- visibility -------------------------------------------------------------------------

    def _may_see(self, principal: Principal, version: FunctionVersion) -> bool:
        if version.nca_id == principal.nca_id:
            return covers(principal.resources, version.function_id, version.version_id)
        return True  # shared versions were filtered by `reach` already


def _check_llm_stays_llm(existing: FunctionVersion, new: FunctionVersion) -> None:
    was_llm = existing.function_type is FunctionType.LLM
    if was_llm != (new.function_type is FunctionType.LLM):
        kind = "LLM" if was_llm else "non-LLM"
        raise Invalid(
            f"Invalid request: all versions of function '{existing.function_id}' must keep"
            f" 'functionType' {kind}; got {new.function_type.value}"
        )


def _function_not_found(function_id: str, nca_id: str) -> str:
    return f"Function id '{function_id}': Not found in account '{nca_id}'"


def _version_not_found(function_id: str, version_id: str, nca_id: str) -> str:
    return f"Function id '{function_id}', version '{version_id}': Not found in account '{nca_id}'"
