"""Log hygiene of a real `nvcf-lite serve` at `log_level=debug` with the access log on, in text
and in JSON: after traffic that carries every kind of credential (the admin key, a minted bearer
token, Basic credentials, signed upload/download/large-result URLs, secret values registered and
updated and read by the function, registry credentials added, replaced and sent with a pull, a
telemetry token sent to a refusing endpoint), none of them appears anywhere in the server's
stdout+stderr, while the lines about functions and instances carry their ids."""

from __future__ import annotations

import base64
import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import ADMIN_KEY, wait_for
from invocation_support import deploy_body, docker_env, function_body
from server_support import ServerProcess

from nvcf_lite.domain.asset_rules import DESCRIPTION_HEADER

pytestmark = pytest.mark.docker

SECRET = "first-secret-value-Zq81"
NEW_SECRET = "second-secret-value-Kp27"
TELEMETRY_SECRET = "telemetry-token-Wm40"
TELEMETRY_NEW = "telemetry-token-Hx93"
BASIC = base64.b64encode(f"$oauthtoken:{ADMIN_KEY}".encode()).decode()
REGISTRY_PASSWORDS = ("registry-password-Fq40", "registry-password-rotated-Zn83")


class Client:
    """Plain HTTP to the server, no redirects followed (signed URLs are seen, then used)."""

    def __init__(self, server: ServerProcess) -> None:
        self.port = server.port
        self.log_path = server.log_path

    def call(
        self, method: str, target: str, body: Any = None, auth: str | None = None, **hdrs: str
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {k.replace("_", "-"): v for k, v in hdrs.items()}
        if auth is not None:
            headers["Authorization"] = auth
        data = body
        if body is not None and not isinstance(body, bytes):
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, auth: str | None = None) -> Any:
        status, _, data = self.call(method, path, body, auth or f"Bearer {ADMIN_KEY}")
        assert status < 300, (method, path, status, data[:300])
        return json.loads(data) if data else None


def signature(url: str) -> str:
    value = parse_qs(urlsplit(url).query)["signature"][0]
    assert len(value) >= 16
    return value


