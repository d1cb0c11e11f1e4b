#!/usr/bin/env bash
# Makes the Python environment the project's commands run in: a venv in .venv with the project
# installed editable with every extra. A fresh machine has nothing but python3, so the demo and
# the test command both start here. Idempotent: a venv whose install stamp is newer than
# pyproject.toml is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. hack/lib/util.sh

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "modeldeploy needs Python 3.11 or newer as '$PY' (set PYTHON=...)" >&2
  exit 1
fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  md::apt_install python3-venv
fi

stamp=.venv/.modeldeploy-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
