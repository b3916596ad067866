"""Bearer tokens (JWTs) minted for API keys (spec §6.1, §7.1 recipe 2; domain/tokens.py)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_KEY, bearer, call
from litestar.testing import TestClient

from nvcf_lite.domain.tokens import MAX_TTL_S, TokenSigner, looks_like_jwt
from nvcf_lite.errors import Invalid, Unauthorized

SECRET = b"s" * 32


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    decode = lambda p: json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))  # noqa: E731
    return decode(head), decode(body)


# --- the signer --------------------------------------------------------------------------------


def test_a_minted_token_names_its_key_and_expires() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, clock)
    token, expires_in = signer.mint("key-1", 900)
    assert expires_in == 900 and looks_like_jwt(token)
    header, claims = parts(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims["iss"] == "nvcf-lite" and claims["sub"] == "key-1"
    assert claims["exp"] - claims["iat"] == 900
    assert signer.claims(token).sub == "key-1"
    clock.now += 899
    assert signer.claims(token).sub == "key-1"
    clock.now += 1
    with pytest.raises(Unauthorized, match="expired"):
        signer.claims(token)


def test_tokens_of_another_server_or_tampered_or_unsigned_are_refused() -> None:
    signer = TokenSigner(SECRET, Clock())
    token, _ = signer.mint("key-1", 60)
    head, body, mac = token.split(".")
    _, claims = parts(token)
    forged = b64({**claims, "sub": "admin"})
    none_alg = b64({"alg": "none", "typ": "JWT"})
    for bad in (
        TokenSigner(b"t" * 32, Clock()).mint("key-1", 60)[0],  # another server's key
        f"{head}.{forged}.{mac}",  # claims changed after signing
        f"{none_alg}.{body}.",  # alg none, no signature
        f"{head}.{body}.{mac[:-2]}",
        "a.b.c",
        "not-a-token",
    ):
        with pytest.raises(Unauthorized, match="not a token this server issued"):
            signer.claims(bad)


def test_token_lifetime_bounds() -> None:
    signer = TokenSigner(SECRET, Clock())
    for ttl in (0, -5, MAX_TTL_S + 1):
        with pytest.raises(Invalid, match="lifetime"):
            signer.mint("key-1", ttl)
    assert signer.mint("key-1", MAX_TTL_S)[1] == MAX_TTL_S


# --- GET /token and tokens as bearers -----------------------------------------------------------


def basic(key: str, user: str = "$oauthtoken") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def get_token(client: TestClient[Any], headers: dict[str, str]) -> str:
    r = client.get("/token", params={"service": "ngc", "scope": "group/ngc:myorg"}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == 900 and looks_like_jwt(body["token"])
    return str(body["token"])


def test_basic_oauthtoken_exchange_gives_a_bearer_that_works(client: TestClient[Any]) -> None:
    token = get_token(client, basic(ADMIN_KEY))
    r = client.get("/v2/nvcf/functions", headers=bearer(token))
    assert r.status_code == 200, r.text
    r = client.get("/v2/orgs/local/nvcf/functions", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert get_token(client, bearer(ADMIN_KEY)) != token  # a Bearer key works too; new jti


def test_a_token_acts_with_its_keys_scopes_and_resources(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    invoke_only = make_key("invoke_function")
    token = get_token(client, basic(invoke_only))
    r = client.get("/v2/nvcf/functions", headers=bearer(token))
    assert r.status_code == 403 and "list_functions" in r.json()["detail"]
    # the fast path (POST pexec) accepts it: an unknown function is a 404, not a 401
    r = client.post(
        "/v2/nvcf/pexec/functions/3e4666bf-d5e5-4aa7-b8ce-cefe41c7568a",
        json={},
        headers=bearer(token),
    )
    assert r.status_code == 404, r.text


def test_revoking_the_key_ends_its_tokens(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    key = make_key("list_functions")
    token = get_token(client, basic(key))
    assert client.get("/v2/nvcf/functions", headers=bearer(token)).status_code == 200
    call(client, client.app.state.platform.keys.revoke, key[:14])
    r = client.get("/v2/nvcf/functions", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.get("/token", headers=basic(key)).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Digest abc"},
        basic("nvapi-" + "B" * 64),  # well formed, unknown
    ],
)
def test_token_exchange_without_a_valid_key_is_401(
    client: TestClient[Any], headers: dict[str, str]
) -> None:
    r = client.get("/token", headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_a_token_cannot_be_exchanged_for_another(client: TestClient[Any]) -> None:
    token = get_token(client, basic(ADMIN_KEY))
    r = client.get("/token", headers=basic(token))
    assert r.status_code == 401 and "API key" in r.json()["detail"]


def test_a_foreign_jwt_is_401(client: TestClient[Any]) -> None:
    foreign, _ = TokenSigner(b"x" * 32).mint("whatever", 60)
    r = client.get("/v2/nvcf/functions", headers=bearer(foreign))
    assert r.status_code == 401 and "not a token this server issued" in r.json()["detail"]


# --- the CLI ------------------------------------------------------------------------------------


def test_keys_token_cli_prints_a_token_the_server_accepts(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    client = app_factory()  # makes the data dir, the bootstrap key and the signing key
    nvcf_lite = str(Path(sys.executable).with_name("nvcf-lite"))
    env = {"PATH": "/usr/bin:/bin", "NVCF_LITE_STORE__DATA_DIR": str(tmp_path / "data")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [nvcf_lite, "keys", *args], env=env, cwd=tmp_path, capture_output=True, text=True
        )

    done = run("token", ADMIN_KEY[:14], "--ttl", "120")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert parts(token)[1]["exp"] - parts(token)[1]["iat"] == 120
    assert "expires in 120 s" in done.stderr
    assert client.get("/v2/nvcf/functions", headers=bearer(token)).status_code == 200
    bad = run("token", "nvapi-nothere")
    assert bad.returncode == 1 and "no active key" in bad.stderr
    bad = run("token", ADMIN_KEY[:14], "--ttl", "0")
    assert bad.returncode == 1 and "lifetime" in bad.stderr
