"""`nvcf-lite status [--json]`: what a running server runs, read over its API.

It asks `GET /health` (no key) and `GET /v2/nvcf-lite/status` (scope
`list_functions_details`) of the server the config points at (`server.public_url`, else
`server.host`/`server.port`, https when `server.tls_cert` is set) or of `--url`, and prints the
GPU units, the function versions with their status and why, and the instances, as tables (or
the status answer as JSON). The key is `--api-key`, else $NVCF_LITE_API_KEY, else $NGC_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nvcf_lite.config import Config, ConfigSource, public_url
from nvcf_lite.domain.status import STATUS_PATH

if TYPE_CHECKING:  # imported by the command itself: the parser of every command, `serve` too,
    # loads this module, and httpx brings its own CLI (click, rich, pygments: ~10 MB of RSS)
    import httpx

KEY_VARIABLES = ("NVCF_LITE_API_KEY", "NGC_API_KEY")
Doc = dict[str, Any]


class StatusError(Exception):
    """Why no status could be shown; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser(
        "status",
        parents=[common],
        help="functions, instances, queues and GPU units of a running server",
        description="Ask a running nvcf-lite server what it runs: GPU units used and free, "
        "each function version's status and why, its queue depth, and each instance's "
        "state, GPU units, age, in-flight requests and image pull progress.",
    )
    status.add_argument("--json", action="store_true", help="print the status answer as JSON")
    status.add_argument(
        "--url",
        help="the server's base URL (default: from the config: server.public_url, else "
        "server.host and server.port, https when server.tls_cert is set)",
    )
    status.add_argument(
        "--api-key",
        metavar="KEY",
        help="a key with the list_functions_details scope (default: "
        + ", else ".join(f"${v}" for v in KEY_VARIABLES)
        + ")",
    )


def run(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    url = (args.url or public_url(config)).rstrip("/")
    try:
        key = _api_key(args.api_key, os.environ)
        health, report = _fetch(url, key, _verify(config, args.url))
    except StatusError as exc:
        print(f"nvcf-lite status: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(render(url, health, report)))
    return 0


def _api_key(flag: str | None, environ: Mapping[str, str]) -> str:
    for value in (flag, *(environ.get(v) for v in KEY_VARIABLES)):
        if value:
            return value
    names = " or ".join(f"${v}" for v in KEY_VARIABLES)
    raise StatusError(
        f"no API key: pass --api-key KEY or set {names} (a key with the "
        "list_functions_details scope; `nvcf-lite keys create --scope list_functions_details`)",
        code=2,
    )


def _verify(config: Config, url_flag: str | None) -> bool | str:
    """Trust the server's own certificate for the configured URL (it may be self-signed)."""
    if url_flag is None and config.server.tls_cert and not config.server.public_url:
        return config.server.tls_cert
    return True


def _fetch(url: str, key: str, verify: bool | str) -> tuple[Doc, Doc]:
    import httpx

    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    try:
        with httpx.Client(base_url=url, verify=verify, timeout=10.0) as client:
            health = client.get("/health")
            answer = client.get(STATUS_PATH, headers=headers)
    except httpx.HTTPError as exc:
        raise StatusError(
            f"cannot reach the nvcf-lite server at {url}: {exc or type(exc).__name__} "
            "(is `nvcf-lite serve` running there? --url or --config point elsewhere)"
        ) from exc
    if answer.status_code != 200:
        raise StatusError(_refusal(url, answer))
    return _json(health), _json(answer)


def _json(response: httpx.Response) -> Doc:
    try:
        doc: Doc = response.json()
    except ValueError:
        return {}
    return doc


def _refusal(url: str, answer: httpx.Response) -> str:
    problem = _json(answer)
    detail = problem.get("detail") or problem.get("title") or answer.text[:200]
    if answer.status_code == 401:
        return f"the server at {url} did not accept the API key: {detail}"
    if answer.status_code == 403:
        return f"the API key may not read the status: {detail}"
    if answer.status_code == 404:
        return f"{url} answered 404 for {STATUS_PATH}: is it an nvcf-lite server of this version?"
    return f"the server at {url} answered {answer.status_code}: {detail}"


# Rendering ------------------------------------------------------------------------------


def render(url: str, health: Doc, report: Doc) -> list[str]:
    """The readable form: a header, GPU units, versions, instances."""
    lines = [_header(url, health), ""]
    gpus = report.get("gpus") or []
    lines.append(
        "GPU units: "
        + (
            ", ".join(
                f"{g['gpu']} {g['used']} used, {g['free']} free (of {g['total']})" for g in gpus
            )
            or "none (CPU deployments only)"
        )
    )
    usage = report.get("resources")
    if usage:
        lines.append(
            f"CPU and memory held by instances: {usage['cpuCoresHeld']:g} of "
            f"{usage['cpuCores']:g} cores, {usage['memoryMbHeld']} of {usage['memoryMb']} MiB"
        )
    versions, instances = _rows(report)
    lines.append("")
    if not versions:
        return [*lines, "No functions."]
    lines += table(
        ["NAME", "FUNCTION ID", "VERSION ID", "STATUS", "QUEUE", "READY", "REASON"], versions
    )
    lines.append("")
    if not instances:
        return [*lines, "No instances."]
    header = ["INSTANCE", "FUNCTION", "VERSION", "STATE", "TYPE", "GPU UNITS", "AGE", "IN-FLIGHT"]
    return lines + table([*header, "IMAGE PULL / ERROR"], instances)


def _header(url: str, health: Doc) -> str:
    parts = [f"nvcf-lite {health.get('version', '?')} at {url}: {health.get('status', '?')}"]
    for name in ("store", "docker", "gpus"):
        component = health.get(name) or {}
        text = f"{name} {component.get('status', '?')}"
        if component.get("status") != "ok" and component.get("detail"):
            text += f" ({component['detail']})"
        parts.append(text)
    return "; ".join(parts)


def _rows(report: Doc) -> tuple[list[list[str]], list[list[str]]]:
    versions: list[list[str]] = []
    instances: list[list[str]] = []
    for fn in report.get("functions") or []:
        for v in fn["versions"]:
            scaling = v.get("scaling") or []
            ready = sum(s["ready"] for s in scaling)
            target = sum(s["target"] for s in scaling)
            versions.append(
                [
                    fn["name"],
                    fn["functionId"],
                    v["versionId"],
                    v["status"],
                    str(v["queueDepth"]),
                    f"{ready}/{target}" if v.get("deploymentId") else "-",
                    v.get("reason") or "",
                ]
            )
            for i in v.get("instances") or []:
                instances.append(_instance_row(fn["name"], v["versionId"], i))
    return versions, instances


def _instance_row(name: str, version_id: str, i: Doc) -> list[str]:
    pull = i.get("imagePull")
    return [
        i["instanceId"][:8],
        name,
        version_id[:8],
        i["state"],
        i["instanceType"],
        ",".join(i.get("gpuUuids") or []) or "-",
        age(float(i["ageS"])),
        f"{i['inFlight']}/{i['maxRequestConcurrency']}",
        pull_text(pull) if pull else i.get("error") or "",
    ]


def pull_text(pull: Doc) -> str:
    done, total = pull["bytesDone"] / 1e6, pull["bytesTotal"] / 1e6
    share = f" ({100 * pull['bytesDone'] // pull['bytesTotal']}%)" if pull["bytesTotal"] else ""
    return (
        f"pulling {pull['layersDone']}/{pull['layersTotal']} layers, "
        f"{done:.1f} of {total:.1f} MB{share}"
    )


def age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in [header, *rows]
    ]
