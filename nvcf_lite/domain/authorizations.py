"""Function sharing, Z1-Z10 (spec §2.7): the authorized parties of a function or a version.

Only the owning account changes or reads a function's parties (scope `authorize_clients`, the
key's resources covering the function); any other account gets what the function's other
routes give it (404 when nothing is shared with it, 403 when it is a party). A version's
effective parties are its own and, inherited, the function's. A party may invoke, list and read
the queue details of what it is shared with, and nothing else (domain/auth.py `reach`).
Reads answer the set as stored; writes replace it whole, in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nvcf_lite.domain.auth import require_scope
from nvcf_lite.domain.functions import Functions
from nvcf_lite.errors import Conflict, Invalid, NotFound
from nvcf_lite.models import WILDCARD, AuthorizedParty, Principal
from nvcf_lite.store.authorized_parties import FUNCTION_LEVEL, AuthorizedPartiesRepo

SCOPE = "authorize_clients"


@dataclass(frozen=True)
class PartiesOf:
    """`AuthorizedPartiesByFunctionDto`: a function (version_id None) or one version."""

    function_id: str
    nca_id: str  # the owner
    version_id: str | None
    parties: list[AuthorizedParty]


def validate(parties: Sequence[AuthorizedParty]) -> list[AuthorizedParty]:
    """Non-empty, no duplicate ncaId; '*' only alone and without clientId."""
    if not parties:
        raise Invalid("Invalid request: 'authorizedParties' must not be empty")
    seen: set[str] = set()
    for party in parties:
        if not party.nca_id.strip():
            raise Invalid("Invalid request: each authorized party needs a non-empty 'ncaId'")
        if party.nca_id in seen:
            raise Invalid(f"Invalid request: duplicate authorized party ncaId '{party.nca_id}'")
        seen.add(party.nca_id)
    if WILDCARD in seen and (len(parties) > 1 or parties[0].client_id):
        raise Invalid(
            "Invalid request: the wildcard party '*' (public) must be the only authorized"
            " party and cannot have a clientId"
        )
    return list(parties)


class Authorizations:
    def __init__(
        self, repo: AuthorizedPartiesRepo, functions: Functions, changed: Callable[[], None]
    ) -> None:
        self._repo = repo
        self._functions = functions
        self._changed = changed  # the invocation path's version cache drops what it knew
        self._writes = asyncio.Lock()  # add/remove read the set and write it back

    async def _owner(self, principal: Principal, fid: str, vid: str | None) -> str:
        require_scope(principal, SCOPE)
        if vid is None:
            versions = await self._functions.own_versions(principal, fid)
            return versions[0].nca_id
        return (await self._functions.find(principal, fid, vid)).nca_id

    async def function(self, principal: Principal, fid: str) -> list[PartiesOf]:
        """Z2: one entry per version, each with the function-level parties it inherits."""
        require_scope(principal, SCOPE)
        versions = await self._functions.own_versions(principal, fid)
        stored = await self._repo.of_function(fid)
        inherited = stored.get(FUNCTION_LEVEL, [])
        return [
            PartiesOf(fid, v.nca_id, v.version_id, _union(inherited, stored.get(v.version_id)))
            for v in versions
        ]

    async def get(self, principal: Principal, fid: str, vid: str | None) -> PartiesOf:
        """Z7 (a version: its own parties and the function's); the function-level set."""
        owner = await self._owner(principal, fid, vid)
        stored = await self._repo.of_function(fid)
        inherited = stored.get(FUNCTION_LEVEL, [])
        if vid is None:
            return PartiesOf(fid, owner, None, inherited)
        return PartiesOf(fid, owner, vid, _union(inherited, stored.get(vid)))

    async def replace(
        self, principal: Principal, fid: str, vid: str | None, parties: Sequence[AuthorizedParty]
    ) -> PartiesOf:
        """Z1/Z6: the set becomes `parties`."""
        owner = await self._owner(principal, fid, vid)
        wanted = validate(parties)
        async with self._writes:
            await self._repo.replace(fid, vid or FUNCTION_LEVEL, wanted)
        self._changed()
        return PartiesOf(fid, owner, vid, wanted)

    async def add(
        self, principal: Principal, fid: str, vid: str | None, party: AuthorizedParty
    ) -> PartiesOf:
        """Z3/Z8: 404 while there are no parties (POST makes them), 409 for a party already
        in. A version counts the function's parties it inherits (what Z7 answers, and what
        ngcsdk reads to choose PATCH over POST): adding to a version with inherited parties
        only starts its own set."""
        owner = await self._owner(principal, fid, vid)
        async with self._writes:
            stored = await self._repo.of_function(fid)
            current = stored.get(vid or FUNCTION_LEVEL, [])
            effective = _union(stored.get(FUNCTION_LEVEL, []), current) if vid else current
            if not effective:
                raise NotFound(
                    f"{_where(fid, vid)}: has no authorized parties yet; set them with POST"
                )
            if any(p.nca_id == party.nca_id for p in effective):
                raise Conflict(f"{_where(fid, vid)}: '{party.nca_id}' is authorized already")
            wanted = validate([*current, party])
            await self._repo.replace(fid, vid or FUNCTION_LEVEL, wanted)
        self._changed()
        return PartiesOf(fid, owner, vid, wanted)

    async def remove(
        self, principal: Principal, fid: str, vid: str | None, party: AuthorizedParty
    ) -> PartiesOf:
        """Z4/Z9: 404 when `party` is not in the set."""
        owner = await self._owner(principal, fid, vid)
        async with self._writes:
            current = await self._level(fid, vid)
            left = [p for p in current if p.nca_id != party.nca_id]
            if len(left) == len(current):
                level = " of this version (inherited ones are the function's)" if vid else ""
                raise NotFound(
                    f"{_where(fid, vid)}: '{party.nca_id}' is not an authorized party{level}"
                )
            await self._repo.replace(fid, vid or FUNCTION_LEVEL, left)
        self._changed()
        return PartiesOf(fid, owner, vid, left)

    async def clear(self, principal: Principal, fid: str, vid: str | None) -> PartiesOf:
        """Z5/Z10: no parties left at this level."""
        owner = await self._owner(principal, fid, vid)
        async with self._writes:
            await self._repo.replace(fid, vid or FUNCTION_LEVEL, [])
        self._changed()
        return PartiesOf(fid, owner, vid, [])

    async def _level(self, fid: str, vid: str | None) -> list[AuthorizedParty]:
        return (await self._repo.of_function(fid)).get(vid or FUNCTION_LEVEL, [])


def _union(
    inherited: list[AuthorizedParty], own: list[AuthorizedParty] | None
) -> list[AuthorizedParty]:
    names = {p.nca_id for p in inherited}
    return [*inherited, *(p for p in own or () if p.nca_id not in names)]


def _where(fid: str, vid: str | None) -> str:
    return f"Function id '{fid}'" + (f", version '{vid}'" if vid else "")
