"""The web console in a real browser: Debian's headless Chromium driven by selenium (through
Debian's chromedriver, so nothing is downloaded) against a live `nvcf-lite serve` running real
echo containers on two simulated L40 units.

One server and one browser serve the whole module, and the tests run in order, as an operator
would click: sign in, deploy the echo function from its page and see it go ACTIVE, invoke it
(200, a 202 polled to its end, an SSE stream), watch a queue grow behind a saturated slow
function, assets, a key without scopes seeing the controls hidden, hostile strings rendered as
text, undeploy, revoke the signed-in key and be signed out, and the server going away and back.
Screenshots of each page (1280x800, and the overview at phone width 390x844) are written to
$NVCF_LITE_ARTIFACTS/console (default tests/artifacts/console).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_KEY
from docker_support import REQUIRE_ENV, docker_client_or_skip, ensure_test_images, remove_namespace
from invocation_support import docker_env, function_body, live_echo
from server_support import ServerProcess

from nvcf_lite.models import SCOPES

pytestmark = pytest.mark.docker

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
SIMULATED = json.dumps([{"name": "L40", "count": 2, "memory_mb": 46068}])
SPEC = {"gpu": "L40", "instanceType": "L40.GPU.1x"}
XSS = "<script>alert(1)</script>"
HOSTILE = '<img src=x onerror="alert(2)">'
WAIT_S = 60.0
INLINE_SCRIPT = """
const script = document.createElement('script');
script.textContent = 'window.inlineRan = true';
document.body.append(script);
return window.inlineRan;
"""
UNLABELLED = """
return [...document.querySelectorAll('input, select, textarea, button')]
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
    && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map((e) => e.outerHTML.slice(0, 80));
"""
WIDER_THAN_VIEWPORT = """
return [...document.querySelectorAll('body *')]
  .filter((e) => e.getBoundingClientRect().right > 391)
  .slice(0, 8).map((e) => e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().right);
"""


def artifacts() -> Path:
    root = os.environ.get("NVCF_LITE_ARTIFACTS")
    folder = Path(root) / "console" if root else Path(__file__).parent / "artifacts" / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    dock = docker_client_or_skip()
    ensure_test_images()
    ns = f"test-{uuid.uuid4().hex[:10]}"
    env = docker_env(
        ns,
        NVCF_LITE_GPUS__SIMULATED=SIMULATED,
        NVCF_LITE_RESOURCES__CPU_CORES="4",
        NVCF_LITE_RESOURCES__MEMORY_MB="8192",
    )
    workdir = tmp_path_factory.mktemp("console")
    env["NVCF_LITE_SYSTEM_CONFIG"] = str(workdir / "none.toml")
    proc = ServerProcess(workdir / "server", env=env)
    try:
        with proc:
            yield proc
    finally:
        remove_namespace(dock, ns)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        reason = "Debian's chromium and chromium-driver are not installed"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,800"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    viewport(driver, 1280, 800)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What one test leaves for the next (the module runs in order, like a session)."""
    return {}


# -- helpers --------------------------------------------------------------------------------


