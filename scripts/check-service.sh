#!/usr/bin/env bash
# CI check of the systemd service, on a machine where systemd is not PID 1 (run as root, with
# Docker running and the echo test image built):
#
#   scripts/check-service.sh [--exe PATH]   # default dist/nvcf-lite (scripts/build-executable.sh)
#
# 1. systemd-analyze verify and security (offline) on the unit, installed by scripts/install.sh.
# 2. install.sh twice: the second run changes nothing (same files, same inodes).
# 3. The installed unit's exact ExecStart= line, run the way systemd would run it: its User=,
#    Group=, SupplementaryGroups=, WorkingDirectory=, Environment= and systemd's own variables,
#    NoNewPrivileges= and an empty CapabilityBoundingSet=, in a private mount namespace that
#    makes ProtectSystem=strict (all read-only but the state directory), ProtectHome=yes,
#    PrivateTmp=yes and ProtectKernelTunables=/ProtectControlGroups= (read-only /proc/sys, /sys)
#    real. Only the port (a free one) and the container namespace differ, through
#    NVCF_LITE_SERVER__PORT and NVCF_LITE_DOCKER__NAMESPACE. The seccomp- and
#    namespace-based settings (RestrictAddressFamilies=, RestrictNamespaces=, LockPersonality=,
#    ProtectKernelModules=, ...) are checked by systemd-analyze only.
# 4. Proves /health (Docker ok), nvcf-lite.db and signing.key owned by the user, a deploy of the
#    echo function (request folders and secrets bind-mounted from the 0700 state directory) and
#    an invocation (200), no write outside the state directory; SIGTERM to the main process
#    only (KillMode=mixed) ends every process cleanly and leaves the container running; a
#    second start adopts it; install.sh --uninstall removes all but the data.
# Any failure prints the server's log. The check takes the machine's nvcf-lite install: it
# refuses to run where one exists, and removes its own at the end (data included).
set -euo pipefail

SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."
UNIT=/etc/systemd/system/nvcf-lite.service
STATE=/var/lib/nvcf-lite
RUNTIME=/run/nvcf-lite # RuntimeDirectory=: each instance's secrets.json, in memory
ECHO_IMAGE=nvcf-lite-test/echo:1
# Its own container namespace (the one env override besides the port, also read by
# install.sh --uninstall): a server in namespace "default" would reap other servers' and the
# test suite's unlabelled containers on a shared Docker engine.
export NVCF_LITE_DOCKER__NAMESPACE=check-service-$$
WORK=
LOG=/dev/null
server_pid=
installed=0
started=$SECONDS

step() { echo "[check-service] $* ($((SECONDS - started)) s)"; }
fail() {
  echo "[check-service] FAILED: $*" >&2
  if [ -s "$LOG" ]; then
    echo "----- server log ($LOG) -----" >&2
    tail -n 150 "$LOG" >&2
    echo "-----" >&2
  fi
  exit 1
}

cleanup() {
  local rc=$?
  set +e
  # What KillMode=mixed does at the end: SIGKILL to the main process and all it started.
  # shellcheck disable=SC2046
  [ -n "$server_pid" ] && kill -KILL $(descendants "$server_pid") "$server_pid" 2>/dev/null
  [ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null
  if [ "$installed" = 1 ]; then
    bash scripts/install.sh --uninstall >/dev/null 2>&1
    rm -rf "$STATE" "$RUNTIME"
  fi
  ids=$(docker ps -aq --filter "label=nvcf-lite.namespace=$NVCF_LITE_DOCKER__NAMESPACE" 2>/dev/null)
  # shellcheck disable=SC2086
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  rm -rf "$WORK" /var/cache/nvcf-lite-check-probe
  exit "$rc"
}

descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1"); do
    echo "$child"
    descendants "$child"
  done
}

# Live processes of the unit's user (the unit's cgroup, as this user runs nothing else).
user_processes() { ps -u "$1" -o pid=,stat=,args= | awk '$2 !~ /^Z/'; }

# The [Service] values of one key in the installed unit, one line each.
unit_value() {
  awk -v key="$1" '
    /^\[/ { section = $0; next }
    section == "[Service]" && index($0, key "=") == 1 { print substr($0, length(key) + 2) }
  ' "$UNIT"
}

json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k]
print(d)' "$1"; }

