"""Which functions of other accounts a caller sees (spec §2.7, §2.1.3): the authorized
parties of a function and its versions, read for `Functions`' visibility rules.

A version's effective parties are its own and its function's. `reach_version` says what a key
may do with a version given those (domain/auth.py `reach`); `shared` finds the versions shared
with the caller's account by NCA id (`authorized`) or by the wildcard '*' (`public`).
"""

from __future__ import annotations

import msgspec

from nvcf_lite.domain.auth import Reach, reach
from nvcf_lite.models import WILDCARD, FunctionVersion, Principal
from nvcf_lite.store.authorized_parties import FUNCTION_LEVEL, AuthorizedPartiesRepo
from nvcf_lite.store.functions import FunctionsRepo

Parties = dict[str, set[str]]
"""version_id ('' for the function) -> the NCA ids it is shared with."""


def effective(parties: Parties, version_id: str) -> set[str]:
    return parties.get(FUNCTION_LEVEL, set()) | parties.get(version_id, set())


def reach_version(principal: Principal, version: FunctionVersion, parties: Parties) -> Reach:
    return reach(
        principal,
        version.nca_id,
        effective(parties, version.version_id),
        version.function_id,
        version.version_id,
    )


def shown(principal: Principal, version: FunctionVersion) -> FunctionVersion:
    """A version as the caller may see it: another account's without its secret names and
    marked `ownedByDifferentAccount` (spec §2.1.2)."""
    if version.nca_id == principal.nca_id:
        return version
    return msgspec.structs.replace(version, secrets=None, owned_by_different_account=True)


def shared_only(function_id: str, version_id: str | None) -> str:
    """Why a party may not change a function shared with it (a 403 detail)."""
    where = f"Function id '{function_id}'" + (f", version '{version_id}'" if version_id else "")
    return (
        f"{where}: shared with this account by its owner; only the owning account may change"
        " it (a shared function can be invoked, listed and its queue read)"
    )


class Sharing:
    def __init__(self, functions: FunctionsRepo, parties: AuthorizedPartiesRepo | None) -> None:
        self._functions = functions
        self._parties = parties

    async def parties_of(self, function_id: str) -> Parties:
        if self._parties is None:
            return {}
        stored = await self._parties.of_function(function_id)
        return {vid: {p.nca_id for p in ps} for vid, ps in stored.items()}

    async def shared(self, principal: Principal, *, wildcard: bool) -> list[FunctionVersion]:
        """Other accounts' versions shared with the caller's account by NCA id (or, with
        `wildcard`, with everyone), as far as the key's resources allow."""
        if self._parties is None:
            return []
        party = WILDCARD if wildcard else principal.nca_id
        found: list[FunctionVersion] = []
        pairs = await self._parties.shared_with(principal.nca_id)
        for fid in dict.fromkeys(fid for fid, _ in pairs):
            parties = await self.parties_of(fid)
            for version in await self._functions.list_versions(fid):
                if party not in effective(parties, version.version_id):
                    continue
                if reach_version(principal, version, parties) is Reach.SHARED:
                    found.append(shown(principal, version))
        return found
