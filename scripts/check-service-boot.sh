#!/usr/bin/env bash
# The systemd service under a real systemd: boots a minimal Debian 12 with systemd as PID 1 in a
# systemd-nspawn container (sharing the host's network and Docker socket) and has
# scripts/install.sh install and start the unit there, so every hardening line, the seccomp
# filter included, is enforced by systemd itself (scripts/check-service.sh emulates only the file
# system ones). Run as root, with Docker running and the echo test image built:
#
#   scripts/check-service-boot.sh [--exe PATH]   # default dist/nvcf-lite
#
# Proves: install.sh's systemd path (enable --now), /health (Docker ok), the admin key in
# journald, the echo function deployed and invoked (200, its secret read, a large output as a
# 302 to a zip that downloads), `systemctl stop` ends the service cleanly (no SIGKILL) and
# leaves the container, `systemctl start` adopts it, a kill -9 is restarted (Restart=), a second
# install.sh changes nothing, and --uninstall removes all but the data.
# The root file system (debootstrap --variant=minbase, from deb.debian.org) is cached in
# $NVCF_LITE_BOOT_ROOTFS (default /var/cache/nvcf-lite-check/bookworm); each boot runs on a
# throwaway copy of it (nspawn --ephemeral). The port and the container namespace are set by a
# drop-in, the customisation path the README gives.
set -euo pipefail

# shellcheck source=scripts/check-service.sh
source "$(dirname "$0")/check-service.sh"
REPO=$PWD
ROOTFS=${NVCF_LITE_BOOT_ROOTFS:-/var/cache/nvcf-lite-check/bookworm}
nspawn_pid=
leader=

inside() { nsenter -t "$leader" -a "$@"; }

