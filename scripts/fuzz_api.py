#!/usr/bin/env python3
"""Schema-driven fuzzing of every endpoint nvcf-lite serves (issue #14: bad input).

Starts `nvcf-lite serve` on 127.0.0.1 over a fresh data_dir (its container engine pointed at a
socket that does not exist, so a fuzzed deployment fails with a reason instead of starting
containers), registers a function with a second version and secrets and uploads an asset, so
that the fuzzer meets real objects as well as missing ones, then runs schemathesis (`st run`)
against the served /openapi/openapi.json with the admin key: examples, coverage, fuzzing and
stateful phases, with every check (`--checks all`). The document states the constraints the
rules enforce (api/openapi_constraints.py); three that no schema can carry are named here, each
on the operations it concerns only, where a 400 for a schema-valid request is what NVCF answers
(`positive_data_acceptance` accepts it there and nowhere else):

- a registry credential's secret value must be the base64 of `username:password` (POST and
  PATCH of registry-credentials);
- `llmInvocationConfig` and `modelUpdates` are refused on a version that is not an LLM
  function: its stored state, not the request (PUT of a function version, F8, and of its
  metadata);
- the telemetry ids a function names must be telemetries of the account (POST of a function or
  a version);
- a model or resource version's body must be a tar archive (PUT of nvcf-lite's models and
  resources);
- a deployment names the GPUs and instance types this host offers (POST and PUT of
  deployments): the inventory, not the document;
- a telemetry's name (its secret's) is unique within its account (POST of telemetries);
- the items of a list are unique by one of their fields, which no JSON Schema keyword says:
  authorized parties by ncaId (POST of authorizations), secrets by name (PUT of secrets);
- the wildcard party `"*"` joins no other party: adding it to a function that has parties,
  or adding one to a public function, depends on the stored set (PATCH .../add).

So a run fails on a 500, a hang (no answer within --request-timeout), an answer whose status or
content type the document does not name (every error is documented as problem+json), a body
that does not match its schema, a request the document calls invalid that is not refused, or an
OPTIONS `Allow` that names other methods than the document. Prints schemathesis's report;
exit status 0 when it found nothing. The suite runs it with a few examples
(tests/test_api_fuzz_live.py); the longer run:

    .venv/bin/python scripts/fuzz_api.py --examples 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

KEY = "nvapi-" + "F" * 60 + "fuzz"
# (operations, as a regex over "METHOD /path", the rule that refuses schema-valid bodies there)
STATE_RULES: tuple[tuple[str, str], ...] = (
    (r"^(POST|PATCH) .*/registry-credentials(/\{[^}]+\})?$", "base64 of username:password"),
    (r"^PUT .*/nvcf/(metadata/)?functions/\{function_id\}/versions/\{version_id\}$", "LLM-only"),
    (r"^POST .*/nvcf/functions(/\{function_id\}/versions)?$", "the account's telemetries"),
    (r"^PUT /v2/nvcf-lite/(models|resources)/\{name\}/versions/\{version\}$", "a tar archive"),
    (r"^(POST|PUT) .*/deployments/functions/", "the GPUs and instance types this host offers"),
    (r"^POST .*/telemetries$", "a telemetry's name unique within its account"),
    # unique by one field of the items: no JSON Schema keyword says it
    (
        r"^POST .*/authorizations/functions/\{function_id\}(/versions/\{version_id\})?$",
        "unique ncaIds",
    ),
    (r"^PUT .*/secrets/functions/\{function_id\}/versions/\{version_id\}$", "unique names"),
    # the wildcard may join no list, and only the owner's own state says what is there
    (r"^PATCH .*/authorizations/functions/.*/add$", "the wildcard alone"),
)
REVOKE = "^DELETE /v2/nvcf-lite/keys/"
# The stateful phase follows links within one path family: the org and team families serve the
# same handlers over the same objects (the seeded phases run all three), and schemathesis would
# not see a DELETE through /v2/nvcf of an asset made through /v2/orgs/{org} as its deletion
# (a false "created resource not found").
ORG_FAMILIES = "^/v2/orgs/"
# positive_data_acceptance's default expected statuses, and NVCF's 400 on those operations
ACCEPTED_THERE = '["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def start_server(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    config = workdir / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[store]\ndata_dir = "{workdir / "data"}"\n'
        f'[auth]\nbootstrap_key = "{KEY}"\n'
        f'[docker]\nbase_url = "unix://{workdir / "no-engine.sock"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_LITE_")}
    log = (workdir / "server.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "nvcf_lite", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}) before it answered")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"no answer from {base}/health within {timeout_s:.0f} s")


def seed_objects(base: str) -> dict[str, str]:
    """A function with two versions (one with secrets), and an asset: ids for the fuzzer."""
    body = {"name": "fuzzed", "inferenceUrl": "/echo", "containerImage": "nvcf-lite-test/echo:1"}
    first = call(base, "POST", "/v2/nvcf/functions", body)["function"]
    fid = first["id"]
    with_secrets = {**body, "secrets": [{"name": "TOKEN", "value": "fuzz-secret"}]}
    second = call(base, "POST", f"/v2/nvcf/functions/{fid}/versions", with_secrets)["function"]
    asset = call(base, "POST", "/v2/nvcf/assets", {"contentType": "text/plain", "description": "x"})
    return {"function_id": fid, "version_id": second["versionId"], "asset_id": asset["assetId"]}


def write_st_config(path: Path, ids: dict[str, str] | None) -> None:
    """schemathesis.toml; with `ids`, path ids are the seeded objects' half of the time."""
    lines = ["[parameters]", '"path.org" = "local"']
    for name in ids or {}:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}')
    for name, value in (ids or {}).items():
        lines += ["", f"[dictionaries.{name}]", f'values = ["{value}"]']
    # This run has no container engine: the routes that need it (logs) answer 503 (the
    # engine is not reachable, said so), the documented answer, not a server fault.
    allowed = '["2xx", "3xx", "4xx", "503"]'
    lines += ["", "[checks.not_a_server_error]", f"expected-statuses = {allowed}"]
    for regex, rule in STATE_RULES:
        lines += ["", f"# {rule}", "[[operations]]", f"include-name-regex = {json.dumps(regex)}"]
        lines += [f"checks.positive_data_acceptance.expected-statuses = {ACCEPTED_THERE}"]
    path.write_text("\n".join(lines) + "\n")


