#!/usr/bin/env bash
# The project's one test command (the README's second set-up command, and what CI runs): prepares
# everything on a fresh machine (Python env, Kubernetes binaries), then runs the linters, the type
# checker, the layering contracts, shellcheck over the scripts and the whole pytest pyramid — unit,
# integration against a real local control plane, and e2e on a cluster with a real node.
#
# e2e runs against MODELDEPLOY_E2E_KUBECONFIG when it is set (a cluster that has the images, e.g.
# kind via hack/e2e-kind.sh); otherwise, as root on Linux, this script builds the images and brings
# up the project's local cluster with a real node for it (and stops it again if it started it).
# MODELDEPLOY_E2E=0 skips e2e.
#
# usage: hack/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. hack/lib/util.sh

bash hack/bootstrap.sh
bash hack/build-k8s.sh core >/dev/null
# Traefik and the Gateway API CRDs for the gateway tests: cached here so no test downloads.
bash hack/build-gateway.sh >/dev/null

# The scripts are code the tests stand on: every finding (style included) fails the run. -x follows
# the `source` of hack/lib/util.sh, so a misused helper is caught in the script that misuses it.
# promtool validates the shipped alert rules; the Prometheus server beside it runs the alert test.
md::ensure_packages shellcheck:shellcheck promtool:prometheus prometheus:prometheus
echo ">> shellcheck"
shellcheck -x hack/*.sh hack/lib/*.sh .ci/run

export PATH="$PWD/.venv/bin:$PATH"
echo ">> ruff"
ruff check .
ruff format --check .
echo ">> mypy (strict)"
mypy
echo ">> import-linter"
lint-imports

# pytest's exit code 5 means it ran nothing: a failure here, the suite must run something.
run_pytest() {
  local rc=0
  pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    return 1
  fi
  return "$rc"
}

echo ">> pytest: unit and integration"
run_pytest --ignore=tests/e2e "$@"

if [ "${MODELDEPLOY_E2E:-1}" = 0 ]; then
  echo ">> e2e skipped (MODELDEPLOY_E2E=0)"
  exit 0
fi
started_cluster=0
if [ -z "${MODELDEPLOY_E2E_KUBECONFIG:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo ">> e2e skipped: the local real node needs root (or set MODELDEPLOY_E2E_KUBECONFIG)"
    exit 0
  fi
  echo ">> e2e: images and the local cluster with a real node"
  bash hack/build-k8s.sh all >/dev/null
  bash hack/build-images.sh
  bash hack/local-cluster.sh status >/dev/null 2>&1 || started_cluster=1
  MODELDEPLOY_E2E_KUBECONFIG="$(bash hack/local-cluster.sh up --real-node | tail -n 1)"
  export MODELDEPLOY_E2E_KUBECONFIG
fi
echo ">> pytest: e2e on $MODELDEPLOY_E2E_KUBECONFIG"
rc=0
run_pytest tests/e2e "$@" || rc=$?
if [ "$started_cluster" = 1 ]; then
  bash hack/local-cluster.sh down || echo "warning: hack/local-cluster.sh down failed" >&2
fi
exit "$rc"
