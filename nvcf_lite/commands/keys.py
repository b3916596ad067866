"""`nvcf-lite keys create|list|revoke|token`: API keys in the server's existing database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from nvcf_lite.commands.accounts import open_accounts
from nvcf_lite.commands.database import run_on_database
from nvcf_lite.config import Config, ConfigSource
from nvcf_lite.domain.auth import Keys
from nvcf_lite.domain.tokens import TokenSigner
from nvcf_lite.models import SCOPES
from nvcf_lite.store.data_dir import give_to_owner
from nvcf_lite.store.keys import KeysRepo
from nvcf_lite.store.signing_key import KEY_FILE, load_signing_key
from nvcf_lite.store.sqlite import Database


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser(
        "keys",
        parents=[common],
        help="create, list, revoke API keys; mint bearer tokens (in the server's database)",
    )
    ks = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = ks.add_parser("create", parents=[common], help="create a key and print it once")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="NVCF scope (repeat, or comma-separate); 'all' for every scope",
    )
    create.add_argument(
        "--function", action="append", default=[], help="limit the key to FID, FID/* or FID/VID"
    )
    create.add_argument("--description", default="", help="free text shown by `keys list`")
    create.add_argument(
        "--account",
        help="org name or NCA id of the key's account (default: the configured [account])",
    )
    create.add_argument(
        "--team",
        action="append",
        default=[],
        help="NGC team the key belongs to (repeat); it may then use only these teams' paths",
    )
    ks.add_parser("list", parents=[common], help="list keys (never the secret part)")
    revoke = ks.add_parser("revoke", parents=[common], help="revoke a key by id or printed prefix")
    revoke.add_argument("key", help="key id, or the prefix `keys list` prints")
    token = ks.add_parser(
        "token",
        parents=[common],
        help="print a bearer token (JWT) for a key, by id or printed prefix",
    )
    token.add_argument("key", help="key id, or the prefix `keys list` prints")
    token.add_argument(
        "--ttl", type=int, help="lifetime in seconds (default: auth.token_ttl_s; at most 30 days)"
    )


def run(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    return run_on_database(source, config, lambda db: _act(config, db, args))


async def _act(config: Config, db: Database, args: argparse.Namespace) -> int:
    tokens = None
    if args.keys_command == "token":
        # the database exists here, so this is the server's data_dir: its key, or the one it
        # will load on its next start (the first writer of signing.key wins)
        signing_key = await asyncio.to_thread(load_signing_key, config.data_path)
        give_to_owner(config.data_path, config.data_path / KEY_FILE)
        tokens = TokenSigner(signing_key)
    keys = Keys(KeysRepo(db), config.account.nca_id, tokens=tokens)
    accounts = open_accounts(config, db)
    await accounts.ensure_default()
    if args.keys_command == "create":
        scopes = [s for item in args.scope for s in item.split(",")]
        if "all" in scopes:
            scopes = list(SCOPES)
        account = await accounts.find(args.account) if args.account else accounts.default
        token, key = await keys.create(
            scopes, args.function, args.description, nca_id=account.nca_id, teams=args.team
        )
        print(token)
        teams = f", teams {','.join(key.teams)}" if key.teams else ""
        print(
            f"key id {key.key_id}: account {account.nca_id} (org {account.org_name}){teams},"
            f" scopes {','.join(key.scopes)}",
            file=sys.stderr,
        )
    elif args.keys_command == "list":
        for key in await keys.list():
            state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
            res = ",".join(f"{r.type}:{r.id}" for r in key.resources)
            teams = f"  teams={','.join(key.teams)}" if key.teams else ""
            print(
                f"{key.key_id}  {key.key_prefix}...  {state}  created {key.created_at}"
                f"  account={key.nca_id}{teams}"
                f"  scopes={','.join(key.scopes)}  resources={res}  {key.description}"
            )
    elif args.keys_command == "token":
        ttl = config.auth.token_ttl_s if args.ttl is None else args.ttl
        value, expires_in = await keys.token_for_key(args.key, ttl)
        print(value)
        print(f"expires in {expires_in} s", file=sys.stderr)
    else:
        print(f"revoked {await keys.revoke(args.key)}")
    return 0
