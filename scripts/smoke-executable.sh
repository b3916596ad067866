#!/usr/bin/env bash
# Smoke test of the one-file executable (scripts/build-executable.sh makes it), as a user on a
# machine without Python would run it: a copy in a scratch folder, started with an environment
# whose PATH holds no interpreter, no venv and no tool at all (it needs none).
#
#   scripts/smoke-executable.sh [path/to/nvcf-lite]        # default dist/nvcf-lite
#
# --version, migrate, gpus; serve on a free loopback port with a bootstrap key; /health; the
# API docs page and its bundled scripts; keys
# create (same database as the server); register the echo function (nvcf-lite-test/echo:1, from
# scripts/build_test_images.py), deploy it on Docker (CPU instance type), invoke it (200);
# SIGTERM; restart on the same data: the function is still listed and its adopted instance still
# answers. Every process of the server must be the copied executable, its libpython the bundled
# one. Uses curl and the docker CLI, never python. Cleans up its containers (namespace label).
set -euo pipefail
# shellcheck source=scripts/loopback.sh
source "$(dirname "$0")/loopback.sh"

HERE=$(cd "$(dirname "$0")/.." && pwd)
SOURCE=$(realpath "${1:-$HERE/dist/nvcf-lite}")
IMAGE=nvcf-lite-test/echo:1
NAMESPACE="smoke-exe-$$"
WORK=$(mktemp -d /tmp/nvcf-lite-smoke.XXXXXX)
EXE=$WORK/bin/nvcf-lite
KEY="nvapi-$(head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_')"
PORT=""
SERVER_PID=""
step_started=$SECONDS

