"""Invocation rules that need no state (spec §2.3.1-2.3.3, §4.3-4.4, §5.2): the poll window
header, which client headers reach the container, NVCF-STATUS, and problem+json outcomes."""

from __future__ import annotations

import re

import msgspec

from nvcf_lite.errors import CONTAINER_PREFIX, PROBLEM_JSON, Invalid, kebab_phrase, problem_body
from nvcf_lite.models import Outcome, RequestRecord, parse_uuid

HOP_BY_HOP = {
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
}
# Set by the platform for the container; a client cannot override them (spec §4.3).
WORKER_OWNED = {
    "nvcf-reqid",
    "nvcf-sub",
    "nvcf-ncaid",
    "nvcf-function-name",
    "nvcf-function-id",
    "nvcf-function-version-id",
    "nvcf-asset-dir",
    "nvcf-large-output-dir",
    "nvcf-max-response-size-bytes",
    "nvcf-nspectid",
    "nvcf-backend",
    "nvcf-instancetype",
    "nvcf-region",
    "nvcf-env",
    "nvcf-function-asset-ids",
    "nvcf-poll-seconds",
    "nvcf-poll_seconds",
    "nvcf-invocation-region",
}

_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")


def require_uuid(value: str, what: str) -> str:
    """The canonical form of an id from a path or header; a 400 problem when it is no UUID
    (never the catch-all 404: the route exists, the id is malformed)."""
    canonical = parse_uuid(value)
    if canonical is None:
        raise Invalid(f"Invalid request: {what} '{value}' is not a UUID")
    return canonical


def poll_seconds(headers: dict[str, str], default: int, maximum: int) -> int:
    """NVCF-POLL-SECONDS (or the NVCF-POLL_SECONDS spelling ngcsdk 3.x sends), §2.3.3.

    `headers` has lower-case names. Absent or empty: `default`; below 1: 1; above `maximum`
    or not an integer: 400.
    """
    raw = headers.get("nvcf-poll-seconds")
    if raw is None:
        raw = headers.get("nvcf-poll_seconds")
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not _INTEGER.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise Invalid(f"NVCF-POLL-SECONDS must be an integer number of seconds, got '{shown}'")
    value = int(text)
    if value > maximum:
        raise Invalid(f"NVCF-POLL-SECONDS must be <= {maximum}")
    return max(1, value)


def forwardable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers minus Authorization, hop-by-hop and platform-owned ones."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    drop = HOP_BY_HOP | WORKER_OWNED | named
    return [(n, v) for n, v in headers if n.lower() not in drop]


def status_header(status: int) -> str:
    """NVCF-STATUS for an answer of this status (§2.3.2)."""
    if status == 202:
        return "in-progress"
    return "errored" if status >= 400 else "fulfilled"


def problem(status: int, type_: str, detail: str, instance: str, request_id: str) -> Outcome:
    """A problem+json outcome (spec §4.4, §5.2), rendered by the one renderer in `errors`."""
    body = problem_body(status, detail, instance=instance, type_=type_, request_id=request_id)
    return Outcome(status=status, headers=[("content-type", PROBLEM_JSON)], body=body, error=True)


def container_error(status: int, body: bytes, instance: str, request_id: str) -> Outcome:
    """Wrap a container answer >= 400 the way NVCF's worker does (§4.4)."""
    detail = "Inference error"
    try:
        parsed = msgspec.json.decode(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            detail = parsed["error"]
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested past msgspec's depth
        pass
    # The reason phrase, not the control-plane kinds: a container's 409 is `conflict`.
    type_ = CONTAINER_PREFIX + kebab_phrase(status)
    return problem(status, type_, detail, instance, request_id)


def client_path(record: RequestRecord) -> str:
    """The path the client called: the `instance` of a problem about this request."""
    if record.mode in ("path", "grpc"):
        return record.path
    return f"/v2/nvcf/pexec/functions/{record.function_id}"
