#!/usr/bin/env bash
# The README's main command: from a fresh machine to a prediction served by a ModelDeployment.
# Brings up a cluster (kind when `kind` and a working Docker are present, else the project's own
# local cluster with a real node), builds and loads the images, installs the CRD and operator from
# deploy/, deploys the example model store and examples/iris.yaml, waits for Ready and prints a
# prediction made through the Service. The cluster is left running for you to explore.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

bash hack/bootstrap.sh
mkdir -p .local-cluster

if [ "${MODELDEPLOY_DEMO_CLUSTER:-auto}" != local ] && command -v kind >/dev/null 2>&1 \
   && docker info >/dev/null 2>&1; then
  say "kind is here: using a kind cluster 'modeldeploy'"
  kind get clusters 2>/dev/null | grep -qx modeldeploy || kind create cluster --name modeldeploy --wait 120s
  export KUBECONFIG="$PWD/.local-cluster/kind-modeldeploy.kubeconfig"
  kind get kubeconfig --name modeldeploy > "$KUBECONFIG"
  bash hack/build-k8s.sh core >/dev/null
  say "building the images and loading them into kind"
  bash hack/build-images.sh --kind modeldeploy
else
  say "no kind: starting the project's local cluster with a real node (hack/local-cluster.sh)"
  KUBECONFIG="$(bash hack/local-cluster.sh up --real-node | tail -n 1)"
  export KUBECONFIG
  say "building the images and loading them into the node's containerd"
  bash hack/build-images.sh
fi
BIN="$(bash hack/build-k8s.sh core | tail -n 1)"
kubectl() { "$BIN/kubectl" "$@"; }

say "installing the CRD and the operator (kubectl apply -k deploy/)"
kubectl apply -k deploy/
kubectl rollout status -n modeldeploy-system deployment/modeldeploy-operator --timeout=300s

say "deploying the example model store and examples/iris.yaml"
kubectl apply -f examples/model-store.yaml
kubectl rollout status deployment/model-store --timeout=300s
kubectl apply -f examples/iris.yaml
kubectl wait --for=condition=Ready md/iris --timeout=300s
kubectl get md iris

say "a prediction through the Service http://iris.default.svc.cluster.local (from a pod)"
kubectl delete pod iris-demo-client --ignore-not-found >/dev/null
kubectl run iris-demo-client --image=modeldeploy-server:0.1.0 --image-pull-policy=IfNotPresent \
  --restart=Never --command -- python3 -c '
import json, urllib.request
body = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
req = urllib.request.Request("http://iris.default.svc.cluster.local/v1/models/iris:predict",
    data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    print("POST /v1/models/iris:predict", json.dumps(body))
    print("->", r.status, r.read().decode(), "(track:", r.headers["X-Modeldeploy-Track"] + ")")
' >/dev/null
for _ in $(seq 120); do
  phase=$(kubectl get pod iris-demo-client -o jsonpath='{.status.phase}')
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 1
done
kubectl logs iris-demo-client
kubectl delete pod iris-demo-client --wait=false >/dev/null
[ "$phase" = Succeeded ] || { echo "the prediction request failed (pod phase $phase)" >&2; exit 1; }

say "done. The cluster is still running:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  $BIN/kubectl get md"
echo "  hack/local-cluster.sh down    # (local cluster) stop everything"
