"""API keys and authorization: NVCF's scope names and key resources (spec §6).

A key is `nvapi-` + 64 chars of [A-Za-z0-9_-]; only its SHA-256 is stored. A bearer may also
be a JWT minted for a key (domain/tokens.py): it acts with that key's scopes and resources.
Verified bearers are cached for `key_cache_seconds` so the invocation hot path does not read
SQLite per request; a revocation therefore takes effect within that many seconds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Collection, Iterable
from enum import Enum

from nvcf_lite.domain.single_flight import SingleFlight
from nvcf_lite.domain.tokens import TokenSigner, looks_like_jwt
from nvcf_lite.errors import Forbidden, Invalid, NotFound, Unauthorized
from nvcf_lite.models import (
    RESOURCE_TYPES,
    SCOPES,
    WILDCARD,
    ApiKey,
    KeyResource,
    Principal,
    new_id,
    now_iso,
    parse_uuid,
)
from nvcf_lite.store.keys import KeysRepo

KEY_PREFIX = "nvapi-"
KEY_PATTERN = re.compile(r"^nvapi-[A-Za-z0-9_-]{64}$")
_SCOPE_ALIASES = ("apikey:", "admin:")


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(48)  # 48 bytes -> exactly 64 url-safe chars


def normalise_scope(scope: str) -> str:
    for alias in _SCOPE_ALIASES:
        if scope.startswith(alias):
            return scope[len(alias) :]
    return scope


def parse_function_resource(text: str) -> KeyResource:
    """`FID`, `FID/*` or `FID/VID` -> a `function` resource (spec §6.3)."""
    fid, _, vid = text.partition("/")
    if parse_uuid(fid) is None or (vid not in ("", "*") and parse_uuid(vid) is None):
        raise Invalid(f"invalid function resource '{text}': expected FID, FID/* or FID/VID")
    return KeyResource(type="function", id=f"{parse_uuid(fid)}/{parse_uuid(vid) or '*'}")


def covers(resources: Iterable[KeyResource], function_id: str, version_id: str | None) -> bool:
    """Whether a key's resources allow touching an own-account function (version)."""
    return _covers(resources, "account-functions", function_id, version_id)


def covers_shared(
    resources: Iterable[KeyResource], function_id: str, version_id: str | None
) -> bool:
    """Whether a key's resources allow touching a function another account shared with it:
    `authorized-functions`, or a `function` entry naming it (spec §6.3)."""
    return _covers(resources, "authorized-functions", function_id, version_id)


def _covers(
    resources: Iterable[KeyResource], every: str, function_id: str, version_id: str | None
) -> bool:
    """`every` (a blanket resource type), or a `function` entry naming this one."""
    for res in resources:
        if res.type == every:
            return True
        if res.type == "function":
            fid, _, vid = res.id.partition("/")
            if fid == function_id and (vid in ("*", "") or version_id in (None, vid)):
                return True
    return False


class Reach(Enum):
    """What a key may do with a function version (spec §2.7, §6.3)."""

    OWN = "own"  # its account's, and the key's resources cover it: everything
    SHARED = "shared"  # shared with its account, covered: invoke, list, queue details
    DENIED = "denied"  # its account's or shared, but the key's resources miss it: 403
    HIDDEN = "hidden"  # another account's, not shared: 404 (NVCF hides existence)


def reach(
    principal: Principal,
    owner_nca_id: str,
    parties: Collection[str],
    function_id: str,
    version_id: str | None,
) -> Reach:
    """`parties`: the NCA ids the version is shared with (function- and version-level)."""
    if owner_nca_id == principal.nca_id:
        return Reach.OWN if covers(principal.resources, function_id, version_id) else Reach.DENIED
    if principal.nca_id in parties or WILDCARD in parties:
        if covers_shared(principal.resources, function_id, version_id):
            return Reach.SHARED
        return Reach.DENIED
    return Reach.HIDDEN


