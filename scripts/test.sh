#!/usr/bin/env bash
# The test command: lint, format check, types, import layers, then pytest (extra args go to it).
#
#   scripts/test.sh                      # everything except GPU tests
#   scripts/test.sh -x tests/test_config.py
#
# Uses .venv (created when missing) with `pip install -e '.[dev]'`. Docker: started with
# scripts/start-dockerd.sh when NVCF_LITE_REQUIRE_DOCKER=1, when dockerd is installed, or when
# running as root with apt-get (it then installs docker.io); NVCF_LITE_NO_DOCKER=1 skips that.
# Without a daemon Docker tests skip, unless NVCF_LITE_REQUIRE_DOCKER=1 (CI) makes that a failure.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
failed=()

header() { printf '\n==> %s\n' "$*"; }

ensure_venv() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    return
  fi
  header "creating $VENV with $(command -v "$PYTHON")"
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
      "$PYTHON" -m venv "$VENV"
    else
      echo "error: '$PYTHON -m venv' failed; install python3-venv" >&2
      exit 1
    fi
  fi
}

install_project() {
  # Reinstall only when the dependencies changed (the install is editable).
  local stamp="$VENV/.nvcf-lite-install" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  # -I: ignore the cwd, so this finds the installed package (a plain `pip install .` of
  # scripts/install-and-serve.sh replaces the editable one and must be undone).
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
    [ "$("$VENV/bin/python" -I -c 'import nvcf_lite; print(nvcf_lite.__file__)' 2>/dev/null)" \
      = "$PWD/nvcf_lite/__init__.py" ]; then
    return
  fi
  header "pip install -e '.[dev]'"
  local started=$SECONDS
  "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e '.[dev]'
  echo "$want" >"$stamp"
  echo "--- installed ($((SECONDS - started)) s)"
}

docker_answers() {
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
import docker
docker.from_env(timeout=5).ping()
EOF
}

ensure_docker() {
  if [ "${NVCF_LITE_NO_DOCKER:-}" = 1 ] && [ "${NVCF_LITE_REQUIRE_DOCKER:-}" != 1 ]; then
    return
  fi
  if docker_answers; then
    return
  fi
  if [ "${NVCF_LITE_REQUIRE_DOCKER:-}" = 1 ] || command -v dockerd >/dev/null 2>&1 ||
    { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }; then
    header "starting Docker (scripts/start-dockerd.sh)"
    if ! bash scripts/start-dockerd.sh; then
      if [ "${NVCF_LITE_REQUIRE_DOCKER:-}" = 1 ]; then
        echo "error: no Docker daemon and NVCF_LITE_REQUIRE_DOCKER=1" >&2
        exit 1
      fi
      echo "warning: Docker did not start; Docker tests will skip" >&2
    fi
  fi
}

step() {
  local name=$1 started=$SECONDS
  shift
  header "$name"
  if "$@"; then
    echo "--- $name: ok ($((SECONDS - started)) s)"
  else
    echo "--- $name: FAILED ($((SECONDS - started)) s)"
    failed+=("$name")
  fi
}

run_pytest() {
  local rc=0
  "$VENV/bin/pytest" -q -m "not gpu" "$@" || rc=$?
  if [ "$rc" = 5 ]; then
    echo "warning: pytest collected no tests (exit 5); counted as a pass" >&2
    return 0
  fi
  return "$rc"
}

ensure_venv
install_project
ensure_docker
if docker_answers; then
  step "build test images (scripts/build_test_images.py)" \
    "$VENV/bin/python" scripts/build_test_images.py
elif [ "${NVCF_LITE_REQUIRE_DOCKER:-}" = 1 ]; then
  echo "error: no Docker daemon answers and NVCF_LITE_REQUIRE_DOCKER=1" >&2
  exit 1
else
  header "no Docker daemon: Docker tests will skip"
fi

step "ruff check" "$VENV/bin/ruff" check .
step "ruff format --check" "$VENV/bin/ruff" format --check .
step "mypy (strict, nvcf_lite)" "$VENV/bin/mypy"
step "lint-imports" "$VENV/bin/lint-imports"
step "pytest -q -m 'not gpu'${*:+ $*}" run_pytest "$@"

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\n==> FAILED:\n'
  printf '    %s\n' "${failed[@]}"
  exit 1
fi
printf '\n==> all checks passed\n'
