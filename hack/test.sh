#!/usr/bin/env bash
# The project's one test command (the README's second set-up command, and what CI runs): prepares
# everything on a fresh machine (Python env, Kubernetes binaries), then runs the linters, the type
# checker, the layering contracts and the whole pytest pyramid — unit, integration against a real
# local control plane, and e2e when a cluster with real nodes is reachable.
#
# usage: hack/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/bootstrap.sh
bash hack/build-k8s.sh core >/dev/null

export PATH="$PWD/.venv/bin:$PATH"
echo ">> ruff"
ruff check .
ruff format --check .
echo ">> mypy (strict)"
mypy
echo ">> import-linter"
lint-imports
echo ">> pytest"
set +e
pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, the suite must run something" >&2
  exit 1
fi
exit "$rc"
