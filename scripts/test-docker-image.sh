#!/usr/bin/env bash
# Builds the root Dockerfile without a registry and runs the image the documented way.
#
#   scripts/test-docker-image.sh [path/to/nvcf-lite]         # default dist/nvcf-lite
#
# The base image is made here: `docker import` of a root filesystem holding the host's glibc
# (the libraries the one-file executable links and those PyInstaller leaves to the system, as
# debian:12-slim has them), zlib, /etc basics and /tmp; it is kept between runs, tagged by a hash
# of its files. Then, on the built image:
#   - `nvcf-lite gpus` (and /health) print the no-GPU message, which names `--gpus all`;
#   - serve with no data mount, with an anonymous volume and with another host path: refused,
#     with the -v that fixes it;
#   - serve as documented (socket, --network host, data dir at the same path): /health, the
#     admin key in `docker logs`, the echo function deploys as a sibling container, an
#     invocation answers 200, its secrets.json is there, a large result (over
#     invocation.max_response_bytes, and large-output files) is a 302 whose zip downloads;
#   - `docker stop` ends it cleanly (the executable is PID 1), `docker start`: the function is
#     still listed.
# Uses curl and the docker CLI; removes what it made but the cached base image.
set -euo pipefail
# shellcheck source=scripts/loopback.sh
source "$(dirname "$0")/loopback.sh"

HERE=$(cd "$(dirname "$0")/.." && pwd)
SOURCE=$(realpath "${1:-$HERE/dist/nvcf-lite}")
ECHO_IMAGE=nvcf-lite-test/echo:1
BASE_REPO=nvcf-lite-test/exe-base
IMAGE="nvcf-lite-test/image:$$"
NAME="nvcf-lite-image-test-$$"
NAMESPACE="image-test-$$"
WORK=$(mktemp -d /tmp/nvcf-lite-image.XXXXXX)
DATA=$WORK/data # a host path, mounted at the same path
PORT=""
MAX_RESPONSE=65536
started_all=$SECONDS

say() { echo "image-test: $*"; }
fail() {
  echo "image-test: FAIL: $*" >&2
  if docker container inspect "$NAME" >/dev/null 2>&1; then
    echo "image-test: --- docker logs $NAME (last 40 lines) ---" >&2
    docker logs --tail 40 "$NAME" >&2 || true
  fi
  exit 1
}

