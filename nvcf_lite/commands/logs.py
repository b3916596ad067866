"""`nvcf-lite logs FUNCTION_ID`: a function's container output, read from the Docker engine.

Like `docker logs`, it reads the engine directly (the containers' nvcf-lite labels and the
config's `docker.namespace`), so it works while the server is down and needs what `docker`
needs: access to the engine's socket (the docker group). Remote users read the same over
`GET /v2/nvcf/functions/{id}/logs`. Replaced instances are shown too while their containers
exist (the scheduler keeps the newest `docker.failed_containers_kept` failed ones per
version); lines are prefixed with the instance id when there are several (or may be, while
following). stdout carries only the containers' output; what was read goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from types import FrameType
from typing import Any

from nvcf_lite.config import Config, ConfigSource
from nvcf_lite.errors import NvcfError
from nvcf_lite.models import parse_uuid
from nvcf_lite.runtime.container_logs import RUNNING, ContainerLogs


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "logs",
        parents=[common],
        help="print a function's container logs (from the Docker engine, like docker logs)",
        description="Print the output of a function's containers: running instances and the "
        "kept containers of failed ones, oldest first. Reads the Docker engine directly "
        "(docker.base_url, docker.namespace), so the server need not run.",
    )
    p.add_argument("function_id", metavar="FUNCTION_ID")
    p.add_argument("--version", metavar="VID", help="only this function version")
    p.add_argument("--instance", metavar="ID", help="only this instance (an id or its prefix)")
    p.add_argument(
        "--tail", type=_lines, metavar="N", help="the last N lines of each container (default all)"
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing what the containers print, new instances included, until Ctrl-C",
    )


def _lines(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of lines >= 0, not {text!r}")
    return value


def run(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    for name, value in (("FUNCTION_ID", args.function_id), ("--version", args.version)):
        if value is not None and parse_uuid(value) is None:
            print(f"nvcf-lite logs: {name} {value!r} is not an id", file=sys.stderr)
            return 2
    if args.follow:
        # Ctrl-C ends a follow at once, as `docker logs -f` does. Through asyncio.run it
        # would wait for the worker threads to return from their Docker calls (a container
        # listing of the rescan, a blocked read), which took over 10 s on a busy engine.
        # Installed before asyncio.run, which then leaves SIGINT alone.
        signal.signal(signal.SIGINT, _interrupted)
    try:
        return asyncio.run(_run(config, args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
        # stdout's final flush at exit would fail again: point it at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _interrupted(signum: int, frame: FrameType | None) -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more to give
        pass
    os._exit(130)


async def _run(config: Config, args: argparse.Namespace) -> int:
    from nvcf_lite.runtime.docker import DockerRuntime  # the docker SDK: only for this verb

    runtime = DockerRuntime.connect(config.docker.base_url or None)
    where = f"Docker namespace {config.docker.namespace!r} at {runtime.base_url}"
    try:
        logs = ContainerLogs(runtime, config.docker.namespace)
        versions = [args.version] if args.version else None
        try:
            targets = await logs.targets(args.function_id, versions, args.instance)
        except NvcfError as exc:
            print(f"nvcf-lite logs: {exc.detail}", file=sys.stderr)
            return 1
        if not targets:
            what = f"instance {args.instance} of " if args.instance else ""
            print(
                f"nvcf-lite logs: no containers of {what}function {args.function_id} in {where}",
                file=sys.stderr,
            )
            return 1
        running = sum(1 for t in targets if t.state in RUNNING)
        print(
            f"nvcf-lite logs: {len(targets)} container(s) ({running} running) in {where}",
            file=sys.stderr,
        )
        out = sys.stdout.buffer
        lines = logs.lines(
            args.function_id,
            targets,
            version_ids=versions,
            instance_id=args.instance,
            tail=args.tail,
            follow=args.follow,
        )
        try:
            async for line in lines:
                out.write(line)
                if args.follow:
                    out.flush()
        except NvcfError as exc:
            out.flush()
            print(f"nvcf-lite logs: {exc.detail}", file=sys.stderr)
            return 1
        out.flush()
        return 0
    finally:
        await runtime.close()
