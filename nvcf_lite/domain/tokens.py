"""Short-lived bearer tokens (JWTs) minted for an API key (spec §6.1, §7.1 recipe 2).

NVCF accepts JWTs as bearers besides `nvapi-` keys, and ngcsdk sends a JWT-shaped key unchanged
as `Bearer` without calling get-caller-info, which is what makes ngcsdk usable over plain HTTP
(its base URL is forced to https for `nvapi-` keys). nvcf-lite therefore mints its own JWTs:

- `GET /token` with `Authorization: Basic base64("$oauthtoken:<nvapi key>")` (the NGC token
  service's form, so `NGC_CLI_AUTH_URL` can point here) or `Bearer <nvapi key>` answers
  `{"token": ..., "expires_in": ...}`; `nvcf-lite keys token KEY_ID` prints one.
- A token is HS256 over `{"iss": "nvcf-lite", "sub": <key id>, "iat", "exp", "jti"}`, keyed by
  a sub-key of the server's signing key (`<data_dir>/signing.key`). It carries no scopes: each
  use is checked against its key's current scopes and resources, so revoking the key (or a
  key's own expiry) ends its tokens too; the token's `exp` only shortens that.
- A JWT-shaped bearer nvcf-lite did not sign (another issuer, another server's key, `alg`
  other than HS256, a bad signature, a past `exp`) is a 401, never a guess.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

import msgspec

from nvcf_lite.errors import Invalid, Unauthorized

ISSUER = "nvcf-lite"
JWT_PATTERN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
MAX_TTL_S = 30 * 24 * 3600  # a token outliving a month is a key; make a key instead
_HEADER = {"alg": "HS256", "typ": "JWT"}
_INVALID = "Invalid bearer token: not a token this server issued"


class Claims(msgspec.Struct, frozen=True):
    iss: str
    sub: str  # the API key's id
    iat: int
    exp: int
    jti: str


class _Header(msgspec.Struct):
    alg: str
    typ: str = "JWT"


def looks_like_jwt(token: str) -> bool:
    return JWT_PATTERN.match(token) is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Mints and checks HS256 JWTs; the MAC key is derived from the server's signing key, so a
    token and a signed URL can never be swapped for each other."""

    def __init__(self, signing_key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(signing_key, b"nvcf-lite/jwt/v1", hashlib.sha256).digest()
        self.clock = clock

    def _mac(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())

    def mint(self, key_id: str, ttl_s: int) -> tuple[str, int]:
        """A token for `key_id` valid for `ttl_s` seconds; returns (token, expires_in)."""
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise Invalid(f"a token lifetime must be 1..{MAX_TTL_S} seconds, got {ttl_s}")
        now = int(self.clock())
        claims = Claims(iss=ISSUER, sub=key_id, iat=now, exp=now + ttl_s, jti=secrets.token_hex(8))
        head = _b64(msgspec.json.encode(_HEADER))
        body = _b64(msgspec.json.encode(claims))
        return f"{head}.{body}.{self._mac(f'{head}.{body}')}", ttl_s

    def claims(self, token: str) -> Claims:
        """The claims of a token this server signed and that has not expired; else Unauthorized."""
        if not looks_like_jwt(token):
            raise Unauthorized(_INVALID)
        head, body, mac = token.split(".")
        if not hmac.compare_digest(self._mac(f"{head}.{body}").encode(), mac.encode()):
            raise Unauthorized(_INVALID)
        try:
            header = msgspec.json.decode(_unb64(head), type=_Header)
            claims = msgspec.json.decode(_unb64(body), type=Claims)
        except (msgspec.DecodeError, msgspec.ValidationError, binascii.Error, ValueError):
            raise Unauthorized(_INVALID) from None
        if header.alg != "HS256" or claims.iss != ISSUER:
            raise Unauthorized(_INVALID)
        if claims.exp <= self.clock():
            raise Unauthorized("The bearer token has expired; get a new one from GET /token")
        return claims