cleanup() {
  local rc=$? ids
  ids=$(docker ps -aq --filter "label=nvcf-lite.namespace=$NAMESPACE" 2>/dev/null || true)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker rm -f $ids >/dev/null || rc=1
  docker rm -f -v "$NAME" >/dev/null 2>&1 || true
  docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT


# -- the base image ------------------------------------------------------------------------------

# The host files of the base image: the executable's libraries (ldd), the rest of glibc next to
# its libc.so.6 (PyInstaller never bundles those), and what a Debian image has in /etc.
base_files() {
  local libc dir name
  ldd "$SOURCE" | grep -o '/[^ ]*' | sort -u
  libc=$(ldd "$SOURCE" | grep -o '/[^ ]*/libc\.so\.6' | head -n 1)
  [ -n "$libc" ] || fail "ldd finds no libc.so.6 for $SOURCE"
  dir=$(dirname "$libc")
  for name in libm.so.6 libmvec.so.1 librt.so.1 libutil.so.1 libresolv.so.2 libanl.so.1 \
    libnss_files.so.2 libnss_dns.so.2 libthread_db.so.1 libcrypt.so.1 libBrokenLocale.so.1; do
    [ -e "$dir/$name" ] && echo "$dir/$name"
  done
  for name in /etc/debian_version /etc/os-release /etc/ld.so.conf /etc/ld.so.conf.d/*.conf; do
    [ -f "$name" ] && echo "$name"
  done
  return 0
}

make_base() {
  local files hash stage
  mapfile -t files < <(base_files)
  hash=$(sha256sum "${files[@]}" | sha256sum | cut -c1-16)
  BASE_IMAGE="$BASE_REPO:$hash"
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE (cached)"
    return
  fi
  stage=$WORK/rootfs
  mkdir -p "$stage"/{tmp,root,etc,usr/local/bin,var/lib}
  chmod 1777 "$stage/tmp"
  cp -L --parents "${files[@]}" "$stage/"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$stage/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$stage/etc/nsswitch.conf"
  tar -C "$stage" --numeric-owner --owner=0 --group=0 -c . |
    docker import --change "LABEL nvcf-lite.test-base-hash=$hash" - "$BASE_IMAGE" >/dev/null
  rm -rf "$stage"
  say "base image $BASE_IMAGE made: ${#files[@]} host files, $(image_mb "$BASE_IMAGE") MB"
  # Older bases of this script are no longer needed.
  docker images --format '{{.Repository}}:{{.Tag}}' "$BASE_REPO" | grep -vx "$BASE_IMAGE" |
    xargs -r docker image rm >/dev/null 2>&1 || true
}

image_mb() {
  echo $(($(docker image inspect -f '{{.Size}}' "$1") / 1000000))
}

build_image() {
  local ctx=$HERE started=$SECONDS
  if [ "$SOURCE" != "$HERE/dist/nvcf-lite" ]; then
    # Another executable: the repository's Dockerfile and .dockerignore beside it.
    ctx=$WORK/context
    mkdir -p "$ctx/dist"
    cp "$HERE/Dockerfile" "$HERE/.dockerignore" "$ctx/"
    cp "$SOURCE" "$ctx/dist/nvcf-lite"
  fi
  # The legacy builder (Docker 20.10 without buildx); its deprecation notice is not news.
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ctx" \
    >"$WORK/build.log" 2>&1 || fail "docker build failed: $(cat "$WORK/build.log")"
  say "built $IMAGE in $((SECONDS - started)) s: $(image_mb "$IMAGE") MB" \
    "(base $(image_mb "$BASE_IMAGE") MB + the executable)"
}

# -- runs ------------------------------------------------------------------------------------

# Without --gpus all there is no NVML in the container: `gpus` says so and lists the CPU type.
check_gpus_message() {
  local out
  out=$(docker run --rm "$IMAGE" gpus 2>&1) || fail "nvcf-lite gpus in the image failed: $out"
  grep -q "NVML not available" <<<"$out" || fail "gpus: no NVML message: $out"
  grep -qF "no NVIDIA driver in this container (start it with \`docker run --gpus all\`" <<<"$out" ||
    fail "gpus: the message does not say --gpus all: $out"
  grep -q "CPU: CPU.x1" <<<"$out" || fail "gpus: no CPU instance type: $out"
  say "gpus (no --gpus all): $(grep -m 1 "NVML" <<<"$out")"
}

# refused WHAT FIX ARGS...: the server must exit 2 at once, saying WHAT and showing FIX.
refused() {
  local what=$1 fix=$2 out rc=0
  shift 2
  out=$(timeout 60 docker run --rm --network host -v /var/run/docker.sock:/var/run/docker.sock \
    -e NVCF_LITE_STORE__DATA_DIR="$DATA" -e NVCF_LITE_DOCKER__NAMESPACE="$NAMESPACE" \
    "$@" "$IMAGE" 2>&1) || rc=$?
  [ "$rc" = 2 ] || fail "expected a refusal (exit 2) with $*, got exit $rc: $out"
  grep -qF "$what" <<<"$out" || fail "the refusal does not say '$what': $out"
  grep -qF -- "$fix" <<<"$out" || fail "the refusal does not show '$fix': $out"
  say "refused (${*:-no data mount}): $what"
}

check_refusals() {
  local other=$WORK/elsewhere
  mkdir -p "$DATA" "$other"
  local fix="-v $DATA:$DATA -e NVCF_LITE_STORE__DATA_DIR=$DATA"
  refused "the data directory $DATA is not mounted from the host" "$fix"
  refused "is an anonymous Docker volume" "$fix" -v "$DATA"
  refused "is the host's $other mounted at $DATA, not the same path" \
    "-v $other:$other -e NVCF_LITE_STORE__DATA_DIR=$other" -v "$other:$DATA"
  # data_dir right, but the in-memory secrets folder (docker.secrets_dir) is the container's own
  refused "the secrets folder /run/nvcf-lite/secrets (docker.secrets_dir) is not mounted" \
    "-v /run/nvcf-lite:/run/nvcf-lite" -v "$DATA:$DATA"
  [ -z "$(ls -A "$DATA")" ] || fail "a refused start wrote into $DATA: $(ls -A "$DATA")"
}

# api METHOD URL-PATH [JSON BODY]: sets STATUS, BODY and HEADERS.
api() {
  local method=$1 path=$2 data=${3:-}
  local args=(-sS -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' -X "$method"
    -H "Authorization: Bearer $KEY")
  [ -z "$data" ] || args+=(-H 'Content-Type: application/json' --data "$data")
  STATUS=$(curl "${args[@]}" "http://127.0.0.1:$PORT$path") || fail "curl $method $path failed"
  BODY=$(cat "$WORK/body")
  HEADERS=$(tr -d '\r' <"$WORK/headers")
}


# wait_health: 0 once /health answers 200; 1 if the container exited because its port was
# taken meanwhile; fails on anything else.
wait_health() {
  local started=$SECONDS
  until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null; do
    if [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" != true ]; then
      docker logs "$NAME" 2>&1 | grep -q "Address already in use" && return 1
      fail "the container exited before answering /health"
    fi
    [ $((SECONDS - started)) -lt 60 ] || fail "no /health 200 within 60 s"
    sleep 0.2
  done
  say "/health 200 on 127.0.0.1:$PORT after $((SECONDS - started)) s"
}

serve_documented() {
  local attempt
  for attempt in 1 2 3; do
    PORT=$(free_port)
    docker run -d --name "$NAME" --network host \
      -v /var/run/docker.sock:/var/run/docker.sock \
      -v "$DATA:$DATA" -e NVCF_LITE_STORE__DATA_DIR="$DATA" -v /run/nvcf-lite:/run/nvcf-lite \
      -e NVCF_LITE_SERVER__PORT="$PORT" -e NVCF_LITE_DOCKER__NAMESPACE="$NAMESPACE" \
      -e NVCF_LITE_INVOCATION__MAX_RESPONSE_BYTES="$MAX_RESPONSE" \
      -e NVCF_LITE_SCHEDULER__TICK_INTERVAL_S=0.5 -e NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S=0.5 \
      "$IMAGE" >/dev/null
    wait_health && break
    say "port $PORT was taken meanwhile (attempt $attempt)"
    docker rm -f "$NAME" >/dev/null
    [ "$attempt" -lt 3 ] || fail "no port to listen on after 3 attempts"
  done
  local health
  health=$(curl -fsS "http://127.0.0.1:$PORT/health")
  grep -q '"docker":{"status":"ok"' <<<"$health" || fail "/health: the socket is not usable: $health"
  grep -qF -- '--gpus all' <<<"$health" || fail "/health: no --gpus all advice: $health"
  local started=$SECONDS
  KEY=""
  while [ -z "$KEY" ]; do
    KEY=$(docker logs "$NAME" 2>&1 | grep -o 'nvapi-[A-Za-z0-9_-]\{64\}' | head -n 1 || true)
    [ -n "$KEY" ] || [ $((SECONDS - started)) -lt 20 ] || fail "no admin key in docker logs"
    [ -n "$KEY" ] || sleep 0.2
  done
  say "admin key ${KEY:0:12}... found in docker logs"
}

deploy_echo() {
  local health='{"protocol":"HTTP","uri":"/health","port":8000,"timeout":"PT2S","expectedStatusCode":200}'
  api POST /v2/nvcf/functions "{\"name\":\"image-echo\",\"inferenceUrl\":\"/echo\",
    \"containerImage\":\"$ECHO_IMAGE\",\"health\":$health,
    \"secrets\":[{\"name\":\"IMAGE_TEST\",\"value\":\"secret-$$\"}]}"
  expect 200 "register"
  FID=$(json_field id)
  VID=$(json_field versionId)
  { [ -n "$FID" ] && [ -n "$VID" ]; } || fail "register: no id/versionId in $BODY"
  api POST "/v2/nvcf/deployments/functions/$FID/versions/$VID" \
    '{"deploymentSpecifications":[{"gpu":"CPU","instanceType":"CPU.x1","minInstances":1,"maxInstances":1}]}'
  expect 200 "deploy"
  wait_active "$FID" "$VID"
  local sibling
  sibling=$(docker ps -q --filter "label=nvcf-lite.namespace=$NAMESPACE" \
    --filter "label=nvcf-lite.function-id=$FID")
  [ -n "$sibling" ] || fail "no sibling container for $FID on the host's engine"
  say "echo function $FID runs as sibling container $sibling"
}

# The zip behind a 302's Location downloads (signed URL, no key) and holds NAME.
download_zip() {
  local name=$1 location
  location=$(grep -i '^location:' <<<"$HEADERS" | cut -d' ' -f2-)
  [ -n "$location" ] || fail "a 302 without Location: $HEADERS"
  curl -fsS -o "$WORK/result.zip" "$location" || fail "the result zip did not download"
  [ "$(head -c 2 "$WORK/result.zip")" = PK ] || fail "the download is no zip"
  grep -qa "$name" "$WORK/result.zip" || fail "the zip holds no $name"
  say "  zip $(stat -c %s "$WORK/result.zip") bytes holds $name"
}

invocations() {
  api POST "/v2/nvcf/pexec/functions/$FID" '{"readSecrets": true, "hello": "image"}'
  expect 200 "invoke"
  grep -q '"hello"' <<<"$BODY" || fail "the echo answer lacks the request: $BODY"
  grep -q "secret-$$" <<<"$BODY" || fail "/var/secrets/secrets.json is not the host's: $BODY"
  say "invoke: 200, and the function read its secrets.json"
  api POST "/v2/nvcf/pexec/functions/$FID" '{"largeOutputFiles": {"result.bin": 100000}}'
  expect 302 "large-output files"
  say "large-output files: 302 (/var/inf/response is the host's folder)"
  download_zip result.bin
  api POST "/v2/nvcf/pexec/functions/$FID" "{\"responseBytes\": $((MAX_RESPONSE * 3))}"
  expect 302 "a body over max_response_bytes"
  say "a $((MAX_RESPONSE * 3))-byte answer over max_response_bytes=$MAX_RESPONSE: 302"
  download_zip .response
}

restart() {
  local out started=$SECONDS
  out=$(docker exec "$NAME" nvcf-lite keys list 2>&1) || fail "docker exec ... keys list: $out"
  grep -q "active" <<<"$out" || fail "keys list in the container shows no active key: $out"
  say "docker exec nvcf-lite nvcf-lite keys list: the server's database"
  docker stop -t 30 "$NAME" >/dev/null
  [ "$(docker inspect -f '{{.State.ExitCode}}' "$NAME")" = 0 ] ||
    fail "exit code $(docker inspect -f '{{.State.ExitCode}}' "$NAME") after docker stop"
  [ $((SECONDS - started)) -lt 25 ] || fail "docker stop took $((SECONDS - started)) s"
  say "docker stop: exit 0 after $((SECONDS - started)) s"
  docker start "$NAME" >/dev/null
  wait_health || fail "port $PORT was taken while the container was stopped"
  api GET /v2/nvcf/functions
  expect 200 "list functions after docker start"
  grep -q "\"id\":\"$FID\"" <<<"$BODY" || fail "function $FID is gone after the restart"
  say "docker start: function $FID still listed"
}

main() {
  [ -x "$SOURCE" ] || fail "no executable at $SOURCE (run scripts/build-executable.sh)"
  docker info >/dev/null 2>&1 || fail "no Docker engine answers"
  docker image inspect "$ECHO_IMAGE" >/dev/null 2>&1 ||
    fail "no $ECHO_IMAGE (run .venv/bin/python scripts/build_test_images.py)"
  make_base
  build_image
  check_gpus_message
  check_refusals
  serve_documented
  deploy_echo
  invocations
  restart
  say "PASS ($((SECONDS - started_all)) s)"
}

main
