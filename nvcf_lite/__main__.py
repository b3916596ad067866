"""The `nvcf-lite` command: serve (the default) and the admin verbs.

Every verb finds its config file the way daemons do (--config, $NVCF_LITE_CONFIG, the installed
service's /etc/nvcf-lite/config.toml, ./config.toml, else built-in defaults). Only `serve` and
`migrate` may create a database; the admin verbs open the server's existing one and say which.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvcf_lite import __version__
from nvcf_lite.config import (
    SYSTEM_CONFIG,
    Config,
    ConfigError,
    ConfigSource,
    ServerConfig,
    find_config,
    load_config,
)

if TYPE_CHECKING:
    from nvcf_lite.domain.placement import Host
    from nvcf_lite.runtime.nvml import GpuInventory

_DEFAULTS = ServerConfig()
_CONFIG_HELP = (
    "config file (default: $NVCF_LITE_CONFIG, else the installed service's "
    f"{SYSTEM_CONFIG}, else ./config.toml, else built-in defaults)"
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH", help=_CONFIG_HELP)
    p = argparse.ArgumentParser(
        prog="nvcf-lite",
        description="The NVIDIA Cloud Functions API on one machine. Without a verb: serve.",
        epilog="Run `nvcf-lite VERB --help` for a verb's flags.",
    )
    p.add_argument("--version", action="version", version=f"nvcf-lite {__version__}")
    p.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    sub = p.add_subparsers(dest="command", title="verbs", metavar="VERB")
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the NVCF API (the default); creates or upgrades the database",
        description="Serve the NVCF API on one granian worker. Environment variables "
        "NVCF_LITE_<SECTION>__<KEY> override the config file; these flags override both.",
    )
    serve.add_argument(
        "--host",
        help=f"address to listen on (default: server.host, built-in {_DEFAULTS.host}; "
        "0.0.0.0 exposes the API on every interface)",
    )
    serve.add_argument(
        "--port", type=int, help=f"TCP port (default: server.port, built-in {_DEFAULTS.port})"
    )
    sub.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade the database and exit (snapshots an existing one first)",
    )
    sub.add_parser("gpus", parents=[common], help="print the GPU inventory (NVML and simulated)")
    from nvcf_lite.commands import accounts, backup, keys

    keys.add_parser(sub, common)
    accounts.add_parser(sub, common)
    backup.add_parsers(sub, common)
    from nvcf_lite.commands import status

    status.add_parser(sub, common)
    from nvcf_lite.commands import logs

    logs.add_parser(sub, common)
    from nvcf_lite.commands import artifacts

    artifacts.add_parsers(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    try:
        source = find_config(args.config, os.environ)
        config = load_config(source.path, os.environ)
    except ConfigError as exc:
        print(f"nvcf-lite: {exc}", file=sys.stderr)
        return 2
    if command == "serve":
        return _serve(config, source, args)
    if command == "migrate":
        return _migrate(config, source)
    if command == "gpus":
        return _gpus(config, source)
    if command == "keys":
        from nvcf_lite.commands import keys

        return keys.run(config, source, args)
    if command == "accounts":
        from nvcf_lite.commands import accounts

        return accounts.run(config, source, args)
    if command in ("backup", "restore"):
        from nvcf_lite.commands import backup

        return backup.run(config, source, args)
    if command == "status":
        from nvcf_lite.commands import status

        return status.run(config, source, args)
    if command == "logs":
        from nvcf_lite.commands import logs

        return logs.run(config, source, args)
    if command in ("models", "resources"):
        from nvcf_lite.commands import artifacts

        return artifacts.run(config, source, args)
    raise AssertionError(f"verb {command} has no handler")


def _serve(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    from nvcf_lite.commands.database import EXIT_REFUSED, log, prepare_serve
    from nvcf_lite.logs import ACCESS_FORMAT, configure, dict_config
    from nvcf_lite.runtime.own_container import data_mount_problem

    # From here on everything this process says goes through the log (log_format json: JSON).
    configure(config.server.log_level, config.server.log_format)
    # In a container, data_dir must be the host's folder at the same path (function containers
    # mount folders under it from the host): refuse before anything is written there.
    problem = data_mount_problem(
        config.data_path, config.docker.base_url or None, secrets_dir=config.secrets_path
    )
    if problem:
        log.error("%s", problem)
        return EXIT_REFUSED
    lock = prepare_serve(config, source)
    if lock is None:
        return EXIT_REFUSED
    if source.path:
        os.environ["NVCF_LITE_CONFIG"] = str(source.path.resolve())
    host = getattr(args, "host", None) or config.server.host
    port = getattr(args, "port", None) or config.server.port
    # The factory re-reads config in the worker process; CLI flags travel as env overrides,
    # and data_dir as the absolute path this process locked.
    os.environ["NVCF_LITE_SERVER__HOST"] = host
    os.environ["NVCF_LITE_SERVER__PORT"] = str(port)
    os.environ["NVCF_LITE_STORE__DATA_DIR"] = str(config.data_path)
    _raise_open_files_limit()
    tls: dict[str, Any] = {}
    if config.server.tls_cert:
        tls = {"ssl_cert": Path(config.server.tls_cert), "ssl_key": Path(config.server.tls_key)}
    with lock:
        _serve_embedded(
            address=host,
            port=port,
            backlog=config.server.backlog,
            # granian's default (backlog / workers) would cap requests held open at once, and
            # every request waiting out its poll window is one (202 comes after NVCF-POLL-SECONDS)
            backpressure=config.server.max_requests_in_flight,
            http2=config.server.http2,
            log_access=config.server.access_log,
            log_level=config.server.log_level,
            log_dictconfig=dict_config(config.server.log_level, config.server.log_format),
            log_access_format=ACCESS_FORMAT,
            **tls,
        )
    # Down, with everything it owned closed (the database by the lifespan, the lock above):
    # exit here, not through the interpreter's finalization, where threads it does not own
    # (granian's runtime, the engine's HTTP pool) may still touch Python objects as they are
    # torn down. Under systemd that crashed about one stop in four (SIGSEGV after "shutdown
    # completed"), and a stop that ends in a signal reads as a failed service.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve_embedded(*, http2: bool, **options: Any) -> None:
    """Granian's server in this process, on this process's event loop (uvloop).

    One process instead of granian's supervisor plus one worker: the supervisor held ~44 MB
    of RSS (this module, config, the database check) to do nothing but wait, and nvcf-lite
    runs exactly one worker anyway (the durable queue, the instances and the GPUs are owned
    by one process). SIGTERM/SIGINT stop it as the supervisor did: no new connections, open
    ones finish, then the app's shutdown (the lifespan) runs.
    """
    import logging
    import signal

    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    from nvcf_lite.app import serve_app

    # granian warns on every start that embedding is experimental; we chose it (above) and
    # test it (the live tests all run this server), so the line is noise in an operator's log
    logging.getLogger("_granian").addFilter(
        lambda record: record.getMessage() != "Embedded server is experimental!"
    )
    # HTTP/1.1 only unless asked: granian's "auto" serves each request through its protocol
    # detection, measured ~45 µs more CPU and latency per request at c=1 (a bare ASGI app)
    http = HTTPModes.auto if http2 else HTTPModes.http1
    server = Server(serve_app, factory=True, interface=Interfaces.ASGI, http=http, **options)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()  # returns after the lifespan shutdown
        logging.getLogger("nvcf_lite").info("shutdown completed")

    try:
        import uvloop
    except ImportError:  # no uvloop wheel for this platform
        asyncio.run(main())
    else:
        uvloop.run(main())


def _raise_open_files_limit() -> None:
    """Every client connection and every request's connection to its container is a file
    descriptor: take the hard limit (systemd's default soft limit is 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _migrate(config: Config, source: ConfigSource) -> int:
    from nvcf_lite.commands.database import announce, migrate

    announce(source, config)
    return asyncio.run(migrate(config))


def _gpus(config: Config, source: ConfigSource) -> int:
    from nvcf_lite.commands.database import announce
    from nvcf_lite.inventory import read_host

    announce(source, config, database=False)

    host, inventory = read_host(config) if config.docker.runtime != "swarm" else _swarm(config)
    if inventory.error:
        print(f"{'Swarm' if inventory.nodes else 'NVML'}: {inventory.error}")
    for node in inventory.nodes:
        print(f"node {node}: {sum(1 for g in inventory.gpus if g.node == node)} GPU(s)")
    for gpu in inventory.gpus:
        on = f" on node {gpu.node}" if gpu.node else ""
        print(f"GPU {gpu.index}: {gpu.name} {gpu.uuid} {gpu.memory_mb} MiB{on}")
        for mig in gpu.mig_devices:
            print(f"  MIG {mig.index}: {mig.name} {mig.uuid} {mig.memory_mb} MiB")
    for sim in config.gpus.simulated:
        print(f"simulated: {sim.count} x {sim.name} ({sim.memory_mb} MiB)")
    print("deployable (gpu: instance types):")
    for name in host.gpu_names():
        print(f"  {name}: {', '.join(host.instance_types(name))}")
    sizing = host.sizing
    if sizing is not None:
        print(f"instances share {sizing.totals.text()} ({sizing.source})")
        print("each instance gets (CPU quota, memory limit, shared memory):")
        for itype in host.all_instance_types():
            limits = host.limits(itype)
            assert limits is not None
            print(f"  {itype}: {limits.text()}")
        for name in sizing.unused_overrides(host.all_instance_types()):
            print(f"resources.instance_types {name}: not an instance type of this host (unused)")
    return 0


def _swarm(config: Config) -> tuple[Host, GpuInventory]:
    """Every node's GPUs, from the swarm manager at docker.base_url."""
    from nvcf_lite.inventory import read_swarm_host
    from nvcf_lite.runtime.swarm import SwarmRuntime

    async def read() -> tuple[Host, GpuInventory]:
        runtime = SwarmRuntime.connect(config.docker.base_url or None)
        try:
            return await read_swarm_host(config, runtime)
        finally:
            await runtime.close()

    return asyncio.run(read())


if __name__ == "__main__":
    sys.exit(main())
