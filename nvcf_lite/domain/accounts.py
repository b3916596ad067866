"""Accounts (spec §6.4): several NVIDIA Cloud Accounts on one server, each an NCA id and the
NGC org name that selects it in the `/v2/orgs/{org}` path families.

The configured `[account]` is the default account: created (or renamed to the configured org)
whenever the server or an admin command opens the database, so a server that never heard of
accounts keeps working unchanged. Keys belong to one account; everything a key makes
(functions, assets, requests, telemetries, registry credentials) belongs to its account.
"""

from __future__ import annotations

import re

from nvcf_lite.errors import Conflict, Invalid, NotFound
from nvcf_lite.models import Account, now_iso
from nvcf_lite.store.accounts import AccountsRepo, AccountTaken

# NGC org names are path segments; NCA ids appear in headers (NVCF-NCAID) and messages.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check(what: str, value: str) -> str:
    value = value.strip()
    if not NAME.match(value):
        raise Invalid(
            f"invalid {what} '{value}': 1-64 characters of [A-Za-z0-9_.-], starting with a"
            " letter or digit"
        )
    return value


class Accounts:
    def __init__(self, repo: AccountsRepo, default: Account) -> None:
        self._repo = repo
        self.default = default

    async def ensure_default(self) -> None:
        try:
            await self._repo.ensure(self.default)
        except AccountTaken:
            raise Conflict(
                f"the configured account '{self.default.nca_id}' has org name"
                f" '{self.default.org_name}', which another account uses already"
            ) from None

    async def create(self, nca_id: str, org_name: str) -> Account:
        account = Account(
            nca_id=_check("NCA id", nca_id),
            org_name=_check("org name", org_name),
            created_at=now_iso(),
        )
        if account.nca_id == "*":
            raise Invalid("'*' is the wildcard party, not an NCA id")
        try:
            await self._repo.insert(account)
        except AccountTaken:
            raise Conflict(
                f"an account with NCA id '{nca_id}' or org name '{org_name}' exists already"
            ) from None
        return account

    async def list(self) -> list[Account]:
        return await self._repo.all()

    async def find(self, org_name_or_nca_id: str) -> Account:
        found = await self._repo.find(org_name_or_nca_id.strip())
        if found is None:
            raise NotFound(
                f"no account with org name or NCA id '{org_name_or_nca_id}'"
                " (see `nvcf-lite accounts list`)"
            )
        return found


def default_account(nca_id: str, org_name: str) -> Account:
    return Account(nca_id=nca_id, org_name=org_name, created_at=now_iso())
