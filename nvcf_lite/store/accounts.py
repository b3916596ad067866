"""Accounts table (spec §6.4): NCA id <-> NGC org name."""

from __future__ import annotations

from nvcf_lite.models import Account
from nvcf_lite.store.sqlite import Database, Row

_SELECT = "SELECT nca_id, org_name, created_at FROM accounts"


def _account(row: Row) -> Account:
    return Account(nca_id=row["nca_id"], org_name=row["org_name"], created_at=row["created_at"])


class AccountTaken(Exception):
    """Another account has this NCA id or org name."""


class AccountsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, account: Account) -> None:
        """Add an account; AccountTaken when its NCA id or org name is used already."""
        async with self._db.transaction() as tx:
            taken = await tx.fetch_one(
                "SELECT 1 FROM accounts WHERE nca_id = ? OR org_name = ?",
                (account.nca_id, account.org_name),
            )
            if taken:
                raise AccountTaken(account.nca_id)
            await tx.execute(
                "INSERT INTO accounts (nca_id, org_name, created_at) VALUES (?, ?, ?)",
                (account.nca_id, account.org_name, account.created_at),
            )

    async def ensure(self, account: Account) -> None:
        """The configured account exists with the configured org name (a renamed org in the
        config renames it); AccountTaken when another account has that org name."""
        async with self._db.transaction() as tx:
            other = await tx.fetch_one(
                "SELECT 1 FROM accounts WHERE org_name = ? AND nca_id != ?",
                (account.org_name, account.nca_id),
            )
            if other:
                raise AccountTaken(account.org_name)
            await tx.execute(
                "INSERT INTO accounts (nca_id, org_name, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (nca_id) DO UPDATE SET org_name = excluded.org_name",
                (account.nca_id, account.org_name, account.created_at),
            )

    async def all(self) -> list[Account]:
        rows = await self._db.fetch_all(f"{_SELECT} ORDER BY created_at, rowid")
        return [_account(r) for r in rows]

    async def find(self, org_name_or_nca_id: str) -> Account | None:
        row = await self._db.fetch_one(
            f"{_SELECT} WHERE org_name = ? OR nca_id = ? ORDER BY org_name = ? DESC",
            (org_name_or_nca_id, org_name_or_nca_id, org_name_or_nca_id),
        )
        return _account(row) if row else None