api() { # METHOD PATH [BODY]: prints the body, fails on a status >= 400
  local out code
  out=$(curl -sS -o "$WORK/body" -w '%{http_code}' -X "$1" "http://127.0.0.1:$port$2" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' ${3:+-d "$3"}) ||
    fail "$1 $2: curl failed"
  code=$out
  [ "$code" -lt 400 ] || fail "$1 $2: HTTP $code: $(cat "$WORK/body")"
  cat "$WORK/body"
}

# systemd-analyze (package systemd) and ps (procps): a minimal Debian has neither.
ensure_tools() {
  local pkgs=()
  command -v systemd-analyze >/dev/null || pkgs+=(systemd)
  command -v ps >/dev/null || pkgs+=(procps)
  [ "${#pkgs[@]}" = 0 ] && return
  local t=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" \
    >/dev/null
  step "installed ${pkgs[*]} in $((SECONDS - t)) s"
}

snapshot() {
  find /usr/local/bin/nvcf-lite /etc/nvcf-lite "$UNIT" "$STATE" \
    /etc/systemd/system/multi-user.target.wants/nvcf-lite.service \
    -printf '%p %i %m %u %g %s %T@ %l\n' 2>/dev/null | sort
  getent passwd nvcf-lite
  getent group docker
}

install_twice() {
  for path in /usr/local/bin/nvcf-lite /etc/nvcf-lite "$UNIT" "$STATE"; do
    [ ! -e "$path" ] || fail "$path exists: this check installs and removes nvcf-lite itself;" \
      "remove the old install first (scripts/install.sh --uninstall; rm -r $STATE)"
  done
  installed=1
  bash scripts/install.sh --exe "$EXE" || fail "install.sh"
  snapshot >"$WORK/first"
  bash scripts/install.sh --exe "$EXE" >"$WORK/second" 2>&1 || fail "second install.sh"
  cat "$WORK/second"
  grep -q "nothing changed" "$WORK/second" || fail "the second install.sh changed something"
  snapshot >"$WORK/after"
  diff "$WORK/first" "$WORK/after" || fail "the second install.sh touched installed files"
  cmp -s packaging/nvcf-lite.service "$UNIT" || fail "$UNIT is not packaging/nvcf-lite.service"
  step "install.sh twice: ok (the second run changed nothing)"
}

verify_unit() {
  local out
  out=$(systemd-analyze verify "$UNIT" 2>&1) || fail "systemd-analyze verify: $out"
  # Warnings (unknown keys, bad values) do not change the exit status: none may name our unit.
  if grep -i nvcf-lite <<<"$out"; then
    fail "systemd-analyze verify warns about the unit"
  fi
  [ -z "$out" ] || echo "$out"
  # Exposure 0-100 (the printed level x 10): a line of hardening removed fails this.
  out=$(systemd-analyze security --offline=yes --threshold=25 "$UNIT" 2>&1) ||
    fail "systemd-analyze security: exposure above 2.5: $out"
  step "systemd-analyze verify: ok; $(grep -o 'Overall exposure level.*' <<<"$out")"
}

# Runs inside `unshare --mount`: the unit's file-system sandbox, then its user and environment.
in_sandbox() {
  local mp
  mount --bind "$STATE" "$STATE"
  mount --bind "$RUNTIME" "$RUNTIME"
  while read -r mp; do
    case $mp in
      /proc | /proc/* | /dev | /dev/* | "$STATE" | "$RUNTIME") continue ;;
    esac
    mount -o remount,bind,ro "$mp" 2>/dev/null || [ "$mp" != / ] || exit 90
  done < <(awk '{ print $5 }' /proc/self/mountinfo | sort -u)
  mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
  for mp in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$mp"; done
  for mp in /home /root /run/user; do
    [ -d "$mp" ] && mount -t tmpfs -o mode=000,ro tmpfs "$mp"
  done
  cd "$SANDBOX_WORKDIR"
  # shellcheck disable=SC2086
  exec setpriv --reuid="$SANDBOX_USER" --regid="$SANDBOX_GROUP" --groups="$SANDBOX_GROUPS" \
    --no-new-privs --inh-caps=-all --bounding-set=-all -- env -i $SANDBOX_ENV "$@"
}

prepare_exec() {
  local line user group home g gids extra
  line=$(unit_value ExecStart)
  [ "$(wc -l <<<"$line")" = 1 ] || fail "ExecStart= must be one line: $line"
  case $line in [-@:+!]*) fail "ExecStart= has a prefix this check cannot emulate: $line" ;; esac
  case $line in *[\"\'\\\$%]*) fail "ExecStart= has quoting or specifiers: $line" ;; esac
  read -r -a exec_argv <<<"$line"
  user=$(unit_value User)
  group=$(unit_value Group)
  [ -n "$user" ] && [ -n "$group" ] || fail "the unit has no User= and Group="
  [ "$(unit_value StateDirectory)" = nvcf-lite ] || fail "StateDirectory= is not nvcf-lite"
  [ "$(unit_value RuntimeDirectory)" = nvcf-lite ] || fail "RuntimeDirectory= is not nvcf-lite"
  [ "$(unit_value RuntimeDirectoryPreserve)" = yes ] ||
    fail "RuntimeDirectoryPreserve= is not yes (kept containers mount their secrets from it)"
  # what systemd makes for RuntimeDirectory= at a first start (a folder of the /run tmpfs, owned
  # by User=; anything there now is another server's, as root, such as the image test's)
  rm -rf "$RUNTIME"
  install -d -m "$(unit_value RuntimeDirectoryMode)" -o "$user" -g "$group" "$RUNTIME"
  [ "$(unit_value KillMode)" = mixed ] || fail "this check sends SIGTERM as KillMode=mixed does"
  # What in_sandbox rebuilds, so the unit must say the same.
  local setting
  for setting in ProtectSystem=strict ProtectHome=yes PrivateTmp=yes NoNewPrivileges=yes \
    ProtectKernelTunables=yes ProtectControlGroups=yes CapabilityBoundingSet=; do
    [ "$(unit_value "${setting%%=*}")" = "${setting#*=}" ] ||
      fail "the unit lacks $setting, which this check emulates"
  done
  [ -z "$(unit_value ReadWritePaths)" ] || fail "ReadWritePaths= is not emulated"
  gids=$(id -G "$user")
  for g in $(unit_value SupplementaryGroups); do
    gids="$gids $(getent group "$g" | cut -d: -f3)"
  done
  home=$(getent passwd "$user" | cut -d: -f6)
  # systemd's environment for a system service with User= and StateDirectory=, then the unit's.
  extra=$(unit_value Environment | tr '\n' ' ')
  case $extra in *[\"\']*) fail "Environment= with quotes is not emulated: $extra" ;; esac
  export SANDBOX_USER=$user SANDBOX_GROUP=$group
  SANDBOX_GROUPS=$(tr ' ' '\n' <<<"$gids" | sort -un | paste -sd,)
  export SANDBOX_GROUPS
  # systemd's default for a system service is /.
  SANDBOX_WORKDIR=$(unit_value WorkingDirectory)
  export SANDBOX_WORKDIR=${SANDBOX_WORKDIR:-/}
  case $SANDBOX_WORKDIR in /*) ;; *) fail "WorkingDirectory= form not emulated: $SANDBOX_WORKDIR" ;; esac
  SANDBOX_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME=$home USER=$user LOGNAME=$user SHELL=$(getent passwd "$user" | cut -d: -f7)
    INVOCATION_ID=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n') STATE_DIRECTORY=$STATE
    RUNTIME_DIRECTORY=$RUNTIME $extra NVCF_LITE_SERVER__PORT=$port NVCF_LITE_DOCKER__NAMESPACE=$NVCF_LITE_DOCKER__NAMESPACE"
  export SANDBOX_ENV
  stop_timeout=$(unit_value TimeoutStopSec | tr -d s)
  if user_processes "$user" | grep .; then
    fail "processes of $user run already (an nvcf-lite service?): stop them first"
  fi
  step "ExecStart: ${exec_argv[*]} (user $user, groups $SANDBOX_GROUPS, cwd $SANDBOX_WORKDIR)"
}

start_server() {
  : >"$LOG"
  unshare --mount --propagation private -- bash "$SELF" --in-sandbox "${exec_argv[@]}" \
    >>"$LOG" 2>&1 &
  server_pid=$!
  local t=$SECONDS
  until curl -sf -o "$WORK/health" "http://127.0.0.1:$port/health"; do
    kill -0 "$server_pid" 2>/dev/null || {
      wait "$server_pid" || true
      fail "the server exited before /health answered"
    }
    [ $((SECONDS - t)) -lt 60 ] || fail "no /health 200 within 60 s"
    sleep 0.5
  done
  step "/health 200 after $((SECONDS - t)) s: $(cat "$WORK/health")"
  [ "$(json_field docker.status <"$WORK/health")" = ok ] || fail "/health: Docker is not ok"
}

stop_server() {
  local t=$SECONDS rc=0
  kill -TERM "$server_pid"
  while kill -0 "$server_pid" 2>/dev/null; do
    [ $((SECONDS - t)) -lt "${stop_timeout:-90}" ] || fail "still running ${stop_timeout} s" \
      "after SIGTERM (systemd would SIGKILL it)"
    sleep 0.2
  done
  wait "$server_pid" || rc=$?
  server_pid=
  [ "$rc" = 0 ] || fail "the server exited with $rc after SIGTERM"
  if user_processes "$SANDBOX_USER" | grep .; then
    fail "processes of $SANDBOX_USER outlived the main process (KillMode=mixed would kill them)"
  fi
  step "SIGTERM: exited 0 after $((SECONDS - t)) s, no process left"
}

check_state_dir() {
  local f
  for f in nvcf-lite.db signing.key; do
    [ "$(stat -c %U "$STATE/$f" 2>/dev/null)" = "$SANDBOX_USER" ] ||
      fail "$STATE/$f is missing or not owned by $SANDBOX_USER: $(ls -la "$STATE")"
  done
  if find "$STATE" ! -user "$SANDBOX_USER" | grep .; then
    fail "files in $STATE not owned by $SANDBOX_USER"
  fi
  step "state directory: $(cd "$STATE" && echo *) (all owned by $SANDBOX_USER)"
}

# Writes the unit's user must not do, inside the same sandbox: the config, the executable, a
# world-writable directory (only ProtectSystem= stops that one), /run, the home directories.
check_no_writes() {
  install -d -m 1777 /var/cache/nvcf-lite-check-probe
  local probe out
  for probe in /etc/nvcf-lite/x /usr/local/bin/x /var/cache/nvcf-lite-check-probe/x /run/x \
    /root/x; do
    if out=$(unshare --mount --propagation private -- bash "$SELF" --in-sandbox \
      sh -c "echo > $probe" 2>&1); then
      fail "the unit's user could write $probe"
    fi
  done
  # shellcheck disable=SC2016
  unshare --mount --propagation private -- bash "$SELF" --in-sandbox \
    sh -c 'echo > /tmp/x && echo > "$STATE_DIRECTORY/.probe" && rm "$STATE_DIRECTORY/.probe"' ||
    fail "the unit's user cannot write its /tmp and state directory"
  step "writes: only $STATE and the private /tmp (refused: config, /usr/local/bin, /var, /run)"
}

deploy_and_invoke() {
  local fn fid vid status t
  docker image inspect "$ECHO_IMAGE" >/dev/null 2>&1 ||
    fail "no $ECHO_IMAGE image: run .venv/bin/python scripts/build_test_images.py"
  fn=$(api POST /v2/nvcf/functions '{"name":"echo","inferenceUrl":"/echo","inferencePort":8000,
    "containerImage":"'"$ECHO_IMAGE"'","secrets":[{"name":"CHECK","value":"service-secret"}],
    "health":{"protocol":"HTTP","uri":"/health","port":8000,"timeout":"PT10S",
    "expectedStatusCode":200}}')
  fid=$(json_field function.id <<<"$fn")
  vid=$(json_field function.versionId <<<"$fn")
  api POST "/v2/nvcf/deployments/functions/$fid/versions/$vid" \
    '{"deploymentSpecifications":[{"gpu":"CPU","instanceType":"CPU.x1","minInstances":1,
    "maxInstances":1}]}' >/dev/null
  t=$SECONDS
  while :; do
    status=$(api GET "/v2/nvcf/functions/$fid/versions/$vid" | json_field function.status)
    [ "$status" = ACTIVE ] && break
    [ "$status" = DEPLOYING ] || fail "the echo function is $status: $(cat "$WORK/body")"
    [ $((SECONDS - t)) -lt 90 ] || fail "the echo function is not ACTIVE after 90 s"
    sleep 0.5
  done
  step "echo function $fid deployed (ACTIVE after $((SECONDS - t)) s)"
  container=$(docker ps -q --filter "label=nvcf-lite.function-id=$fid")
  [ -n "$container" ] || fail "no running container for $fid"
  FID=$fid
}

invoke() {
  local out
  out=$(api POST "/v2/nvcf/pexec/functions/$FID" '{"message":"hi","readSecrets":true}')
  python3 -c 'import json,sys; d=json.load(sys.stdin)
assert d["body"]["message"] == "hi"' <<<"$out" ||
    fail "the invocation did not echo the body: $out"
  [ "$(json_field secrets.CHECK <<<"$out")" = service-secret ] ||
    fail "the container did not read its secret: $out"
  # the secret is in memory under RuntimeDirectory=, and no byte of the state directory has it
  grep -rqF service-secret "$RUNTIME/secrets" || fail "no secrets.json under $RUNTIME/secrets"
  ! grep -rqF service-secret "$STATE" || fail "a secret value is in plain text under $STATE"
  step "invocation: 200, body echoed, secret read from /var/secrets ($1)"
}

# The README's way to make a key: as the unit's user, no --config (an installed service's
# /etc/nvcf-lite/config.toml is the default); the key must work against the server.
admin_key() {
  key=$(cd / && runuser -u "$SANDBOX_USER" -- "${exec_argv[0]}" keys create \
    --scope invoke_function --description check-service 2>>"$LOG") ||
    fail "runuser -u $SANDBOX_USER -- nvcf-lite keys create failed"
  step "keys create as $SANDBOX_USER (config found by itself): a new key, used from now on"
}

check_uninstall() {
  bash scripts/install.sh --uninstall || fail "install.sh --uninstall"
  installed=2
  local path
  for path in /usr/local/bin/nvcf-lite /etc/nvcf-lite "$UNIT" \
    /etc/systemd/system/multi-user.target.wants/nvcf-lite.service; do
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "$path is still there after --uninstall"
  done
  [ -s "$STATE/nvcf-lite.db" ] && [ -s "$STATE/signing.key" ] || fail "--uninstall removed data"
  getent passwd "$SANDBOX_USER" >/dev/null || fail "--uninstall removed the user owning the data"
  [ -z "$(docker ps -aq --filter "label=nvcf-lite.function-id=$FID")" ] ||
    fail "--uninstall left the function's container"
  bash scripts/install.sh --uninstall | grep -q "nothing changed" ||
    fail "a second --uninstall changed something"
  rm -rf "$STATE"
  installed=0
  step "--uninstall: unit, executable, config and containers gone; data and user kept"
}

main() {
  EXE=dist/nvcf-lite
  if [ "${1:-}" = --exe ]; then
    EXE=${2:?--exe needs a path}
  fi
  [ "$(id -u)" = 0 ] || fail "run as root"
  [ -x "$EXE" ] || fail "no executable $EXE (scripts/build-executable.sh makes it)"
  WORK=$(mktemp -d /tmp/check-service.XXXXXX)
  LOG=$WORK/server.log
  trap cleanup EXIT
  ensure_tools
  install_twice
  verify_unit
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  prepare_exec
  check_no_writes
  start_server
  key=$(grep -oE 'nvapi-[A-Za-z0-9_-]{64}' "$LOG" | head -n 1)
  [ -n "$key" ] || fail "the first start printed no admin key"
  check_state_dir
  deploy_and_invoke
  invoke "first start"
  stop_server
  [ -n "$(docker ps -q --filter "id=$container")" ] ||
    fail "the function container did not survive the stop (keep_instances_on_shutdown)"
  step "container $container still running after the stop"
  admin_key
  start_server
  invoke "second start"
  [ "$(docker ps -q --filter "label=nvcf-lite.function-id=$FID")" = "$container" ] ||
    fail "the second start did not adopt container $container"
  step "second start adopted container $container"
  stop_server
  check_state_dir
  check_uninstall
  step "all checks passed"
}

if [ "${1:-}" = --in-sandbox ]; then
  shift
  in_sandbox "$@"
fi
# scripts/check-service-boot.sh sources this file for its helpers.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
