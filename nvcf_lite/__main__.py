"""The `nvcf-lite` command: serve (default), migrate, keys, gpus."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nvcf_lite import __version__
from nvcf_lite.config import Config, ConfigError, load_config


def _config_path(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("NVCF_LITE_CONFIG"):
        return os.environ["NVCF_LITE_CONFIG"]
    return "config.toml" if Path("config.toml").is_file() else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nvcf-lite", description=__doc__)
    p.add_argument("--version", action="version", version=f"nvcf-lite {__version__}")
    p.add_argument("--config", help="config file (default: $NVCF_LITE_CONFIG or ./config.toml)")
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the NVCF API (default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--config", dest="serve_config")
    sub.add_parser("migrate", help="create or upgrade the SQLite database and exit")
    sub.add_parser("gpus", help="print the GPU inventory (NVML and simulated)")
    keys = sub.add_parser("keys", help="manage API keys")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    create = ks.add_parser("create", help="create a key and print it once")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="NVCF scope (repeat, or comma-separate); 'all' for every scope",
    )
    create.add_argument(
        "--function", action="append", default=[], help="limit the key to FID, FID/* or FID/VID"
    )
    create.add_argument("--description", default="")
    ks.add_parser("list", help="list keys (never the secret part)")
    revoke = ks.add_parser("revoke", help="revoke a key by id or printed prefix")
    revoke.add_argument("key")
    token = ks.add_parser(
        "token", help="print a bearer token (JWT) for a key, by id or printed prefix"
    )
    token.add_argument("key")
    token.add_argument(
        "--ttl", type=int, help="lifetime in seconds (default: auth.token_ttl_s; at most 30 days)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    path = _config_path(getattr(args, "serve_config", None) or args.config)
    try:
        config = load_config(path, os.environ)
    except ConfigError as exc:
        print(f"nvcf-lite: {exc}", file=sys.stderr)
        return 2
    if command == "serve":
        return _serve(config, path, args)
    if command == "migrate":
        return asyncio.run(_migrate(config))
    if command == "gpus":
        return _gpus(config)
    return asyncio.run(_keys(config, args))


def _serve(config: Config, path: str | None, args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    if path:
        os.environ["NVCF_LITE_CONFIG"] = str(Path(path).resolve())
    host = args.host or config.server.host
    port = args.port or config.server.port
    # The factory re-reads config in the worker process; CLI flags travel as env overrides.
    os.environ["NVCF_LITE_SERVER__HOST"] = host
    os.environ["NVCF_LITE_SERVER__PORT"] = str(port)
    tls: dict[str, Any] = {}
    if config.server.tls_cert:
        tls = {"ssl_cert": Path(config.server.tls_cert), "ssl_key": Path(config.server.tls_key)}
    Granian(
        "nvcf_lite.app:serve_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        log_access=config.server.access_log,
        log_level=config.server.log_level,  # type: ignore[arg-type]
        **tls,
    ).serve()
    return 0


async def _migrate(config: Config) -> int:
    from nvcf_lite.store.sqlite import migrate_file

    version = await migrate_file(config.data_path / "nvcf-lite.db")
    print(f"database {config.data_path / 'nvcf-lite.db'} at schema version {version}")
    return 0


def _gpus(config: Config) -> int:
    from nvcf_lite.inventory import read_host

    host, inventory = read_host(config)
    if inventory.error:
        print(f"NVML: {inventory.error}")
    for gpu in inventory.gpus:
        print(f"GPU {gpu.index}: {gpu.name} {gpu.uuid} {gpu.memory_mb} MiB")
        for mig in gpu.mig_devices:
            print(f"  MIG {mig.index}: {mig.name} {mig.uuid} {mig.memory_mb} MiB")
    for sim in config.gpus.simulated:
        print(f"simulated: {sim.count} x {sim.name} ({sim.memory_mb} MiB)")
    print("deployable (gpu: instance types):")
    for name in host.gpu_names():
        print(f"  {name}: {', '.join(host.instance_types(name))}")
    return 0


async def _keys(config: Config, args: argparse.Namespace) -> int:
    from nvcf_lite.domain.auth import Keys
    from nvcf_lite.domain.tokens import TokenSigner
    from nvcf_lite.errors import NvcfError
    from nvcf_lite.models import SCOPES
    from nvcf_lite.store.keys import KeysRepo
    from nvcf_lite.store.signing_key import load_signing_key
    from nvcf_lite.store.sqlite import Database

    db = await Database.open(config.data_path / "nvcf-lite.db")
    signing_key = await asyncio.to_thread(load_signing_key, config.data_path)
    keys = Keys(KeysRepo(db), config.account.nca_id, tokens=TokenSigner(signing_key))
    try:
        if args.keys_command == "create":
            scopes = [s for item in args.scope for s in item.split(",")]
            if "all" in scopes:
                scopes = list(SCOPES)
            token, key = await keys.create(scopes, args.function, args.description)
            print(token)
            print(f"key id {key.key_id}: scopes {','.join(key.scopes)}", file=sys.stderr)
        elif args.keys_command == "list":
            for key in await keys.list():
                state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
                res = ",".join(f"{r.type}:{r.id}" for r in key.resources)
                print(
                    f"{key.key_id}  {key.key_prefix}...  {state}  created {key.created_at}"
                    f"  scopes={','.join(key.scopes)}  resources={res}  {key.description}"
                )
        elif args.keys_command == "token":
            ttl = config.auth.token_ttl_s if args.ttl is None else args.ttl
            value, expires_in = await keys.token_for_key(args.key, ttl)
            print(value)
            print(f"expires in {expires_in} s", file=sys.stderr)
        else:
            print(f"revoked {await keys.revoke(args.key)}")
    except NvcfError as exc:
        print(f"nvcf-lite: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
