#!/usr/bin/env bash
# Builds dist/nvcf-lite: one self-contained linux x86_64 file (PyInstaller one-file) holding the
# interpreter, every dependency and the package's data files. Prints its size and its start-up
# time to the first /health 200 (three starts, each on a free loopback port with a fresh data_dir).
#
#   scripts/build-executable.sh            # PYTHON=python3.11 to build with another interpreter
#
# The build venv is .venv-build (the runtime dependencies and the `build` extra, exact pins from
# pyproject.toml, from PyPI); it is reused until pyproject.toml or the interpreter changes. The
# package itself is analysed from this source tree, so every file under nvcf_lite/ goes in.
set -euo pipefail
# shellcheck source=scripts/loopback.sh
source "$(dirname "$0")/loopback.sh"

cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=.venv-build
EXE=dist/nvcf-lite

die() {
  echo "build-executable: error: $*" >&2
  exit 1
}

ensure_venv() {
  local stamp="$VENV/.nvcf-lite-build" want
  command -v "$PYTHON" >/dev/null || die "no $PYTHON on PATH (set PYTHON=)"
  want="$(sha256sum pyproject.toml | cut -d' ' -f1) $(command -v "$PYTHON") $("$PYTHON" -V 2>&1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/pyinstaller" ]; then
    return
  fi
  echo "==> $VENV: $("$PYTHON" -V 2>&1) at $(command -v "$PYTHON")"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed (Debian: apt-get install python3-venv)"
  # The runtime dependencies and the build extra, as pinned (not the package: it is analysed
  # from the source tree).
  "$VENV/bin/python" - >"$VENV/requirements.txt" <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["build"]))
EOF
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$VENV/requirements.txt"
  echo "$want" >"$stamp"
}

ensure_libpython() {
  # PyInstaller bundles the interpreter's shared library; Debian's python3 has it only with the
  # libpython3.X package.
  local probe='from PyInstaller.depend.bindepend import get_python_library_path as p; print(p())'
  if "$VENV/bin/python" -c "$probe" >/dev/null 2>&1; then
    return
  fi
  local pkg
  pkg="libpython$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> apt-get install $pkg (PyInstaller needs the interpreter's shared library)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  fi
  "$VENV/bin/python" -c "$probe" >/dev/null ||
    die "no shared libpython for $PYTHON: install $pkg (Debian) or use a --enable-shared build"
}

build() {
  local started=$SECONDS
  echo "==> pyinstaller packaging/nvcf-lite.spec"
  rm -f "$EXE"
  "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/nvcf-lite.spec
  [ -x "$EXE" ] || die "pyinstaller made no $EXE"
  echo "--- built in $((SECONDS - started)) s"
}


now_ms() { date +%s%3N; }

# One start in a scratch folder: prints the milliseconds from exec to the first /health 200.
time_start() {
  local work=$1 port pid started elapsed=""
  port=$(free_port)
  rm -rf "$work/data"
  : >"$work/config.toml"
  started=$(now_ms)
  (cd "$work" && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" TMPDIR="$work" \
    NVCF_LITE_CONFIG="$work/config.toml" NVCF_LITE_STORE__DATA_DIR="$work/data" \
    NVCF_LITE_SERVER__PORT="$port" NVCF_LITE_DOCKER__NAMESPACE="build-exe-$$" \
    "$ROOT/$EXE" serve) >"$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1500); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then
      elapsed=$(($(now_ms) - started))
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -z "$elapsed" ]; then
    grep -q "Address already in use" "$work/serve.log" && return 75 # taken meanwhile: again
    cat "$work/serve.log" >&2
    die "$EXE serve never answered /health 200 on 127.0.0.1:$port (log above)"
  fi
  echo "$elapsed"
}

measure() {
  local work times=() t
  command -v curl >/dev/null || die "curl is needed to time the start"
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  "$EXE" --version >/dev/null || die "$EXE --version failed"
  local rc retries=0
  while [ "${#times[@]}" -lt 3 ]; do
    rc=0
    t=$(time_start "$work") || rc=$?
    if [ "$rc" = 0 ]; then
      times+=("$t")
    elif [ "$rc" = 75 ] && [ "$retries" -lt 5 ]; then
      retries=$((retries + 1)) # the port was taken between the probe and the bind
    else
      exit "$rc"
    fi
  done
  local sorted
  sorted=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
  echo "==> $EXE: $(stat -c %s "$EXE") bytes ($(du -h "$EXE" | cut -f1)), $("$EXE" --version)"
  echo "==> start-up to the first /health 200: ${times[*]} ms (median ${sorted} ms)"
}

# The executable's answers must be the package's: the same commands, with the same config file
# and environment, run by the executable and by `python -m nvcf_lite` from this source tree,
# print the same and exit the same (each side in a fresh data_dir at the same path).
compare_with_source() {
  local work side
  work=$(mktemp -d)
  : >"$work/config.toml"
  for side in exe source; do
    rm -rf "$work/data"
    for args in "--version" "--help" "serve --help" "keys --help" "gpus" "migrate" "keys list" \
      "keys revoke no-such-key" "keys create --scope no_such_scope" "no-such-command"; do
      echo "\$ nvcf-lite $args"
      local cmd=("$ROOT/$EXE")
      [ "$side" = exe ] || cmd=("$ROOT/$VENV/bin/python" -m nvcf_lite)
      # shellcheck disable=SC2086 # args is a word list
      (cd "$work" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" TMPDIR="$work" \
        PYTHONPATH="$ROOT" NVCF_LITE_CONFIG="$work/config.toml" \
        NVCF_LITE_STORE__DATA_DIR="$work/data" "${cmd[@]}" $args 2>&1) || echo "(exit $?)"
    done >"$work/$side.out"
  done
  if ! diff -u "$work/source.out" "$work/exe.out"; then
    rm -rf "$work"
    die "$EXE answers differently from the package (diff above: - package, + executable)"
  fi
  echo "==> $EXE answers as the package: $(grep -c '^\$ ' "$work/exe.out") commands, same output"
  rm -rf "$work"
}

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "builds linux x86_64 only (here: $(uname -sm))"
ensure_venv
ensure_libpython
build
compare_with_source
measure
