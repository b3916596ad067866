"""The one signing scheme of every pre-signed URL nvcf-lite hands out (spec §2.5, §2.3.7).

An asset's upload URL and the download URLs of assets and large results are URLs on this
server carrying `expires` (epoch seconds) and `signature` in the query. The signature is
HMAC-SHA256, keyed by the server's signing key, over the method, the canonical resource path,
the expiry and any `extra` values the request must repeat (the upload's Content-Type and
description headers, as S3 signs them). Nothing else is needed to check a URL, so a URL works
without an Authorization header. The key lives in the store (`<data_dir>/signing.key`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from nvcf_lite.errors import Forbidden

EXPIRES = "expires"
SIGNATURE = "signature"

Clock = Callable[[], float]


class Signer:
    """Signs and checks URLs with one secret key (constant-time comparison)."""

    def __init__(self, key: bytes, clock: Clock = time.time) -> None:
        if len(key) < 16:
            raise ValueError("a signing key needs at least 16 bytes")
        self._key = key
        self.clock = clock

    def signature(
        self, method: str, path: str, expires_epoch: int, extra: Mapping[str, str] | None = None
    ) -> str:
        lines = [method.upper(), path, str(expires_epoch)]
        # one `name:value` line per extra item, names sorted, so the order of a dict is moot;
        # values are length-prefixed so no value can forge the next line
        for name in sorted(extra or {}):
            value = (extra or {})[name]
            lines.append(f"{name.lower()}:{len(value)}:{value}")
        mac = hmac.new(self._key, "\n".join(lines).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def sign(
        self, method: str, path: str, expires_epoch: int, extra: Mapping[str, str] | None = None
    ) -> str:
        """The query string (`expires=...&signature=...`) that makes `path` a signed URL."""
        sig = self.signature(method, path, expires_epoch, extra)
        return urlencode({EXPIRES: expires_epoch, SIGNATURE: sig})

    def verify(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Raise Forbidden unless `query` holds a valid, unexpired signature for the request."""
        raw_expires = query.get(EXPIRES, "")
        given = query.get(SIGNATURE, "")
        if not raw_expires or not given:
            raise Forbidden("The URL is not signed: 'expires' and 'signature' are required")
        try:
            expires = int(raw_expires)
        except ValueError:
            raise Forbidden("The URL's 'expires' is not an integer") from None
        expected = self.signature(method, path, expires, extra)
        if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            raise Forbidden(
                "The request signature we calculated does not match the signature you provided"
            )
        if self.clock() >= expires:
            raise Forbidden("Request has expired: the signed URL is no longer valid")
