#!/usr/bin/env bash
# Starts a Docker engine without systemd, for tests and benchmarks; does nothing if one answers.
# Installs docker.io when dockerd is missing (Debian/Ubuntu, as root). Never uses --bridge=none:
# on a host where another daemon uses docker0 that deletes the shared bridge.
set -euo pipefail

SOCK=/var/run/docker.sock
LOG=/var/log/dockerd.log

ping_ok() {
  [ "$(curl -s --max-time 2 --unix-socket "$SOCK" http://localhost/_ping 2>/dev/null)" = "OK" ]
}

if command -v curl >/dev/null 2>&1 && ping_ok; then
  echo "dockerd: already running ($SOCK)"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  echo "dockerd: installing docker.io ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io iptables curl >/dev/null
  if ping_ok; then  # the package may have started the engine itself
    echo "dockerd: running ($SOCK)"
    exit 0
  fi
fi

rm -f /var/run/docker.pid

args=()
if ! iptables -t nat -S >/dev/null 2>&1; then
  # No NAT table (nested/sandboxed kernel): published 127.0.0.1 ports still work via docker-proxy.
  args+=(--iptables=false --ip-masq=false)
fi

setsid dockerd "${args[@]}" >"$LOG" 2>&1 < /dev/null &
pid=$!

deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
  if ping_ok; then
    echo "dockerd: started ${args[*]:-} (pid $pid, log: $LOG)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "dockerd: exited at start; last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.1
done

echo "dockerd: no answer on $SOCK after 30 s; last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
