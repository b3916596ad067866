#!/usr/bin/env bash
# The GPU check: run on a machine with NVIDIA GPUs, Docker and the NVIDIA container toolkit.
#
#   scripts/gpu-check.sh
#
# 1. `nvidia-smi -L` lists the GPUs;
# 2. a venv with the project (.venv-gpu-check, or $GPU_CHECK_VENV; reused when it works);
#    offline, point pip at a wheel folder: PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels;
# 3. `nvcf-lite gpus` reads the same GPUs through NVML as nvidia-smi lists (no Docker needed;
#    a host without Docker stops after this with a FAIL for Docker);
# 4. the test function images are built locally (scripts/build_test_images.py);
# 5. `pytest -m gpu`;
# 6. `nvcf-lite serve` (plain HTTP, a temporary data dir, a bootstrap key, a Docker namespace of
#    its own): the echo image is registered and deployed on the first GPU that
#    GET /v2/nvcf/clusterGroups names (GPU_CHECK_GPUS="H100 A100_MIG_1g.5gb" picks GPU names,
#    "all" takes every one), with instance type <GPU>.GPU.1x; once ACTIVE, the container must
#    carry a DeviceRequest for exactly the placed UUID, and `nvidia-smi -L` inside it (injected
#    by the toolkit) must show exactly that GPU (or MIG device); one invocation; then the
#    undeploy must remove the container.
# Every check prints a PASS or FAIL line; the exit status is 1 when any check failed. The server,
# its containers and the temporary files are removed on exit.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-$ROOT/.venv-gpu-check}
WORK=$(mktemp -d -t nvcf-lite-gpu-check.XXXXXX)
NAMESPACE="gpu-check-$$"
SERVER_PID=""
failures=0

pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
header() { printf '\n==> %s\n' "$*"; }
# nvcf-lite runs here on its defaults and the variables this script sets, not on settings the
# calling shell may export (NVCF_LITE_GPUS__USE_NVML=false would defeat the check).
unset_settings() {
  local name
  for name in $(compgen -e); do
    case $name in NVCF_LITE_*) unset "$name" ;; esac
  done
  # An installed service's /etc/nvcf-lite/config.toml is not this check's config either.
  export NVCF_LITE_SYSTEM_CONFIG=/nonexistent/nvcf-lite/config.toml
}

cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    local workers
    workers=$(ps -o pid= --ppid "$SERVER_PID" 2>/dev/null || true)
    kill -TERM "$SERVER_PID" 2>/dev/null # it drains open requests, then exits
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    # shellcheck disable=SC2086
    kill -KILL "$SERVER_PID" $workers 2>/dev/null || true
  fi
  local ids
  ids=$(docker ps -aq --filter "label=nvcf-lite.namespace=$NAMESPACE" 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
  echo
  if [ "$failures" -gt 0 ]; then
    echo "gpu-check: $failures check(s) FAILED"
    exit 1
  fi
  echo "gpu-check: all checks passed"
  exit 0
}

# 1. The GPUs --------------------------------------------------------------------------------
header "nvidia-smi -L"
if gpus=$(nvidia-smi -L 2>&1) && grep -q '^GPU [0-9]' <<<"$gpus"; then
  echo "$gpus"
  pass "nvidia-smi lists $(grep -c '^GPU [0-9]' <<<"$gpus") GPU(s)"
else
  echo "$gpus"
  fail "nvidia-smi -L lists no GPU"
  finish
fi
# 2. The venv --------------------------------------------------------------------------------
header "venv $VENV"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import nvcf_lite, pytest, docker' 2>/dev/null; then
  pass "reusing $VENV"