boot_cleanup() {
  local rc=$?
  set +e
  if [ -n "$leader" ]; then
    inside journalctl -u nvcf-lite --no-pager >"$LOG" 2>&1
    [ "$rc" = 0 ] || tail -n 60 "$LOG" >&2
    inside systemctl poweroff >/dev/null 2>&1
  fi
  if [ -n "$nspawn_pid" ]; then
    for _ in $(seq 1 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nspawn_pid" 2>/dev/null
  fi
  ids=$(docker ps -aq --filter "label=nvcf-lite.namespace=$NVCF_LITE_DOCKER__NAMESPACE")
  # shellcheck disable=SC2086
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  [ "$installed" = 1 ] && rm -rf "$STATE" "$RUNTIME"
  rm -rf "$WORK"
  exit "$rc"
}

ensure_rootfs() {
  local pkgs=()
  command -v debootstrap >/dev/null || pkgs+=(debootstrap)
  command -v systemd-nspawn >/dev/null || pkgs+=(systemd-container)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    local t=$SECONDS
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" \
      >/dev/null
    step "installed ${pkgs[*]} in $((SECONDS - t)) s"
  fi
  if [ ! -x "$ROOTFS/lib/systemd/systemd" ]; then
    local t=$SECONDS
    rm -rf "$ROOTFS.tmp"
    mkdir -p "$(dirname "$ROOTFS")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$ROOTFS.tmp" \
      http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
      fail "debootstrap: $(tail -n 5 "$WORK/debootstrap.log")"
    mv "$ROOTFS.tmp" "$ROOTFS"
    step "debootstrap of Debian 12 (minbase + systemd) in $((SECONDS - t)) s"
  fi
}

boot() {
  local t=$SECONDS state
  systemd-nspawn --quiet --ephemeral --boot --register=no --keep-unit --directory="$ROOTFS" \
    --bind=/run/docker.sock --bind="$STATE" --bind="$RUNTIME" --bind-ro="$REPO:/opt/nvcf-lite-src" \
    --bind-ro="$(realpath "$EXE"):/opt/nvcf-lite.exe" --console=passive \
    >"$WORK/nspawn.log" 2>&1 &
  nspawn_pid=$!
  until leader=$(ps -o pid= --ppid "$nspawn_pid" | head -n 1 | tr -d ' ') && [ -n "$leader" ] &&
    state=$(inside systemctl is-system-running 2>/dev/null; true) &&
    [[ $state == running || $state == degraded ]]; do
    kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(cat "$WORK/nspawn.log")"
    [ $((SECONDS - t)) -lt 60 ] || fail "the container did not boot in 60 s: $state"
    leader=
    sleep 0.5
  done
  step "booted Debian 12 with systemd $(inside systemctl --version | head -n 1 | cut -d' ' -f2)" \
    "as PID 1 in $((SECONDS - t)) s"
}

install_inside() {
  # The socket's group is the host's docker gid; install.sh would otherwise make a new group.
  inside groupadd -o -g "$(stat -c %g /run/docker.sock)" docker
  inside mkdir -p /etc/systemd/system/nvcf-lite.service.d
  printf '[Service]\nEnvironment=NVCF_LITE_SERVER__PORT=%s NVCF_LITE_DOCKER__NAMESPACE=%s\n' \
    "$port" "$NVCF_LITE_DOCKER__NAMESPACE" |
    inside tee /etc/systemd/system/nvcf-lite.service.d/check.conf >/dev/null
  inside bash /opt/nvcf-lite-src/scripts/install.sh --exe /opt/nvcf-lite.exe >"$WORK/install" ||
    fail "install.sh inside: $(cat "$WORK/install")"
  cat "$WORK/install"
  grep -q "started nvcf-lite" "$WORK/install" || fail "install.sh did not start the service"
  SANDBOX_USER=nvcf-lite
}

wait_health() {
  local t=$SECONDS
  until curl -sf -o "$WORK/health" "http://127.0.0.1:$port/health"; do
    [ $((SECONDS - t)) -lt 60 ] || fail "no /health 200 within 60 s"
    sleep 0.5
  done
  [ "$(json_field docker.status <"$WORK/health")" = ok ] || fail "/health: $(cat "$WORK/health")"
  step "/health 200 (Docker ok) after $((SECONDS - t)) s"
}

unit_show() { inside systemctl show -p "$1" --value nvcf-lite; }

large_output() {
  local url code
  url=$(curl -sS -o /dev/null -w '%{redirect_url}' -X POST \
    "http://127.0.0.1:$port/v2/nvcf/pexec/functions/$FID" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d '{"largeOutputFiles":{"big.bin":6000000}}')
  [ -n "$url" ] || fail "a large output answered no 302"
  code=$(curl -sS -o "$WORK/result.zip" -w '%{http_code}' "$url")
  [ "$code" = 200 ] && [ "$(head -c 2 "$WORK/result.zip")" = PK ] ||
    fail "the large output's zip did not download ($code)"
  step "large output: 302 to a zip that downloads"
}

stop_inside() {
  inside systemctl stop nvcf-lite
  [ "$(unit_show Result)" = success ] || fail "stop result: $(unit_show Result)"
  if inside journalctl -u nvcf-lite --no-pager | grep -E 'SIGKILL|timed out|Killing'; then
    fail "systemctl stop had to kill"
  fi
  [ -n "$(docker ps -q --filter "id=$container")" ] || fail "the stop removed the container"
  step "systemctl stop: clean (Result=success, no kill), container $container still running"
}

boot_main() {
  EXE=dist/nvcf-lite
  if [ "${1:-}" = --exe ]; then
    EXE=${2:?--exe needs a path}
  fi
  [ "$(id -u)" = 0 ] || fail "run as root"
  [ -x "$EXE" ] || fail "no executable $EXE (scripts/build-executable.sh makes it)"
  [ ! -e "$STATE" ] || fail "$STATE exists on the host: it is bind-mounted into the container"
  WORK=$(mktemp -d /tmp/check-service-boot.XXXXXX)
  LOG=$WORK/journal.log
  trap boot_cleanup EXIT
  ensure_tools
  ensure_rootfs
  installed=1
  install -d -m 0700 "$STATE"
  # RuntimeDirectory= at the host's path too: the host's engine mounts secrets.json from it
  install -d -m 0700 "$RUNTIME"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  boot
  install_inside
  [ "$(unit_show User)" = nvcf-lite ] || fail "the service runs as $(unit_show User)"
  wait_health
  key=$(inside journalctl -u nvcf-lite --no-pager | grep -oE 'nvapi-[A-Za-z0-9_-]{64}' | head -1)
  [ -n "$key" ] || fail "no admin key in journalctl -u nvcf-lite"
  step "admin key found in journalctl -u nvcf-lite"
  deploy_and_invoke
  invoke "under systemd"
  large_output
  stop_inside
  inside systemctl start nvcf-lite
  wait_health
  invoke "after systemctl start"
  [ "$(docker ps -q --filter "label=nvcf-lite.function-id=$FID")" = "$container" ] ||
    fail "the start did not adopt container $container"
  local main_pid
  main_pid=$(unit_show MainPID)
  inside systemctl kill --signal=SIGKILL --kill-whom=main nvcf-lite
  sleep 3
  wait_health
  [ "$(unit_show MainPID)" != "$main_pid" ] || fail "kill -9 was not followed by a restart"
  step "kill -9 of the main process: restarted (Restart=on-failure)"
  inside bash /opt/nvcf-lite-src/scripts/install.sh --exe /opt/nvcf-lite.exe | tee "$WORK/again"
  grep -q "nothing changed" "$WORK/again" || fail "a second install.sh changed something"
  inside bash /opt/nvcf-lite-src/scripts/install.sh --uninstall | tee "$WORK/uninstall"
  [ "$(inside systemctl is-active nvcf-lite)" != active ] || fail "--uninstall left it running"
  ! inside test -e /etc/systemd/system/nvcf-lite.service || fail "--uninstall left the unit"
  [ -s "$STATE/nvcf-lite.db" ] || fail "--uninstall removed the data"
  # No docker CLI in the minimal root file system: install.sh must say so (check-service.sh
  # checks the removal itself).
  grep -q "Docker does not answer" "$WORK/uninstall" || fail "--uninstall hid the containers"
  step "--uninstall under systemd: stopped, disabled, removed, data kept"
  step "all checks passed"
}

boot_main "$@"
