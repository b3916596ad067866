"""Function sharing (table `authorized_parties`, spec §2.7): the parties of a function
(version_id '') and of single versions."""

from __future__ import annotations

from collections.abc import Sequence

from nvcf_lite.models import AuthorizedParty, now_iso
from nvcf_lite.store.sqlite import Database

FUNCTION_LEVEL = ""


class AuthorizedPartiesRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def of_function(self, function_id: str) -> dict[str, list[AuthorizedParty]]:
        """version_id ('' for the function-level set) -> its parties, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT version_id, party_nca_id, client_id FROM authorized_parties"
            " WHERE function_id = ? ORDER BY added_at, rowid",
            (function_id,),
        )
        out: dict[str, list[AuthorizedParty]] = {}
        for row in rows:
            party = AuthorizedParty(nca_id=row["party_nca_id"], client_id=row["client_id"])
            out.setdefault(row["version_id"], []).append(party)
        return out

    async def shared_with(self, nca_id: str) -> list[tuple[str, str]]:
        """(function_id, version_id or '') shared with `nca_id`, or with everyone ('*')."""
        rows = await self._db.fetch_all(
            "SELECT DISTINCT function_id, version_id FROM authorized_parties"
            " WHERE party_nca_id IN (?, '*')",
            (nca_id,),
        )
        return [(r["function_id"], r["version_id"]) for r in rows]

    async def replace(
        self, function_id: str, version_id: str, parties: Sequence[AuthorizedParty]
    ) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "DELETE FROM authorized_parties WHERE function_id = ? AND version_id = ?",
                (function_id, version_id),
            )
            for party in parties:
                await tx.execute(
                    "INSERT INTO authorized_parties"
                    " (function_id, version_id, party_nca_id, client_id, added_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (function_id, version_id, party.nca_id, party.client_id, now_iso()),
                )