def traffic(api: Client) -> tuple[str, str, list[str]]:
    """Every credential-carrying call; returns (function id, version id, what must not leak)."""
    leaks = [ADMIN_KEY, "A" * 60, SECRET, NEW_SECRET, BASIC, TELEMETRY_SECRET, TELEMETRY_NEW]
    # a telemetry whose endpoint refuses connections: its shipping fails, and says so, in the log
    telemetry = {
        "endpoint": "http://127.0.0.1:9",
        "protocol": "HTTP",
        "provider": "OTEL_COLLECTOR",
        "types": ["LOGS", "METRICS"],
        "secret": {"name": "hygiene-otel", "value": TELEMETRY_SECRET},
    }
    tid = api.json("POST", "/v2/nvcf/telemetries", telemetry)["telemetry"]["telemetryId"]
    fn = api.json(
        "POST",
        "/v2/nvcf/functions",
        {
            **function_body("hygiene"),
            "secrets": [{"name": "API_TOKEN", "value": SECRET}],
            "telemetries": {"logsTelemetryId": tid, "metricsTelemetryId": tid},
        },
    )["function"]
    fid, vid = fn["id"], fn["versionId"]
    body = {"secret": {"name": "hygiene-otel", "value": TELEMETRY_NEW}}
    status, _, data = api.call(
        "PUT", f"/v2/nvcf/secrets/telemetries/{tid}", body, f"Bearer {ADMIN_KEY}"
    )
    assert status == 204, data
    api.json("POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", deploy_body())

    def active() -> bool:
        status = api.json("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]["status"]
        assert status not in ("ERROR", "INACTIVE")
        return bool(status == "ACTIVE")

    wait_for(active, what="ACTIVE")
    pexec = f"/v2/nvcf/pexec/functions/{fid}"
    # sync, reading the secret in the container
    doc = api.json("POST", pexec, {"readSecrets": True})
    assert doc["secrets"]["API_TOKEN"] == SECRET
    # a bearer token minted from Basic credentials, used to invoke
    status, _, data = api.call("GET", "/token?service=ngc", auth=f"Basic {BASIC}")
    assert status == 200, data
    token = json.loads(data)["token"]
    leaks.append(token)
    assert api.json("POST", pexec, {"x": 1}, auth=f"Bearer {token}")["body"] == {"x": 1}
    # async: 202 and a poll
    status, headers, _ = api.call(
        "POST", pexec, {"delay": 2}, f"Bearer {ADMIN_KEY}", NVCF_POLL_SECONDS="1"
    )
    assert status == 202
    rid = headers["nvcf-reqid"]
    status, _, data = api.call(
        "GET", f"/v2/nvcf/pexec/status/{rid}", None, f"Bearer {token}", NVCF_POLL_SECONDS="10"
    )
    assert status == 200, data
    # a large result: a 302 to a signed URL, then the download
    status, headers, _ = api.call("POST", pexec, {"responseBytes": 40000}, f"Bearer {ADMIN_KEY}")
    assert status == 302
    leaks.append(signature(headers["location"]))
    status, _, data = api.call("GET", headers["location"])
    assert status == 200 and len(data) > 0
    # an asset: signed upload URL, upload, signed download URL, download
    asset = api.json("POST", "/v2/nvcf/assets", {"contentType": "text/plain", "description": "d"})
    leaks.append(signature(asset["uploadUrl"]))
    status, _, data = api.call(
        "PUT",
        asset["uploadUrl"],
        b"asset bytes",
        None,
        **{"Content-Type": "text/plain"},
        **{DESCRIPTION_HEADER: "d"},
    )
    assert status == 200, data
    redirect = api.json(
        "GET", f"/v2/nvcf/assets/{asset['assetId']}/content-redirect", auth=f"Bearer {token}"
    )
    download = redirect["presignedUrl"]
    leaks.append(signature(download))
    assert api.call("GET", download)[2] == b"asset bytes"
    # a signed URL with a wrong signature, and a key that does not exist
    assert api.call("GET", download.replace("signature=", "signature=x"))[0] == 403
    assert api.call("GET", "/v2/nvcf/functions", auth="Bearer nvapi-" + "W" * 64)[0] == 401
    leaks.append("W" * 64)
    # new secret values reach the running container
    body = {"secrets": [{"name": "API_TOKEN", "value": NEW_SECRET}]}
    status, _, data = api.call(
        "PUT", f"/v2/nvcf/secrets/functions/{fid}/versions/{vid}", body, f"Bearer {ADMIN_KEY}"
    )
    assert status == 204, data
    wait_for(
        lambda: (
            api.json("POST", pexec, {"readSecrets": True})["secrets"]["API_TOKEN"] == NEW_SECRET
        ),
        what="the new secret in the container",
    )
    # the function's own logs over HTTP
    status, _, data = api.call(
        "GET", f"/v2/nvcf/functions/{fid}/logs?tail=5", None, f"Bearer {token}"
    )
    assert status == 200 and b"listening" in data
    wait_for(
        lambda: "export failed" in api.log_path.read_text(errors="replace"),
        what="the telemetry export failure in the log",
    )
    leaks += registry_traffic(api)
    return fid, vid, leaks


def registry_traffic(api: Client) -> list[str]:
    """A registry credential added and replaced, then sent with a pull (that cannot reach its
    registry); returns the passwords and their base64 forms."""
    host = "127.0.0.1:1"  # nothing listens: the pull fails at once
    values = [base64.b64encode(f"puller:{p}".encode()).decode() for p in REGISTRY_PASSWORDS]
    body = {
        "registryHostname": host,
        "secret": {"name": "lab", "value": values[0]},
        "artifactTypes": ["CONTAINER"],
    }
    cid = api.json("POST", "/v2/nvcf/registry-credentials", body)["registryCredential"][
        "registryCredentialId"
    ]
    patch = {"secret": {"name": "lab", "value": values[1]}}
    api.json("PATCH", f"/v2/nvcf/registry-credentials/{cid}", patch)
    fn = api.json("POST", "/v2/nvcf/functions", function_body("private", f"{host}/hygiene:1"))[
        "function"
    ]
    path = f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    api.json("POST", path, deploy_body())

    def pull_failed() -> bool:
        deployment = api.json("GET", path)["deployment"]
        return bool(deployment.get("healthInfo"))

    wait_for(pull_failed, what="the private image's pull to fail")
    return [*REGISTRY_PASSWORDS, *values]


@pytest.fixture
def server(tmp_path: Path, ns: str, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    env = docker_env(
        ns,
        NVCF_LITE_SERVER__LOG_LEVEL="debug",
        NVCF_LITE_SERVER__ACCESS_LOG="true",
        NVCF_LITE_SERVER__LOG_FORMAT=request.param,
        NVCF_LITE_INVOCATION__MAX_RESPONSE_BYTES="16384",
    )
    process = ServerProcess(tmp_path / "server", env).start()
    yield process
    process.kill()


@pytest.mark.parametrize("server", ["text", "json"], indirect=True)
def test_no_credential_or_secret_reaches_the_log(server: ServerProcess) -> None:
    fid, vid, leaks = traffic(Client(server))
    server.stop()  # SIGTERM: the shutdown lines are in the log too
    text = server.log_path.read_text(errors="replace")
    for leak in leaks:
        assert leak not in text, f"{leak[:12]}... is in the log"
    assert "nvapi-" not in text.replace("nvapi-[REDACTED]", "")
    assert "pulling image 127.0.0.1:1/hygiene:1" in text  # the pull that sent a credential
    json_mode = server.env["NVCF_LITE_SERVER__LOG_FORMAT"] == "json"
    lines = [line for line in text.splitlines() if line.strip()]
    if json_mode:
        docs = [json.loads(line) for line in lines]  # every line, the start-up lines too
    else:
        docs = [_text_fields(line) for line in lines]
    about = [d for d in docs if d.get("function_id") == fid]
    assert any(d.get("instance_id") and d.get("version_id") == vid for d in about), text[-3000:]
    assert any(d.get("level") == "DEBUG" for d in docs)  # debug really was on
    access = [d for d in docs if d.get("logger") == "granian.access"]
    assert access and not any("?" in str(d.get("path", d.get("msg", ""))) for d in access)


_TEXT = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>\S+): (?P<msg>.*)$")


def _text_fields(line: str) -> dict[str, str]:
    match = _TEXT.match(line)
    if match is None:
        return {}
    doc = dict(match.groupdict())
    doc.update(re.findall(r"\b(\w+_id)=(\S+)", line))
    return doc
