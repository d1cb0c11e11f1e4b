#!/usr/bin/env bash
# Runs the e2e suite on kind, for users whose machines can start kind nodes (Docker with working
# privileged containers, internet for kind's node image). Creates the cluster if it is missing,
# loads the locally built images into it, installs the operator from deploy/ and runs tests/e2e.
#
# usage: hack/e2e-kind.sh [pytest args]      env: KIND_CLUSTER (default modeldeploy)
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${KIND_CLUSTER:-modeldeploy}"
command -v kind >/dev/null || { echo "kind is not installed: https://kind.sigs.k8s.io/" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "kind needs a running Docker engine" >&2; exit 1; }

bash hack/bootstrap.sh
mkdir -p .local-cluster
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 120s
fi
kubeconfig="$PWD/.local-cluster/kind-$cluster.kubeconfig"
kind get kubeconfig --name "$cluster" > "$kubeconfig"
bash hack/build-images.sh --kind "$cluster"
MODELDEPLOY_E2E_KUBECONFIG="$kubeconfig" .venv/bin/pytest tests/e2e "$@"