def run_schemathesis(
    args: argparse.Namespace,
    base: str,
    st_config: Path,
    phases: str,
    workers: int,
    only: str | None = None,
    skip_paths: str | None = None,
) -> int:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    command = [
        st,
        "--config-file",
        str(st_config),
        "run",
        f"{base}/openapi/openapi.json",
        "--header",
        f"Authorization: Bearer {KEY}",
        "--phases",
        phases,
        "--checks",
        "all",
        "--max-examples",
        str(args.examples),
        "--workers",
        str(workers),
        "--request-timeout",
        str(args.request_timeout),
        "--no-color",
        # The function bodies' three cases (api/openapi_constraints.WHOLE) are drawn by filtering
        # now and then; hypothesis calls that a health problem, and stops the operation's run.
        "--suppress-health-check",
        "filter_too_much",
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    if only or args.operations:
        command += ["--include-name-regex", only or args.operations]
    if not only:
        command += ["--exclude-name-regex", REVOKE]
    if skip_paths:
        command += ["--exclude-path-regex", skip_paths]
    shown = [c if "Bearer" not in c else "'Authorization: [key]'" for c in command]
    print("$ " + " ".join(shown), flush=True)
    return subprocess.call(command, cwd=st_config.parent)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--examples", type=int, default=100, help="max examples per operation")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--request-timeout", type=float, default=20.0, help="seconds: longer is a hang")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--operations", help='only these: a regex over "METHOD /path"')
    p.add_argument("--keep", action="store_true", help="keep the work folder (server log)")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="nvcf-lite-fuzz-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(workdir, port)
    try:
        wait_ready(base, server)
        ids = seed_objects(base)
        # Examples, coverage and fuzzing meet the seeded objects as well as missing ones; the
        # stateful phase follows the ids its own calls create (a seeded id in their place
        # would read as "a created resource is not found").
        write_st_config(workdir / "seeded.toml", ids)
        write_st_config(workdir / "stateful.toml", None)
        seeded, stateful = workdir / "seeded.toml", workdir / "stateful.toml"
        rc = run_schemathesis(args, base, seeded, "examples,coverage,fuzzing", args.workers)
        # one worker: two scenarios at once delete each other's objects (a false "not found")
        rc = run_schemathesis(args, base, stateful, "stateful", 1, None, ORG_FAMILIES) or rc
        # revoking keys last and alone: it may find the fuzzer's own key (from GET .../keys)
        rc = run_schemathesis(args, base, seeded, "coverage,fuzzing", 1, REVOKE) or rc
        alive = server.poll() is None
        if not alive:
            print(f"the server died during the run (exit {server.returncode})")
        errors = [
            line
            for line in (workdir / "server.log").read_text(errors="replace").splitlines()
            if "unhandled error" in line or "Traceback" in line
        ]
        for line in errors[:20]:
            print(f"server log: {line}")
        print(f"fuzz: schemathesis exit {rc}; server alive: {alive}; errors logged: {len(errors)}")
        return 0 if rc == 0 and alive and not errors else 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
