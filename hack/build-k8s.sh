#!/usr/bin/env bash
# Builds the pinned Kubernetes release's binaries (and kwok) from the Go module proxy, once, into a
# cache outside the repo. No image registry or release download is reachable here, so `go build`
# of k8s.io/kubernetes is the only way to get real control-plane binaries. k8s.io/kubernetes
# replaces its staging modules with local paths, which a dependent module can't follow, so a small
# wrapper module pins each staging module to the matching v0.X.Y tag instead.
#
# etcd is built the same way (a wrapper module: go.etcd.io/etcd/server/v3 has replace directives
# that `go install` refuses). Debian's etcd 3.4 lacks the watch-progress requests kube-apiserver
# 1.34 relies on for watch-list streams (clients such as kwok then retry in a loop), so the control
# plane runs the etcd release Kubernetes 1.34 is tested with (3.6.4, kubeadm's default).
#
# usage: hack/build-k8s.sh [core|node|all]   (core: apiserver, controller-manager, scheduler,
#        kubectl, kwok, etcd; node: kubelet, kube-proxy). Prints the bin dir last.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.4}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
BIN="$CACHE/k8s-$K8S_VERSION/bin"
what="${1:-core}"

core=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
node=(kubelet kube-proxy)
case "$what" in
  core) want=("${core[@]}") ;;
  node) want=("${node[@]}") ;;
  all) want=("${core[@]}" "${node[@]}") ;;
  *) echo "usage: $0 [core|node|all]" >&2; exit 2 ;;
esac

missing=()
for b in "${want[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done

mkdir -p "$BIN"
if [ "${#missing[@]}" -gt 0 ]; then
  wrap="$CACHE/k8s-$K8S_VERSION/wrapper"
  mkdir -p "$wrap"
  staging_ver="v0.${K8S_VERSION#v1.}"
  {
    echo "module modeldeploy.local/k8sbuild"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
      cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
      kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
      mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
      echo "	k8s.io/$m => k8s.io/$m $staging_ver"
    done
    echo ")"
  } > "$wrap/go.mod"
  pkgs=()
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=${staging_ver#v0.}"
    ldflags+=" -X $p.gitTreeState=clean"
  done
  ldflags="${ldflags//.gitMinor=${staging_ver#v0.}/.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)}"
  echo ">> building ${missing[*]} ($K8S_VERSION) into $BIN; this takes many minutes on 2 cores" >&2
  (cd "$wrap" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}")
fi

if [ "$what" != node ] && [ ! -x "$BIN/kwok" ]; then
  echo ">> building kwok $KWOK_VERSION" >&2
  GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi

if [ "$what" != node ] && [ ! -x "$BIN/etcd" ]; then
  echo ">> building etcd $ETCD_VERSION" >&2
  ewrap="$CACHE/etcd-$ETCD_VERSION/wrapper"
  mkdir -p "$ewrap"
  {
    echo "module modeldeploy.local/etcdbuild"
    echo
    echo "go 1.24.0"
    echo
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo
    echo "replace ("
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      echo "	go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION"
    done
    echo ")"
  } > "$ewrap/go.mod"
  (cd "$ewrap" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
    -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
fi
echo "$BIN"