def require_scope(principal: Principal, *any_of: str) -> None:
    if not any(s in principal.scopes for s in any_of):
        names = " or ".join(f"'{s}'" for s in any_of)
        raise Forbidden(f"The API key is missing the required scope {names}")


def require_every_scope(principal: Principal) -> None:
    """Managing keys (the console's keys page) takes a key with every scope: a key can then
    mint no key that could do more than it can itself."""
    missing = [s for s in SCOPES if s not in principal.scopes]
    if missing:
        raise Forbidden(
            "Managing API keys takes a key with every scope; this one lacks " + ", ".join(missing)
        )


def require_function(principal: Principal, function_id: str, version_id: str | None = None) -> None:
    if not covers(principal.resources, function_id, version_id):
        raise Forbidden(
            f"Function id '{function_id}': Missing resource entry in ApiKey for the function"
        )


class Keys:
    """Create, list, revoke and verify API keys; a key belongs to one account (the
    configured one unless `create` names another)."""

    def __init__(
        self,
        repo: KeysRepo,
        nca_id: str,
        cache_seconds: float = 2.0,
        tokens: TokenSigner | None = None,
        org_name: str = "",
    ) -> None:
        self._repo = repo
        self._nca_id = nca_id
        self._org_name = org_name  # of the configured account, for keys read without one
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lookups: SingleFlight[str, tuple[float, Principal]] = SingleFlight()
        self._generation = 0  # a revoke bumps it: a lookup begun before is not cached
        self._tokens = tokens

    async def create(
        self,
        scopes: Iterable[str],
        functions: Iterable[str] = (),
        description: str = "",
        token: str | None = None,
        *,
        nca_id: str | None = None,
        teams: Iterable[str] = (),
    ) -> tuple[str, ApiKey]:
        """Mint a key (or register a given one) for account `nca_id` (default: the configured
        one), limited to `teams` if any; returns the plaintext once, and the record."""
        wanted = [normalise_scope(s.strip()) for s in scopes if s.strip()]
        unknown = sorted(set(wanted) - set(SCOPES))
        if unknown:
            raise Invalid(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
        if not wanted:
            raise Invalid("a key needs at least one scope")
        resources = [parse_function_resource(f) for f in functions]
        if not resources:
            resources = [
                KeyResource(type="account-functions", id="*"),
                KeyResource(type="authorized-functions", id="*"),
            ]
        team_names = tuple(dict.fromkeys(t.strip() for t in teams if t.strip()))
        if any("/" in t for t in team_names):
            raise Invalid("a team name cannot contain '/'")
        if token is None:
            token = generate_key()
        elif not KEY_PATTERN.match(token):
            raise Invalid("a key must be 'nvapi-' followed by 64 characters of [A-Za-z0-9_-]")
        assert all(r.type in RESOURCE_TYPES for r in resources)
        key = ApiKey(
            key_id=new_id(),
            key_prefix=token[:14],
            nca_id=nca_id or self._nca_id,
            description=description,
            scopes=tuple(dict.fromkeys(wanted)),
            resources=tuple(resources),
            created_at=now_iso(),
            teams=team_names,
        )
        await self._repo.insert(key, hash_key(token))
        return token, key

    async def list(self, nca_id: str | None = None) -> list[ApiKey]:
        """Every key (the admin verbs), or one account's (the HTTP API)."""
        return await self._repo.all(nca_id)

    async def revoke(self, key_id_or_prefix: str, nca_id: str | None = None) -> str:
        """Revoke one key by id or printed prefix; with `nca_id`, only one of that account
        (another account's key is not found)."""
        ids = await self._repo.revoke(key_id_or_prefix, now_iso(), nca_id)
        if not ids:
            raise NotFound(f"no active key with id or prefix '{key_id_or_prefix}'")
        if len(ids) > 1:
            raise Invalid(f"'{key_id_or_prefix}' matches {len(ids)} keys; give the key id")
        self._cache.clear()
        self._generation += 1
        self._lookups.forget()
        return ids[0]

    async def ensure_bootstrap(self, bootstrap_key: str = "") -> str | None:
        """On first start with no keys, create an all-scopes admin key; return its plaintext.

        A configured bootstrap key is registered if it is not known yet (returns None).
        """
        if bootstrap_key:
            if await self._repo.by_hash(hash_key(bootstrap_key)) is None:
                await self.create(SCOPES, description="bootstrap (configured)", token=bootstrap_key)
            return None
        if await self._repo.count_active():
            return None
        token, _ = await self.create(SCOPES, description="bootstrap admin key")
        return token

    async def authenticate(self, authorization: str | None) -> Principal:
        """`Authorization: Bearer <key>` -> Principal, or Unauthorized."""
        if not authorization:
            raise Unauthorized("Missing Authorization header with a Bearer API key")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization header must be 'Bearer <API key>'")
        return await self.verify(token)

    async def verify(self, token: str) -> Principal:
        """An `nvapi-` key or a token minted for one -> Principal, or Unauthorized."""
        cached = self._cache.get(token)
        if cached:
            left = cached[0] - time.monotonic()
            if left > 0:
                if left < self._cache_seconds / 2:  # read again ahead (never used past expiry)
                    self._lookups.start(token, lambda: self._look_up(token))
                return cached[1]
        # one lookup per bearer at a time: a burst of its requests shares it
        return (await self._lookups.run(token, lambda: self._look_up(token)))[1]

    async def _look_up(self, token: str) -> tuple[float, Principal]:
        now = time.monotonic()
        generation = self._generation
        ttl = self._cache_seconds
        if KEY_PATTERN.match(token):
            key = await self._repo.by_hash(hash_key(token))
            if key is None or key.revoked_at is not None or _expired(key):
                raise Unauthorized("Invalid or revoked API key")
        elif self._tokens is not None and looks_like_jwt(token):
            claims = self._tokens.claims(token)
            key = await self._repo.by_id(claims.sub)
            if key is None or key.revoked_at is not None or _expired(key):
                raise Unauthorized("The API key this bearer token was issued for is revoked")
            ttl = min(ttl, claims.exp - self._tokens.clock())  # never cached past its exp
        else:
            raise Unauthorized("Invalid or revoked API key")
        principal = Principal(
            key_id=key.key_id,
            nca_id=key.nca_id,
            scopes=frozenset(key.scopes),
            resources=key.resources,
            org_name=key.org_name or (self._org_name if key.nca_id == self._nca_id else ""),
            teams=key.teams,
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        entry = (now + ttl, principal)
        if generation == self._generation:
            self._cache[token] = entry
        return entry

    async def token(self, credential: str, ttl_s: int) -> tuple[str, int]:
        """A bearer token for an `nvapi-` key (not for a token: tokens are not renewable)."""
        if self._tokens is None:
            raise Unauthorized("this server issues no bearer tokens")
        if not KEY_PATTERN.match(credential):
            raise Unauthorized("A token is issued for an API key ('nvapi-...') only")
        principal = await self.verify(credential)
        return self._tokens.mint(principal.key_id, ttl_s)

    async def token_for_key(self, key_id_or_prefix: str, ttl_s: int) -> tuple[str, int]:
        """A bearer token for an active key, by id or printed prefix (the `keys token` CLI)."""
        if self._tokens is None:
            raise Unauthorized("this server issues no bearer tokens")
        found = [
            k
            for k in await self._repo.all()
            if key_id_or_prefix in (k.key_id, k.key_prefix)
            and k.revoked_at is None
            and not _expired(k)
        ]
        if not found:
            raise NotFound(f"no active key with id or prefix '{key_id_or_prefix}'")
        if len(found) > 1:
            raise Invalid(f"'{key_id_or_prefix}' matches {len(found)} keys; give the key id")
        return self._tokens.mint(found[0].key_id, ttl_s)


def _expired(key: ApiKey) -> bool:
    return key.expires_at is not None and key.expires_at <= now_iso()
