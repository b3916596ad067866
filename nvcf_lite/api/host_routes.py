"""I5 by host (spec §2.3.9): `{function-id}.invocation.<domain>` in the Host header.

A request whose Host names a function goes to it whatever its path (`/v2/nvcf/functions` too:
on that host every path is the function's). The app hands such a request to the framework
under `HOST_ROUTE`, a path prefix no other route has, with the ids from the host in the scope;
the raw path (what the container receives) stays the client's, so there is one forwarding
path: the path-preserving route's, in api/invocations.
"""

from __future__ import annotations

import re
from typing import Any

HOST_ROUTE = "/_nvcf-lite/by-host"
SCOPE_KEY = "nvcf_lite.host_ids"  # (function id text, version id text or None)
CLIENT_PATH = "nvcf_lite.client_path"  # the path as the client sent it, before the prefix


def client_path(scope: Any) -> str:
    """The request's path as its client sent it (a problem's `instance`)."""
    return str(scope.get(CLIENT_PATH) or scope.get("path", ""))


class HostRoutes:
    """Which requests name a function by host, and the scope the framework routes for them."""

    def __init__(self, domain: str) -> None:
        suffix = re.escape("invocation." + domain.strip(".").lower())
        # labels, not UUIDs: a malformed id in a host meant for us is a 400 that names it
        self._host = re.compile(rf"^(?:([^.]+)\.)?([^.]+)\.{suffix}$") if domain else None

    def match(self, scope: Any) -> tuple[str, str | None] | None:
        """(function id, version id) named by the request's Host, else None."""
        if self._host is None or scope["type"] != "http":
            return None
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if host is None:
            return None
        name = host.decode("latin-1").lower()
        if name.startswith("["):  # an IPv6 literal never names a function
            return None
        found = self._host.match(name.rsplit(":", 1)[0])
        if found is None:
            return None
        return found.group(2), found.group(1)

    @staticmethod
    def routed(scope: Any, ids: tuple[str, str | None]) -> Any:
        """The scope the framework routes to the by-host handler (the raw path unchanged)."""
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = scope["path"]
        routed = {"path": HOST_ROUTE + path, "raw_path": raw, SCOPE_KEY: ids, CLIENT_PATH: path}
        return {**scope, **routed}
