"""`nvcf-lite accounts create|list`: the accounts (NCA id + NGC org name) in the server's
existing database. The configured `[account]` is always there (added on first use)."""

from __future__ import annotations

import argparse
from typing import Any

from nvcf_lite.commands.database import run_on_database
from nvcf_lite.config import Config, ConfigSource
from nvcf_lite.domain.accounts import Accounts, default_account
from nvcf_lite.store.accounts import AccountsRepo
from nvcf_lite.store.sqlite import Database


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    accounts = sub.add_parser(
        "accounts",
        parents=[common],
        help="create and list accounts (NCA id + org name; keys belong to one)",
    )
    acts = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    create = acts.add_parser("create", parents=[common], help="add an account")
    create.add_argument("--nca-id", required=True, help="the account's NCA id")
    create.add_argument(
        "--org-name", required=True, help="its NGC org name (the {org} of /v2/orgs/{org}/...)"
    )
    acts.add_parser("list", parents=[common], help="list the accounts")


def open_accounts(config: Config, db: Database) -> Accounts:
    return Accounts(
        AccountsRepo(db), default_account(config.account.nca_id, config.account.org_name)
    )


def run(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    return run_on_database(source, config, lambda db: _act(config, db, args))


async def _act(config: Config, db: Database, args: argparse.Namespace) -> int:
    accounts = open_accounts(config, db)
    await accounts.ensure_default()
    if args.accounts_command == "create":
        made = await accounts.create(args.nca_id, args.org_name)
        print(f"account {made.nca_id} org {made.org_name}")
        return 0
    for account in await accounts.list():
        mark = "  (configured)" if account.nca_id == config.account.nca_id else ""
        print(f"{account.nca_id}  org={account.org_name}  created {account.created_at}{mark}")
    return 0
