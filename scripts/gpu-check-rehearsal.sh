#!/usr/bin/env bash
# Runs scripts/gpu-check.sh on a machine WITHOUT NVIDIA hardware, against a fake GPU host
# (tests/fake_gpu_host): a fake NVML in every Python process, a fake `nvidia-smi`, and a fake
# NVIDIA container toolkit hook that the real Docker engine registers as its `nvidia` device
# driver. Everything between nvcf-lite and the GPU is real except the driver itself: NVML is read
# through nvidia-ml-py's API, placement, DeviceRequests, Docker's hook registration, the
# prestart hook refusing unknown devices and the per-container device view.
#
#   scripts/gpu-check-rehearsal.sh      # as root; CI runs it after scripts/test.sh
#
# It RESTARTS dockerd twice (with the fake hook on its PATH, then without), which stops every
# running container: meant for CI and throwaway machines, refused where systemd runs Docker.
# The fake host has two "NVIDIA H100 80GB HBM3" and one "NVIDIA A100-SXM4-40GB" in MIG mode
# with two 1g.5gb devices; gpu-check deploys on an H100 and on a MIG device.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
FAKE=$ROOT/tests/fake_gpu_host
PLAIN_PATH=$PATH
export GPU_CHECK_VENV=${GPU_CHECK_VENV:-$ROOT/.venv}

if [ "$(id -u)" != 0 ]; then
  echo "gpu-check-rehearsal: must run as root (it restarts dockerd)" >&2
  exit 2
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
  echo "gpu-check-rehearsal: systemd runs Docker here; not restarting it" >&2
  exit 2
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check-rehearsal: this host has nvidia-smi; run scripts/gpu-check.sh itself" >&2
  exit 2
fi

WORK=$(mktemp -d -t nvcf-lite-gpu-rehearsal.XXXXXX)
trap 'rm -rf "$WORK"' EXIT # replaced by `restore` once dockerd is touched
GPUS=$WORK/gpus.json
"$GPU_CHECK_VENV/bin/python" - "$GPUS" <<'EOF'
import json
import sys
import uuid


def uid(kind: str) -> str:
    return f"{kind}-{uuid.uuid4()}"


mig = {"name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "memory_mb": 4864}
gpus = [
    {"name": "NVIDIA H100 80GB HBM3", "uuid": uid("GPU"), "memory_mb": 81559},
    {"name": "NVIDIA H100 80GB HBM3", "uuid": uid("GPU"), "memory_mb": 81559},
    {
        "name": "NVIDIA A100-SXM4-40GB",
        "uuid": uid("GPU"),
        "memory_mb": 40960,
        "mig": [{**mig, "uuid": uid("MIG")}, None, {**mig, "uuid": uid("MIG")}],
    },
]
with open(sys.argv[1], "w") as out:
    json.dump({"gpus": gpus}, out, indent=1)
EOF

dockerd_pid() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  # a stale pid file may name another process by now: only a dockerd counts
  if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
    pid=$(pgrep -x dockerd || true)
  fi
  echo "$pid"
}

stop_dockerd() {
  local pid
  pid=$(dockerd_pid)
  [ -n "$pid" ] || return 0
  kill -TERM $pid 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 $pid 2>/dev/null || return 0
    sleep 0.2
  done
  echo "gpu-check-rehearsal: dockerd ($pid) did not stop in 30 s" >&2
  return 1
}

WAS_RUNNING=$([ -n "$(dockerd_pid)" ] && echo yes || echo no)

restore() {
  local rc=$?
  echo
  stop_dockerd || true
  if [ "$WAS_RUNNING" = yes ]; then
    echo "==> restarting dockerd without the fake toolkit"
    env -u FAKE_GPU_HOST_GPUS PATH="$PLAIN_PATH" bash scripts/start-dockerd.sh || rc=1
  else
    echo "==> dockerd was not running before: left stopped"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap restore EXIT

echo "==> restarting dockerd with the fake NVIDIA container toolkit ($FAKE/bin)"
stop_dockerd
PATH="$FAKE/bin:$PLAIN_PATH" FAKE_GPU_HOST_GPUS=$GPUS bash scripts/start-dockerd.sh

echo "==> scripts/gpu-check.sh on the fake GPU host"
PATH="$FAKE/bin:$PLAIN_PATH" \
  PYTHONPATH="$FAKE/site${PYTHONPATH:+:$PYTHONPATH}" \
  FAKE_GPU_HOST_GPUS=$GPUS \
  GPU_CHECK_GPUS=${GPU_CHECK_GPUS:-all} \
  bash scripts/gpu-check.sh