elif { [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } &&
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[dev]"; then
  pass "installed nvcf-lite into $VENV"
else
  fail "could not make a venv with the project at $VENV"
  finish
fi
PY=$VENV/bin/python

# 3. NVML, as nvcf-lite reads it (no Docker needed) -----------------------------------------
header "nvcf-lite gpus"
inventory=$(cd "$WORK" && unset_settings && NVCF_LITE_STORE__DATA_DIR="$WORK/gpus-data" \
  "$VENV/bin/nvcf-lite" gpus 2>&1)
echo "$inventory"
smi_uuids=$(grep -o 'UUID: GPU-[^)]*' <<<"$gpus" | cut -d' ' -f2 | sort)
nvml_uuids=$(grep -oE '^GPU [0-9]+: .* (GPU-[^ ]+) [0-9]+ MiB$' <<<"$inventory" |
  grep -oE 'GPU-[^ ]+' | sort)
if [ -n "$nvml_uuids" ] && [ "$smi_uuids" = "$nvml_uuids" ]; then
  pass "nvcf-lite reads the same $(wc -l <<<"$nvml_uuids") GPU(s) through NVML as nvidia-smi -L"
else
  fail "NVML through nvcf-lite (${nvml_uuids//$'\n'/ }) differs from nvidia-smi -L (${smi_uuids//$'\n'/ })"
fi
if grep -qE '^  [A-Za-z0-9_.]+: [A-Za-z0-9_.]+\.GPU\.1x' <<<"$inventory"; then
  pass "nvcf-lite offers <GPU>.GPU.1x instance types"
else
  fail "nvcf-lite offers no <GPU>.GPU.1x instance type"
fi

if docker info >/dev/null 2>&1; then
  pass "the Docker engine answers"
else
  fail "the Docker engine does not answer (docker info): the container checks need it"
  finish
fi

# 4. Test images -----------------------------------------------------------------------------
header "test images"
if "$PY" scripts/build_test_images.py; then
  pass "test images built"
else
  fail "building the test images failed"
  finish
fi

# 5. pytest -m gpu ---------------------------------------------------------------------------
header "pytest -m gpu"
rc=0
"$VENV/bin/pytest" -q -m gpu -p no:cacheprovider tests/ || rc=$?
if [ "$rc" = 0 ]; then
  pass "pytest -m gpu"
else
  fail "pytest -m gpu exited $rc"
fi

# 6. A deployment on a real GPU through a real server ----------------------------------------
header "nvcf-lite serve + a deployment on a GPU"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KEY=$("$PY" -c 'import secrets; print("nvapi-" + secrets.token_urlsafe(48))')
(
  cd "$WORK" || exit 1 # no ./config.toml: defaults and the variables below only
  unset_settings
  export NVCF_LITE_STORE__DATA_DIR="$WORK/data"
  export NVCF_LITE_AUTH__BOOTSTRAP_KEY="$KEY"
  export NVCF_LITE_DOCKER__NAMESPACE="$NAMESPACE"
  export NVCF_LITE_DOCKER__KEEP_INSTANCES_ON_SHUTDOWN=false
  export NVCF_LITE_DOCKER__STOP_TIMEOUT_S=5
  export NVCF_LITE_SCHEDULER__TICK_INTERVAL_S=0.5
  exec "$VENV/bin/nvcf-lite" serve --host 127.0.0.1 --port "$PORT"
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

GPU_CHECK_URL="http://127.0.0.1:$PORT" GPU_CHECK_KEY="$KEY" GPU_CHECK_GPUS="${GPU_CHECK_GPUS:-}" \
  "$PY" - <<'EOF'
"""Drives the server over HTTP; prints PASS / FAIL lines; exits with the number of FAILs."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

URL, KEY = os.environ["GPU_CHECK_URL"], os.environ["GPU_CHECK_KEY"]
failures = 0


def report(ok, what):
    global failures
    print(("PASS: " if ok else "FAIL: ") + what, flush=True)
    failures += not ok
    return ok


def call(method, path, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def wait(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.5)
    return None


def main():
    up = wait("health", lambda: _health(), 60)
    if not report(up is not None, "nvcf-lite serve answers /health"):
        return
    report(up.get("gpus", {}).get("status") == "ok", f"/health gpus: {up.get('gpus')}")

    status, groups = call("GET", "/v2/nvcf/clusterGroups")
    gpus = [g for g in groups["clusterGroups"][0]["gpus"] if g["name"] != "CPU"] if status == 200 else []
    if not report(bool(gpus), f"GET /v2/nvcf/clusterGroups names GPUs: {[g['name'] for g in gpus]}"):
        return
    offered = {g["name"]: [t["name"] for t in g["instanceTypes"]] for g in gpus}
    wanted = os.environ.get("GPU_CHECK_GPUS", "").split() or [gpus[0]["name"]]
    if wanted == ["all"]:
        wanted = list(offered)
    for gpu in wanted:
        print(f"\n--- {gpu}", flush=True)
        if report(gpu in offered, f"{gpu} is offered ({list(offered)})"):
            check_gpu(gpu, offered[gpu])


def check_gpu(gpu, offered):
    itype = f"{gpu}.GPU.1x"
    if not report(itype in offered, f"{gpu} offers {itype} ({offered})"):
        return

    status, fn = call("POST", "/v2/nvcf/functions", {
        "name": "gpu-check", "inferenceUrl": "/echo", "inferencePort": 8000,
        "containerImage": "nvcf-lite-test/echo:1",
        "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S",
                   "expectedStatusCode": 200},
    })
    if not report(status == 200, f"register the echo function: {status}"):
        print(fn)
        return
    fid, vid = fn["function"]["id"], fn["function"]["versionId"]
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    spec = {"gpu": gpu, "instanceType": itype, "minInstances": 1, "maxInstances": 1}
    status, body = call("POST", path, {"deploymentSpecifications": [spec]})
    if not report(status == 200, f"deploy on {gpu} / {itype}: {status}"):
        print(body)
        return

    def active():
        _, d = call("GET", path)
        d = d["deployment"]
        if d["functionStatus"] == "ERROR":
            return d
        ready = [i for i in d.get("instances", []) if i["state"] == "ready"]
        return d if d["functionStatus"] == "ACTIVE" and ready else None

    d = wait("ACTIVE", active, 300)
    state = d and (d["functionStatus"], d.get("healthInfo"))
    if not report(d is not None and d["functionStatus"] == "ACTIVE", f"deployment ACTIVE: {state}"):
        return
    (inst,) = [i for i in d["instances"] if i["state"] == "ready"]
    placed, cid = inst["gpuUuids"], inst["containerId"]
    report(len(placed) == 1, f"one unit placed: {placed}")

    doc = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                    check=True).stdout)[0]
    requests_ = doc["HostConfig"].get("DeviceRequests") or []
    ids = [i for r in requests_ for i in (r.get("DeviceIDs") or [])]
    report(len(requests_) == 1 and requests_[0].get("Driver") == "nvidia" and ids == placed,
           f"DeviceRequests carry exactly {placed}: {requests_}")
    env = dict(e.split("=", 1) for e in doc["Config"]["Env"])
    report(env.get("NVIDIA_VISIBLE_DEVICES") == ",".join(placed),
           f"NVIDIA_VISIBLE_DEVICES={env.get('NVIDIA_VISIBLE_DEVICES')}")

    smi = subprocess.run(["docker", "exec", cid, "nvidia-smi", "-L"], capture_output=True, text=True)
    print(smi.stdout + smi.stderr, end="")
    seen = re.findall(r"UUID: ((?:GPU|MIG)-[0-9A-Za-z-]+)\)", smi.stdout)
    kind = "MIG-" if placed and placed[0].startswith("MIG-") else "GPU-"
    visible = [u for u in seen if u.startswith(kind)]
    report(smi.returncode == 0 and visible == placed,
           f"nvidia-smi -L in the container shows exactly {placed} (saw {seen})")

    status, _ = call("POST", f"/v2/nvcf/pexec/functions/{fid}", {"hello": "gpu"}, timeout=120)
    report(status == 200, f"invoke the deployed function: {status}")

    status, _ = call("DELETE", path)
    report(status == 200, f"undeploy: {status}")
    gone = wait("container removed", lambda: _absent(cid), 60)
    report(bool(gone), "the container is removed after the undeploy")


def _health():
    try:
        with urllib.request.urlopen(URL + "/health", timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return None


def _absent(cid):
    done = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True)
    return done.returncode != 0


main()
sys.exit(min(failures, 100))  # the number of failed checks
EOF
rc=$?
if [ "$rc" != 0 ]; then
  failures=$((failures + rc))
  echo "--- server log (tail) ---"
  tail -n 60 "$WORK/server.log"
fi

finish
