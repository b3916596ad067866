#!/usr/bin/env bash
# Installs nvcf-lite into .venv and serves it; arguments go to `nvcf-lite serve`:
#   scripts/install-and-serve.sh [--port 9000] [--config FILE]
# Runs from the repository root, so ./config.toml and ./data are the repository's.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian's python3 cannot create a venv until python3-venv is installed.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing python3-venv ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
  else
    echo "error: '$PYTHON -m venv' needs python3-venv: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi

if ! { [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys' 2>/dev/null; }; then
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi
echo "installing nvcf-lite into .venv ..."
.venv/bin/python -m pip install -q --disable-pip-version-check .
exec .venv/bin/nvcf-lite serve "$@"
