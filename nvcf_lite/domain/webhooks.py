"""Webhooks (beyond NVCF): where a request's final result may be POSTed, and how it is signed.

`NVCF-WEBHOOK-URL` names an http(s) URL whose host is an IP literal (or `localhost`) inside
`webhooks.allow` (default: loopback only). Host names are not resolved: a name's address can
change between the check and the POST, so only literals are judged. The POST carries the
result as JSON, signed with HMAC-SHA256 over `<timestamp>.<body>` (README "Webhooks").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec

from nvcf_lite.domain.invocation_rules import status_header
from nvcf_lite.errors import Invalid, Unprocessable
from nvcf_lite.models import Outcome

HEADER = "nvcf-webhook-url"
ID_HEADER = "NVCF-Webhook-Id"
TIMESTAMP_HEADER = "NVCF-Webhook-Timestamp"
SIGNATURE_HEADER = "NVCF-Webhook-Signature"
MAX_URL = 2048
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(allow: Sequence[str]) -> list[Network]:
    """The allow-list's networks; ValueError names an entry that is none."""
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in allow]


class WebhookPolicy:
    """Which webhook targets a request may name."""

    def __init__(self, allow: Sequence[str]) -> None:
        self.allow = networks(allow)

    def check(self, url: str) -> str:
        """`url` when it may be used; 400 when it is no http(s) URL, 422 when its host is
        not on the allow-list."""
        url = url.strip()
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError on a bad port
        except ValueError as exc:
            raise Invalid(f"NVCF-WEBHOOK-URL '{url[:200]}' is not a valid URL: {exc}") from None
        host = parts.hostname or ""
        if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not host:
            raise Invalid(
                f"NVCF-WEBHOOK-URL '{url[:200]}' must be an http or https URL with a host "
                f"(at most {MAX_URL} characters)"
            )
        addresses = _addresses(host)
        if not addresses or not all(any(a in n for n in self.allow) for a in addresses):
            allowed = ", ".join(str(n) for n in self.allow) or "nothing"
            raise Unprocessable(
                f"NVCF-WEBHOOK-URL host '{host}' is not allowed: a webhook must target an IP "
                f"address in webhooks.allow ({allowed}), or localhost when loopback is allowed"
            )
        return url


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if host.lower() == "localhost":
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return []


class Payload(msgspec.Struct, kw_only=True, rename="camel"):
    """The JSON body of a webhook POST."""

    delivery_id: str
    request_id: str
    function_id: str
    version_id: str
    status: int
    nvcf_status: str
    headers: list[tuple[str, str]]
    body: str
    body_encoding: str  # "utf-8" or "base64"
    location: str | None
    finished_at: float


def payload(
    delivery_id: str,
    request_id: str,
    function_id: str,
    version_id: str,
    outcome: Outcome,
    finished_at: float,
) -> bytes:
    """The webhook body for a request's outcome (the same bytes on every attempt)."""
    try:
        body, encoding = outcome.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(outcome.body).decode("ascii"), "base64"
    return msgspec.json.encode(
        Payload(
            delivery_id=delivery_id,
            request_id=request_id,
            function_id=function_id,
            version_id=version_id,
            status=outcome.status,
            nvcf_status=status_header(outcome.status),
            headers=outcome.headers,
            body=body,
            body_encoding=encoding,
            location=outcome.location,
            finished_at=finished_at,
        )
    )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 of `<timestamp>.<body>` keyed by the secret's UTF-8 bytes."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(
    secret: str, delivery_id: str, request_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        "NVCF-REQID": request_id,
    }


def backoff(attempts: int, initial_s: float, max_s: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones (doubling, capped)."""
    return float(min(max_s, initial_s * 2 ** max(0, attempts - 1)))