say() { echo "smoke: $*"; }
fail() {
  echo "smoke: FAIL: $*" >&2
  if [ -s "$WORK/serve.log" ]; then
    echo "smoke: --- server log (last 40 lines) ---" >&2
    tail -n 40 "$WORK/serve.log" >&2
  fi
  exit 1
}

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  local ids
  ids=$(docker ps -aq --filter "label=nvcf-lite.namespace=$NAMESPACE" 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null || rc=1
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# The server's whole environment: nothing from this shell, a PATH with nothing on it.
server_env() {
  printf '%s\n' PATH="$WORK/empty-path" HOME="$WORK" TMPDIR="$WORK/tmp" \
    NVCF_LITE_CONFIG="$WORK/config.toml" NVCF_LITE_STORE__DATA_DIR="$WORK/data" \
    NVCF_LITE_AUTH__BOOTSTRAP_KEY="$KEY" NVCF_LITE_DOCKER__NAMESPACE="$NAMESPACE" \
    NVCF_LITE_SCHEDULER__TICK_INTERVAL_S=0.5 NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S=0.5 \
    NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S=60
}

run_exe() {
  local env_vars
  mapfile -t env_vars < <(server_env)
  (cd "$WORK" && exec env -i "${env_vars[@]}" "$EXE" "$@")
}


# api METHOD PATH [KEY] [JSON BODY]: sets STATUS and BODY (the response body).
api() {
  local method=$1 path=$2 key=${3:-$KEY} data=${4:-}
  local args=(-sS -o "$WORK/body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $key")
  if [ -n "$data" ]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
  fi
  STATUS=$(curl "${args[@]}" "http://127.0.0.1:$PORT$path") || fail "curl $method $path failed"
  BODY=$(cat "$WORK/body")
}



# Starts the server on a free port (again on another one if the port was taken meanwhile).
start_server() {
  local env_vars attempt lines
  mapfile -t env_vars < <(server_env)
  for attempt in 1 2 3; do
    PORT=$(free_port)
    lines=$(wc -l <"$WORK/serve.log")
    # One fork that execs: $! is the executable's own pid.
    (cd "$WORK" && exec env -i "${env_vars[@]}" "$EXE" serve --port "$PORT") \
      >>"$WORK/serve.log" 2>&1 &
    SERVER_PID=$!
    local started=$SECONDS
    until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null; do
      if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" || true
        SERVER_PID=""
        tail -n +"$((lines + 1))" "$WORK/serve.log" | grep -q "Address already in use" ||
          fail "the server exited before answering /health"
        say "port $PORT was taken meanwhile (attempt $attempt)"
        continue 2
      fi
      [ $((SECONDS - started)) -lt 60 ] || fail "no /health 200 within 60 s"
      sleep 0.1
    done
    say "serve: /health 200 on 127.0.0.1:$PORT after $((SECONDS - started)) s"
    return
  done
  fail "no port to listen on after 3 attempts"
}

stop_server() {
  kill -TERM "$SERVER_PID"
  local started=$SECONDS rc=0
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    [ $((SECONDS - started)) -lt 30 ] || fail "the server ignored SIGTERM for 30 s"
    sleep 0.2
  done
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=""
  [ "$rc" = 0 ] || fail "the server exited with $rc after SIGTERM"
  say "SIGTERM: exited 0 after $((SECONDS - started)) s"
}

# Each process of the server runs the copied file itself, with its bundled libpython.
assert_no_outside_python() {
  local pids=("$SERVER_PID") child pid i=0
  while [ "$i" -lt "${#pids[@]}" ]; do
    # shellcheck disable=SC2013 # the children files hold space-separated pids
    for child in $(cat /proc/"${pids[$i]}"/task/*/children 2>/dev/null); do
      pids+=("$child")
    done
    i=$((i + 1))
  done
  # the one-file bootloader and the server it unpacked (granian runs embedded in it)
  [ "${#pids[@]}" -ge 2 ] || fail "expected the bootloader and the server: ${pids[*]}"
  for pid in "${pids[@]}"; do
    [ "$(readlink "/proc/$pid/exe")" = "$EXE" ] ||
      fail "process $pid runs $(readlink "/proc/$pid/exe"), not $EXE"
    if grep -o '/[^ ]*libpython[^ ]*' "/proc/$pid/maps" | grep -v "^$WORK/tmp/_MEI" | grep -q .; then
      fail "process $pid maps a libpython outside the bundle: $(grep libpython "/proc/$pid/maps")"
    fi
  done
  say "processes ${pids[*]}: all $EXE, libpython from the bundle only"
}


invoke() { # invoke FID KEY MARKER
  api POST "/v2/nvcf/pexec/functions/$1" "$2" "{\"smoke\":\"$3\"}"
  expect 200 "invoke"
  grep -q "$3" <<<"$BODY" || fail "the echo answer lacks $3: $BODY"
}

main() {
  [ -x "$SOURCE" ] || fail "no executable at $SOURCE (run scripts/build-executable.sh)"
  command -v curl >/dev/null || fail "curl is needed"
  docker image inspect "$IMAGE" >/dev/null 2>&1 ||
    fail "no $IMAGE image (run .venv/bin/python scripts/build_test_images.py)"
  mkdir -p "$WORK/bin" "$WORK/empty-path" "$WORK/tmp"
  cp "$SOURCE" "$EXE"
  : >"$WORK/config.toml"
  : >"$WORK/serve.log"
  if env -i PATH="$WORK/empty-path" "$BASH" -c 'command -v python3 || command -v python'; then
    fail "python is resolvable on the server's PATH"
  fi

  local version
  version=$(run_exe --version) || fail "--version failed"
  [[ $version =~ ^nvcf-lite\ [0-9] ]] || fail "--version printed '$version'"
  say "--version: $version"
  run_exe migrate >"$WORK/migrate.out" 2>&1 || fail "migrate: $(cat "$WORK/migrate.out")"
  grep -q "$WORK/data/nvcf-lite.db" "$WORK/migrate.out" ||
    fail "migrate did not name the database: $(cat "$WORK/migrate.out")"
  say "migrate: $(tail -n 1 "$WORK/migrate.out")"
  run_exe gpus >"$WORK/gpus.out" 2>&1 || fail "gpus: $(cat "$WORK/gpus.out")"
  grep -q "CPU: CPU.x1" "$WORK/gpus.out" || fail "gpus lists no CPU instance type"
  say "gpus: $(grep -m 1 -i "nvml\|gpu" "$WORK/gpus.out")"

  start_server
  assert_no_outside_python
  api GET /health
  expect 200 "/health"
  grep -q '"docker":{"status":"ok"' <<<"$BODY" || fail "/health: Docker is not ok: $BODY"
  # Package data beyond the migrations: the API docs and the scripts they load from the server.
  api GET /openapi/openapi.json
  expect 200 "/openapi/openapi.json"
  api GET /openapi
  expect 200 "/openapi"
  local asset
  asset=$(grep -o 'src="[^"]*"' <<<"$BODY" | head -n 1 | cut -d'"' -f2)
  case $asset in
    /*) ;;
    *) fail "/openapi loads '$asset', not a file of this server" ;;
  esac
  api GET "$asset"
  expect 200 "$asset (a bundled static file)"
  say "/openapi and its $asset: 200"

  local invoker
  invoker=$(run_exe keys create --scope invoke_function 2>>"$WORK/keys.err") ||
    fail "keys create: $(cat "$WORK/keys.err")"
  say "keys create: $(tail -n 1 "$WORK/keys.err")"

  api POST /v2/nvcf/functions "$KEY" "{\"name\":\"smoke-echo\",\"inferenceUrl\":\"/echo\",
    \"containerImage\":\"$IMAGE\",\"health\":{\"protocol\":\"HTTP\",\"uri\":\"/health\",
    \"port\":8000,\"timeout\":\"PT2S\",\"expectedStatusCode\":200}}"
  expect 200 "register"
  local fid vid
  fid=$(json_field id)
  vid=$(json_field versionId)
  { [ -n "$fid" ] && [ -n "$vid" ]; } || fail "register: no id/versionId in $BODY"
  say "register: function $fid version $vid"

  api POST "/v2/nvcf/deployments/functions/$fid/versions/$vid" "$KEY" \
    '{"deploymentSpecifications":[{"gpu":"CPU","instanceType":"CPU.x1","minInstances":1,"maxInstances":1}]}'
  expect 200 "deploy"
  wait_active "$fid" "$vid"
  invoke "$fid" "$invoker" "first-$$"
  say "invoke: 200 with the key from 'keys create'"

  stop_server
  start_server
  assert_no_outside_python
  api GET /v2/nvcf/functions
  expect 200 "list functions after the restart"
  grep -q "\"id\":\"$fid\"" <<<"$BODY" || fail "function $fid is gone after the restart: $BODY"
  say "restart: function $fid still listed"
  wait_active "$fid" "$vid"
  invoke "$fid" "$KEY" "second-$$"
  say "invoke after the restart: 200"
  stop_server
  say "PASS ($((SECONDS - step_started)) s)"
}

main
