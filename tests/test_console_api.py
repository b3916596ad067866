"""The web console's server side: its static files under a strict CSP, the `[console]` switch,
keys over HTTP (create, list, revoke: only with a key holding every scope), the traffic
window (requests/s, p50/p99, a function's last requests) and the GPU units in the status.

The pages themselves are driven in a real browser in test_console_browser_docker.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_KEY, bearer, call, make_config
from function_support import create, problem
from litestar.testing import TestClient

from nvcf_lite.api.console import CONSOLE_DIR
from nvcf_lite.domain.traffic import Traffic, quantile
from nvcf_lite.models import SCOPES

UPLOT = CONSOLE_DIR / "vendor" / "uplot"
OWN_SCRIPTS = sorted(CONSOLE_DIR.glob("*.js"))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data.strip()


# -- the static files and their headers -----------------------------------------------------


def test_console_page_has_a_strict_csp_and_no_inline_code(client: TestClient[Any]) -> None:
    r = client.get("/console")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    page = _Tags()
    page.feed(r.text)
    assert page.script_text == "", "no inline script"
    scripts = [a for t, a in page.tags if t == "script"]
    assert scripts and all(a.get("src", "").startswith("/console/") for a in scripts)
    assert not [t for t, _ in page.tags if t == "style"], "no inline style element"
    assert not [t for t, a in page.tags if "style" in a or any(k.startswith("on") for k in a)]
    for tag, attrs in page.tags:  # every stylesheet and script is served from the package
        ref = attrs.get("src") or (attrs.get("href") if tag == "link" else None)
        if ref:
            asset = client.get(ref)
            assert asset.status_code == 200, ref
            assert asset.headers["content-security-policy"] == csp


def test_every_console_file_is_served_with_its_type(client: TestClient[Any]) -> None:
    for path in [*OWN_SCRIPTS, UPLOT / "uPlot.esm.js"]:
        r = client.get("/console/" + path.relative_to(CONSOLE_DIR).as_posix())
        assert r.status_code == 200, path
        assert "javascript" in r.headers["content-type"], (path, r.headers["content-type"])
        assert r.content == path.read_bytes()
    css = client.get("/console/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/console/nothing-here.js").status_code == 404


def test_own_scripts_insert_text_never_markup() -> None:
    """Every user-controlled string goes in with textContent / text nodes (dom.js `h`)."""
    assert len(OWN_SCRIPTS) >= 8
    for path in OWN_SCRIPTS:
        text = path.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert banned not in text, f"{path.name} uses {banned}"
        assert not re.search(r"new Function\s*\(", text), path.name
        assert ".style." not in text and 'setAttribute("style"' not in text, path.name


def test_vendored_uplot_matches_its_readme() -> None:
    readme = (UPLOT / "README.md").read_text()
    listed = dict(re.findall(r"\| `([^`]+)` \| `([0-9a-f]{64})` \|", readme))
    assert set(listed) == {"LICENSE", "uPlot.esm.js", "uPlot.min.css"}
    for name, digest in listed.items():
        assert hashlib.sha256((UPLOT / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (UPLOT / "LICENSE").read_text()
    assert "1.6.32" in readme


def test_the_console_switch_turns_it_off(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    off = app_factory(make_config(tmp_path / "off", NVCF_LITE_CONSOLE__ENABLED="false"))
    problem(off.get("/console"), 404)
    problem(off.get("/console/app.js"), 404)
    assert off.get("/health").status_code in (200, 503)


def test_package_data_ships_the_console() -> None:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"api/static/console/*"' in text and '"api/static/console/vendor/uplot/*"' in text


# -- keys over HTTP -------------------------------------------------------------------------

KEYS = "/v2/nvcf-lite/keys"


def test_an_admin_key_creates_lists_and_revokes_keys(client: TestClient[Any]) -> None:
    r = client.post(
        KEYS, json={"scopes": ["invoke_function"], "description": "ci"}, headers=bearer()
    )
    assert r.status_code == 200, r.text
    made = r.json()
    token, key = made["key"], made["apiKey"]
    assert re.fullmatch(r"nvapi-[A-Za-z0-9_-]{64}", token)
    assert key["scopes"] == ["invoke_function"] and key["description"] == "ci"
    assert key["resources"] == [
        {"type": "account-functions", "id": "*"},
        {"type": "authorized-functions", "id": "*"},
    ]
    listed = client.get(KEYS, headers=bearer()).json()["keys"]
    assert key["keyId"] in {k["keyId"] for k in listed}
    assert all("key" not in k and token not in json.dumps(k) for k in listed)  # shown once
    assert client.get("/v2/nvcf/assets", headers=bearer(token)).status_code == 200
    r = client.delete(f"{KEYS}/{key['keyId']}", headers=bearer())
    assert r.status_code == 200 and r.json() == {"keyId": key["keyId"]}
    problem(client.get("/v2/nvcf/assets", headers=bearer(token)), 401)  # at once: cache cleared
    (revoked,) = [
        k for k in client.get(KEYS, headers=bearer()).json()["keys"] if k["keyId"] == key["keyId"]
    ]
    assert revoked["revokedAt"]
    problem(client.delete(f"{KEYS}/{key['keyId']}", headers=bearer()), 404)


def test_a_key_limited_to_functions(client: TestClient[Any]) -> None:
    fn = create(client)
    r = client.post(
        KEYS, json={"scopes": ["list_functions"], "functions": [fn["id"]]}, headers=bearer()
    )
    assert r.status_code == 200, r.text
    assert r.json()["apiKey"]["resources"] == [{"type": "function", "id": f"{fn['id']}/*"}]
    problem(
        client.post(
            KEYS, json={"scopes": ["list_functions"], "functions": ["nope"]}, headers=bearer()
        ),
        400,
    )


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": []},
        {"scopes": ["fly_to_the_moon"]},
        {"description": "no scopes"},
        {"scopes": "x"},
    ],
)
def test_a_bad_key_request_is_a_clear_problem(
    client: TestClient[Any], body: dict[str, Any]
) -> None:
    r = client.post(KEYS, json=body, headers=bearer())
    assert r.status_code in (400, 422), r.text
    problem(r, r.status_code)


def test_keys_take_a_key_with_every_scope(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    almost = make_key(*[s for s in SCOPES if s != "authorize_clients"])
    for method, path, body in [
        ("GET", KEYS, None),
        ("POST", KEYS, {"scopes": ["invoke_function"]}),
        ("DELETE", f"{KEYS}/whatever", None),
    ]:
        doc = problem(client.request(method, path, json=body, headers=bearer(almost)), 403)
        assert "every scope" in doc["detail"] and "authorize_clients" in doc["detail"]
        problem(client.request(method, path, json=body), 401)
        problem(client.request(method, path, json=body, headers=bearer("nvapi-" + "Z" * 64)), 401)
    assert client.get(KEYS, headers=bearer(make_key(*SCOPES))).status_code == 200


def test_revoking_the_callers_own_key_signs_it_out(client: TestClient[Any]) -> None:
    made = client.post(KEYS, json={"scopes": list(SCOPES)}, headers=bearer()).json()
    own = made["key"]
    r = client.delete(f"{KEYS}/{made['apiKey']['keyId']}", headers=bearer(own))
    assert r.status_code == 200
    problem(client.get(KEYS, headers=bearer(own)), 401)
    assert client.get(KEYS, headers=bearer(ADMIN_KEY)).status_code == 200


# -- the traffic window ---------------------------------------------------------------------


def test_quantile_is_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert quantile(values, 0.5) == 50 and quantile(values, 0.99) == 99
    assert quantile([7.0], 0.99) == 7.0


async def test_traffic_samples_rate_and_latency_per_function() -> None:
    clock = [1000.0]
    traffic = Traffic(interval_s=5, keep_samples=3, keep_requests=2, clock=lambda: clock[0])
    for i in range(10):
        traffic.ended("f1", "v1", f"r{i}", 200, 0.001 * (i + 1))
    traffic.ended("f2", "v2", "x", 500, 2.0)
    clock[0] += 5
    assert await traffic.sample() == 0
    clock[0] += 5
    await traffic.sample()  # an interval with no request: zero, not absent
    f1, f2 = traffic.series({"f1", "f2"})
    assert f1.function_id == "f1" and [p.requests for p in f1.points] == [10, 0]
    assert f1.points[0].requests_per_s == 2.0
    assert f1.points[0].p50_ms == 5.0 and f1.points[0].p99_ms == 10.0
    assert f1.points[1].p50_ms is None and f1.points[1].requests_per_s == 0
    assert f2.points[0].p99_ms == 2000.0
    assert [r.request_id for r in traffic.last_requests("f1")] == ["r9", "r8"]  # newest first
    assert traffic.last_requests("f2")[0].status == 500
    for _ in range(3):
        await traffic.sample()
    assert len(traffic.series({"f1"})[0].points) == 3  # the ring keeps its size
    assert traffic.series({"unknown"})[0].points == []


def test_traffic_and_last_requests_over_http(
    client: TestClient[Any], make_key: Callable[..., str]
) -> None:
    mine, other = create(client), create(client)
    metrics = client.app.state.platform.metrics
    metrics.request_ended(mine["id"], mine["versionId"], "req-1", 200, 0.25)
    metrics.request_ended(other["id"], other["versionId"], "req-2", 404, 0.5)
    call(client, metrics.traffic.sample)
    r = client.get("/v2/nvcf-lite/traffic", headers=bearer())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["intervalS"] == 5.0
    series = {f["functionId"]: f["points"] for f in doc["functions"]}
    assert series[mine["id"]][-1]["requests"] == 1 and series[mine["id"]][-1]["p99Ms"] == 250.0
    only = make_key("list_functions_details", functions=(mine["id"],))
    seen = client.get("/v2/nvcf-lite/traffic", headers=bearer(only)).json()["functions"]
    assert [f["functionId"] for f in seen] == [mine["id"]]  # a key sees its functions only
    last = client.get(f"/v2/nvcf-lite/functions/{mine['id']}/requests", headers=bearer()).json()
    assert last["functionId"] == mine["id"]
    (req,) = last["requests"]
    assert req["requestId"] == "req-1" and req["status"] == 200 and req["latencyMs"] == 250.0
    problem(
        client.get(f"/v2/nvcf-lite/functions/{other['id']}/requests", headers=bearer(only)), 403
    )
    unknown = "00000000-0000-4000-8000-000000000000"
    problem(client.get(f"/v2/nvcf-lite/functions/{unknown}/requests", headers=bearer()), 404)
    problem(client.get("/v2/nvcf-lite/functions/not-a-uuid/requests", headers=bearer()), 400)
    text = client.get("/metrics").text  # the same event counted in /metrics
    assert f'nvcf_lite_invocations_total{{function_id="{mine["id"]}"' in text


def test_status_lists_every_gpu_unit(
    app_factory: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    simulated = json.dumps([{"name": "L40", "count": 2, "memory_mb": 46068}])
    api = app_factory(
        make_config(
            tmp_path / "gpus", NVCF_LITE_GPUS__SIMULATED=simulated, NVCF_LITE_GPUS__USE_NVML="false"
        )
    )
    units = api.get("/v2/nvcf-lite/status", headers=bearer()).json()["units"]
    assert [(u["gpu"], u["memoryMb"], u["simulated"], u["held"]) for u in units] == [
        ("L40", 46068, True, False),
        ("L40", 46068, True, False),
    ]
    assert len({u["unitId"] for u in units}) == 2 and units[0]["index"] < units[1]["index"]
    assert all(u["unitId"].startswith("SIM-") and "instanceId" not in u for u in units)