def viewport(browser: Any, width: int, height: int, mobile: bool = False) -> None:
    """The page's viewport exactly (a window size would include the browser's own frame)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def until(browser: Any, cond: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the pages redraw every 2 s: an element found just before a redraw may be gone when read
    wait = WebDriverWait(
        browser, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(cond, message=what)


def css(browser: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def all_css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def text_of(browser: Any, selector: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(5):  # redrawn between finding and reading it: find it again
        found = all_css(browser, selector)
        try:
            return str(found[0].text) if found else ""
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept being redrawn")


def shot(browser: Any, name: str) -> Path:
    path = artifacts() / name
    browser.save_screenshot(str(path))
    return path


def go(browser: Any, server: ServerProcess, page: str) -> None:
    browser.get(f"{server.url}/console#/{page}")
    until(browser, lambda b: all_css(b, "#page .view h1"), f"page {page}")


def sign_in(browser: Any, server: ServerProcess, key: str) -> None:
    browser.get(f"{server.url}/console")
    field = until(
        browser, lambda b: [e for e in all_css(b, "#signin-key") if e.is_displayed()], "form"
    )
    from selenium.webdriver.common.keys import Keys

    field[0].send_keys(key + Keys.ENTER)  # the keyboard alone signs in
    until(browser, lambda b: css(b, "#nav").is_displayed(), "signed in")


def labelled(browser: Any) -> None:
    """Every control of the page has a label (or an aria-label, or a button's text)."""
    assert browser.execute_script(UNLABELLED) == []


def no_alert(browser: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = browser.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"a script ran: alert({text!r})")


def csp_violations(browser: Any) -> list[str]:
    return [
        str(e["message"])
        for e in browser.get_log("browser")
        if "Content Security Policy" in str(e.get("message", ""))
    ]


def version_row(browser: Any, vid: str) -> Any:
    cells = all_css(browser, f'#functions .queue[data-version="{vid}"]')
    return cells[0].find_element("xpath", "./ancestor::tr") if cells else None


def status_in_overview(browser: Any, vid: str) -> str:
    row = version_row(browser, vid)
    return str(row.find_elements("css selector", ".badge")[0].text) if row is not None else ""


def queue_in_overview(browser: Any, vid: str) -> int:
    found = all_css(browser, f'#functions .queue[data-version="{vid}"]')
    return int(found[0].text) if found else -1


def register(server: ServerProcess, name: str) -> tuple[str, str]:
    f = server.json("POST", "/v2/nvcf/functions", function_body(name))["function"]
    return str(f["id"]), str(f["versionId"])


# -- the session ----------------------------------------------------------------------------


def test_sign_in_shows_the_overview_and_the_gpu_map(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    browser.get(f"{server.url}/console")
    until(browser, lambda b: css(b, "#signin").is_displayed(), "the sign-in form")
    assert not css(browser, "#nav").is_displayed()
    labelled(browser)
    shot(browser, "01-sign-in.png")
    css(browser, "#signin-key").send_keys("nvapi-" + "Z" * 64)
    css(browser, "#signin-form button[type=submit]").click()
    until(browser, lambda b: "Sign-in failed" in text_of(b, "#signin-error"), "a refused key")
    css(browser, "#signin-key").clear()
    sign_in(browser, server, ADMIN_KEY)
    until(browser, lambda b: len(all_css(b, "#gpu-map .gpu")) == 2, "two L40 units")
    assert "L40" in text_of(browser, "#gpu-map") and "free" in text_of(browser, "#gpu-map")
    nav = [a.text for a in all_css(browser, "#nav a") if a.is_displayed()]
    assert nav == ["Overview", "Invoke", "Assets", "Keys"]
    # the keyboard reaches the skip link, then the pages; Enter on a link opens its page
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.execute_script("document.activeElement.blur()")
    focused = []
    for _ in range(3):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused.append(browser.execute_script("return document.activeElement.textContent"))
    assert focused == ["Skip to content", "Overview", "Invoke"]
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(browser, lambda b: text_of(b, "#page h1") == "Invoke", "the Invoke page by keyboard")
    go(browser, server, "overview")
    # the key lives in this tab's session storage only
    stored = browser.execute_script("return [sessionStorage.length, localStorage.length]")
    assert stored == [1, 0]


def test_deploy_echo_from_its_page_and_see_it_go_active(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    from selenium.webdriver.support.ui import Select

    fid, vid = register(server, "console-echo")
    state["echo"] = (fid, vid)
    go(browser, server, f"function/{fid}")
    until(browser, lambda b: all_css(b, f'.version[data-version="{vid}"] form'), "the deploy form")
    form = f'.version[data-version="{vid}"] form'
    labelled(browser)
    Select(css(browser, f"{form} select")).select_by_value("L40")
    for name, value in (("type", "L40.GPU.1x"), ("min", "1"), ("max", "1"), ("conc", "4")):
        box = css(browser, f"#{name}-{vid}")
        box.clear()
        box.send_keys(value)
    css(browser, f"{form} button.deploy").click()
    until(
        browser,
        lambda b: "ACTIVE" in text_of(b, f'.version[data-version="{vid}"] .version-line'),
        "ACTIVE",
    )
    until(browser, lambda b: "ready" in text_of(b, "#instances"), "a READY instance")
    assert "SIM-L40-" in text_of(browser, "#instances")
    go(browser, server, "overview")
    until(browser, lambda b: status_in_overview(b, vid) == "ACTIVE", "ACTIVE in the overview")
    until(
        browser, lambda b: "console-echo" in text_of(b, "#gpu-map"), "the unit's holder on the map"
    )


def test_invoke_answers_200_a_polled_202_and_a_stream(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    from selenium.webdriver.support.ui import Select

    fid, _ = state["echo"]
    go(browser, server, "invoke")
    until(browser, lambda b: all_css(b, f'#invoke-fn option[value="{fid}"]'), "the function listed")
    Select(css(browser, "#invoke-fn")).select_by_value(fid)
    labelled(browser)

    def send(body: dict[str, Any], poll: str = "5", sse: bool = False) -> None:
        box = css(browser, "#invoke-body")
        box.clear()
        box.send_keys(json.dumps(body))
        css(browser, "#invoke-poll").clear()
        css(browser, "#invoke-poll").send_keys(poll)
        if css(browser, "#invoke-sse").is_selected() != sse:
            css(browser, "#invoke-sse").click()
        css(browser, "#invoke-form button[type=submit]").click()

    send({"message": "hello console"})
    until(browser, lambda b: text_of(b, "#invoke-status").startswith("200"), "a 200")
    assert "hello console" in text_of(browser, "#invoke-output")
    shot(browser, "04-invoke.png")

    send({"message": "later", "delay": 2.5}, poll="1")
    until(browser, lambda b: "202 accepted" in text_of(b, "#invoke-status"), "a 202 being polled")
    until(browser, lambda b: "poll(s) of a 202" in text_of(b, "#invoke-status"), "the polled end")
    assert text_of(browser, "#invoke-status").startswith("200")
    assert "later" in text_of(browser, "#invoke-output")

    send({"events": 3, "interval": 0.2}, sse=True)
    until(browser, lambda b: "stream ended" in text_of(b, "#invoke-status"), "the stream's end")
    assert "text/event-stream" in text_of(browser, "#invoke-status")
    events = text_of(browser, "#invoke-output")
    assert [f'data: {{"i": {i}}}' in events for i in range(3)] == [True] * 3, events
    assert events.rstrip().endswith("data: [DONE]"), events


def test_a_queue_grows_behind_a_saturated_slow_function(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    fid, vid = live_echo(server.json, name="console-slow", maxRequestConcurrency=1, **SPEC)
    state["slow"] = (fid, vid)
    go(browser, server, "overview")
    until(browser, lambda b: status_in_overview(b, vid) == "ACTIVE", "the slow function ACTIVE")

    def slow_call() -> None:
        server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"delay": 3}, timeout_s=90)

    threads = [threading.Thread(target=slow_call, daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    until(browser, lambda b: queue_in_overview(b, vid) >= 3, "the queue growing to 3 or more")
    assert len(all_css(browser, "#gpu-map .gpu.held")) == 2
    shot(browser, "02-overview-queue.png")
    for t in threads:
        t.join(timeout=90)
    until(browser, lambda b: queue_in_overview(b, vid) == 0, "the queue drained")
    # the plots have points once a sample interval (5 s) has closed over the requests
    until(browser, lambda b: len(all_css(b, "#plot-rate canvas")) == 1, "the rate plot drawn")
    until(
        browser, lambda b: "console-slow" in text_of(b, "#plot-rate"), "a series per function", 20
    )
    shot(browser, "02-overview.png")
    viewport(browser, 390, 844, mobile=True)
    browser.refresh()
    until(browser, lambda b: all_css(b, "#plot-rate canvas"), "the phone-width plots")
    until(browser, lambda b: status_in_overview(b, vid) == "ACTIVE", "the phone-width overview")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    wide = browser.execute_script(WIDER_THAN_VIEWPORT)
    assert width <= 390, f"the page scrolls sideways at phone width ({width}px): {wide}"
    shot(browser, "07-overview-phone.png")
    viewport(browser, 1280, 800)


def test_the_function_page_shows_instances_cold_start_requests_and_live_logs(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    fid, _ = state["slow"]
    go(browser, server, f"function/{fid}")
    until(browser, lambda b: "ready" in text_of(b, "#instances"), "the instance")
    instances = text_of(browser, "#instances")
    assert "cold" in instances and " ms" in instances  # pull, start, first healthy, first byte
    until(browser, lambda b: len(all_css(b, "#requests tbody tr")) >= 5, "the last requests")
    assert "200" in text_of(browser, "#requests")
    marker = f"console-log-{uuid.uuid4().hex[:8]}"
    server.call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"log": marker})
    until(browser, lambda b: marker in text_of(b, "#logs"), "the log line streamed live")
    report = server.json("GET", "/v2/nvcf-lite/status")
    (fn,) = [f for f in report["functions"] if f["functionId"] == fid]
    (inst,) = fn["versions"][0]["instances"]
    cold = inst["coldStart"]  # what the page's Start / Pull / ... / First byte columns show
    assert cold["kind"] == "cold" and cold["containerStartS"] > 0 and cold["firstByteS"] > 0
    assert set(cold) == {"kind", "imagePullS", "containerStartS", "firstHealthyS", "firstByteS"}
    shot(browser, "03-function.png")


def test_assets_upload_list_and_delete(
    server: ServerProcess, browser: Any, state: dict[str, Any], tmp_path: Path
) -> None:
    go(browser, server, "assets")
    upload = tmp_path / "cat.txt"
    upload.write_text("a red cat\n")
    labelled(browser)
    css(browser, "#asset-file").send_keys(str(upload))
    css(browser, "#asset-description").send_keys(HOSTILE)
    css(browser, "#asset-form button[type=submit]").click()
    until(browser, lambda b: "Uploaded" in text_of(b, "#asset-message"), "the upload")
    asset_id = text_of(browser, "#asset-message").split()[-1]
    until(browser, lambda b: asset_id in text_of(b, "#asset-list"), "the asset listed")
    assert HOSTILE in text_of(browser, "#asset-list")  # a hostile description, as text
    listed = server.json("GET", f"/v2/nvcf/assets/{asset_id}")["asset"]
    assert listed["contentType"] == "text/plain" and listed["description"] == HOSTILE
    no_alert(browser)
    shot(browser, "05-assets.png")
    css(browser, f'button[aria-label="Delete asset {asset_id}"]').click()
    until(browser, lambda b: asset_id not in text_of(b, "#asset-list"), "the asset gone")
    status, _, _ = server.call("GET", f"/v2/nvcf/assets/{asset_id}")
    assert status == 404


def test_a_function_named_like_a_script_renders_as_text(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    status, _, body = server.call("POST", "/v2/nvcf/functions", function_body(XSS))
    assert status == 400, body  # NVCF's name rule refuses it at the API...
    fid, vid = register(server, "renamed-later")
    # ...so the name is written to the database as an older or a buggy writer could have
    db = sqlite3.connect(server.data_dir / "nvcf-lite.db", timeout=10)
    with db:
        db.execute(
            "UPDATE function_versions SET name = ?, spec = json_set(spec, '$.name', ?)"
            " WHERE function_id = ?",
            (XSS, XSS, fid),
        )
    db.close()
    go(browser, server, "overview")
    until(browser, lambda b: version_row(b, vid) is not None, "the renamed function listed")
    no_alert(browser)
    links = [a for a in all_css(browser, "#functions a.fn-name") if a.text == XSS]
    assert links, "the name is shown as text"
    assert all_css(browser, "#functions script") == []
    go(browser, server, f"function/{fid}")
    until(browser, lambda b: text_of(b, "#page h1") == XSS, "the name as the page title")
    no_alert(browser)
    assert csp_violations(browser) == []
    # the policy is enforced: an inline script that got into the page anyway does not run
    ran = browser.execute_script(INLINE_SCRIPT)
    assert ran is None
    (violation,) = csp_violations(browser)
    assert "script-src 'self'" in violation


def test_a_key_without_scopes_sees_the_controls_hidden(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    go(browser, server, "keys")
    until(browser, lambda b: all_css(b, "#key-list tbody tr"), "the key list")
    labelled(browser)
    css(browser, "#key-description").send_keys(f"viewer {XSS}")
    css(browser, "#scope-list_functions_details").click()
    css(browser, "#key-form button[type=submit]").click()
    until(browser, lambda b: css(b, "#key-plaintext").get_attribute("value"), "the new key, once")
    viewer = css(browser, "#key-plaintext").get_attribute("value")
    assert viewer.startswith("nvapi-")
    until(browser, lambda b: f"viewer {XSS}" in text_of(b, "#key-list"), "its description as text")
    no_alert(browser)
    shot(browser, "06-keys.png")
    css(browser, "#signout").click()
    sign_in(browser, server, viewer)
    nav = [a.text for a in all_css(browser, "#nav a") if a.is_displayed()]
    assert nav == ["Overview"]
    fid, vid = state["echo"]
    go(browser, server, f"function/{fid}")
    until(browser, lambda b: "ACTIVE" in text_of(b, f'.version[data-version="{vid}"]'), "read-only")
    assert all_css(browser, "form.deploy-form") == [] and all_css(browser, "#page button") == []
    go(browser, server, "keys")
    assert "every scope" in text_of(browser, "#page")
    css(browser, "#signout").click()


def test_undeploy_from_the_function_page(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    sign_in(browser, server, ADMIN_KEY)
    fid, vid = state["echo"]
    go(browser, server, f"function/{fid}")
    button = f'.version[data-version="{vid}"] button.undeploy'
    until(browser, lambda b: css(b, button).is_displayed(), "the undeploy button")
    # edit the spec: concurrency 4 -> 2, max instances 1 -> 2, through "Update deployment"
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    for name, value in (("conc", "2"), ("max", "2")):
        box = css(browser, f"#{name}-{vid}")
        assert box.get_attribute("value") == {"conc": "4", "max": "1"}[name]  # the stored spec
        box.clear()
        box.send_keys(value)
    css(browser, f'.version[data-version="{vid}"] button.deploy').click()

    def updated() -> bool:
        (spec,) = server.json("GET", path)["deployment"]["deploymentSpecifications"]
        return bool(spec["maxRequestConcurrency"] == 2 and spec["maxInstances"] == 2)

    until(browser, lambda _: updated(), "the edited spec stored")
    css(browser, button).click()
    until(
        browser,
        lambda b: "INACTIVE" in text_of(b, f'.version[data-version="{vid}"] .version-line'),
        "INACTIVE",
    )
    status = server.json("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]["status"]
    assert status == "INACTIVE"


def test_revoking_the_signed_in_key_signs_out(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    made = server.json(
        "POST", "/v2/nvcf-lite/keys", {"scopes": list(SCOPES), "description": "to revoke"}
    )
    key, key_id = made["key"], made["apiKey"]["keyId"]
    css(browser, "#signout").click()
    sign_in(browser, server, key)
    go(browser, server, "keys")
    revoke = f'button.revoke[data-key="{key_id}"]'
    until(browser, lambda b: all_css(b, revoke), "its revoke button")
    assert "this key" in css(browser, revoke).text
    css(browser, revoke).click()
    until(browser, lambda b: css(b, "#signin").is_displayed(), "signed out")
    assert "revoked the key" in text_of(browser, "#signin-error")
    assert browser.execute_script("return sessionStorage.length") == 0
    status, _, _ = server.call(
        "GET", "/v2/nvcf-lite/keys", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 401


def test_an_unreachable_server_is_shown(
    server: ServerProcess, browser: Any, state: dict[str, Any]
) -> None:
    sign_in(browser, server, ADMIN_KEY)
    go(browser, server, "overview")
    until(browser, lambda b: all_css(b, "#functions tbody tr"), "the overview")
    assert csp_violations(browser) == []  # none on any page since the XSS test's check
    server.stop()
    until(browser, lambda b: "unreachable" in text_of(b, "#banner"), "the unreachable banner", 20)
    shot(browser, "08-unreachable.png")
    server.start()  # back, over the same data and port
    until(browser, lambda b: not css(b, "#banner").is_displayed(), "the banner gone")
    until(browser, lambda b: all_css(b, "#functions tbody tr"), "the overview again, signed in")
    assert css(browser, "#nav").is_displayed()
