"""The invoke path of the real ngcsdk 3.151.0 (the last release with invoke) against a live
`nvcf-lite serve` over plain HTTP and a real function container (spec §7.1, §9 item 7).

ngcsdk 3.x sends invocations to a hard-coded NVCF URL table; the script points its "prod"
entry at the server (as test_assets_ngcsdk3_sdk does). Covered: a blocking 200, 202 then status
polls (sent with the SDK's `NVCF-POLL_SECONDS` spelling), a large result (302 -> the zip
fetched without Authorization and saved), and streaming (`invoke_stream`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from asset_support import plain_server
from invocation_support import docker_env, live_echo
from sdk_support import ensure_sdk3_venv, run_sdk3
from server_support import ServerProcess

pytestmark = [pytest.mark.sdk, pytest.mark.docker]

INVOKE = """
import os
def main(args):
    functions = client().cloud_function.functions
    kw = {"starfleet_api_key": args["api_key"], "pending_request_interval": 0.5}
    out = {"sync": dict(functions.invoke(args["fid"], {"hello": "sdk"}, **kw))}
    out["polled"] = dict(functions.invoke(
        args["fid"], {"delay": 2.2, "n": 2}, polling_request_timeout=1, **kw))
    path = os.path.join(os.environ["HOME"], "result.zip")
    out["zip"] = dict(functions.invoke(
        args["fid"], {"delay": 1.5, "largeOutputFiles": {"answer.txt": "forty-two"}},
        polling_request_timeout=1, output_zip_path=path, **kw))
    out["stream"] = [
        line.decode() for line in functions.invoke_stream(
            args["fid"], {"events": 3, "interval": 0.05}, starfleet_api_key=args["api_key"])
        if line
    ]
    return out
"""


@pytest.fixture(scope="module")
def sdk3_python() -> Path:
    return ensure_sdk3_venv()


@pytest.fixture
def server(sdk3_python: Path, tmp_path: Path, ns: str) -> Iterator[ServerProcess]:
    env = {**docker_env(ns), "NVCF_LITE_DOCKER__BASE_URL": ""}
    with plain_server(tmp_path / "server", extra_env=env) as live:
        yield live


def test_ngcsdk3_invoke_sync_polled_zip_and_stream(
    sdk3_python: Path, server: ServerProcess, tmp_path: Path
) -> None:
    fid, vid = live_echo(server.json)
    run = run_sdk3(sdk3_python, server, INVOKE, tmp_path / "home", fid=fid)
    out = run.expect_ok()

    sync = out["sync"]
    assert sync["body"] == {"hello": "sdk"} and sync["headers"]["nvcf-function-version-id"] == vid
    # the SDK's NVCF-POLL_SECONDS: 300 was honoured: the container saw a 300 s window
    assert 295 <= int(sync["headers"]["nvcf-poll-seconds"]) <= 300
    assert "authorization" not in sync["headers"]
    posts = run.calls("POST", f"/v2/nvcf/pexec/functions/{fid}")
    assert [c.header("NVCF-POLL_SECONDS") for c in posts] == ["300", "1", "1", None]

    assert out["polled"]["body"] == {"delay": 2.2, "n": 2}
    assert [c.status for c in posts] == [200, 202, 202, 200]
    polls = [c.status for c in run.calls("GET", "/v2/nvcf/pexec/status/")]
    assert polls[-1] == 302 and 200 in polls and set(polls) <= {200, 202, 302}, run.describe()

    assert out["zip"]["response_code"] == 200
    with zipfile.ZipFile(out["zip"]["output_zip_path"]) as z:
        responses = [n for n in z.namelist() if n.endswith(".response")]
        assert sorted(z.namelist()) == sorted(["answer.txt", *responses]) and len(responses) == 1
        assert z.read("answer.txt") == b"forty-two"
    download = run.calls("GET", "/_nvcf-lite/blobs/results/")
    assert len(download) == 1 and download[0].status == 200
    assert download[0].header("authorization") is None

    assert out["stream"] == ['data: {"i": 0}', 'data: {"i": 1}', 'data: {"i": 2}', "data: [DONE]"]
    assert posts[-1].header("accept") == "text/event-stream" and posts[-1].status == 200
