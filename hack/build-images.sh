#!/usr/bin/env bash
# Builds the project's two images fully offline (no image registry is reachable here): FROM the
# locally made base (hack/build-base-image.sh), tagged with pyproject's version (never `latest`):
#   modeldeploy-server:<version>    from Dockerfile.server
#   modeldeploy-operator:<version>  from Dockerfile.operator
# Both builds run in parallel (BuildKit of Debian's dockerd 20.10; RUN steps reach PyPI through the
# default bridge). Then the images are loaded where the cluster's runtime finds them:
#   - the real node's containerd (hack/real-node.sh), when its socket answers:
#       docker save | ctr -n k8s.io images import -
#   - a kind cluster with --kind NAME: kind load docker-image
#
# usage: hack/build-images.sh [--kind NAME] [--no-load] [server] [operator]
#        prints the built image references, one a line, last on stdout
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/util.sh"
MD_TAG=images
LOGS="$CACHE/images/logs"
CTRD_SOCK="${REAL_NODE_CONTAINERD:-/run/modeldeploy/node/containerd.sock}"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

kind_cluster="" load=1 which=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kind) kind_cluster="$2"; shift ;;
    --no-load) load=0 ;;
    server|operator) which+=("$1") ;;
    *) echo "usage: $0 [--kind NAME] [--no-load] [server] [operator]" >&2; exit 2 ;;
  esac
  shift
done
[ "${#which[@]}" -gt 0 ] || which=(server operator)

version="$(md::project_version)"
mkdir -p "$LOGS"
"$HACK/docker-up.sh" >&2
base="$("$HACK/build-base-image.sh" | tail -1)"

t0=$(date +%s)
pids=() images=()
for w in "${which[@]}"; do
  df="$ROOT/Dockerfile.$w"
  [ -f "$df" ] || { md::log "$df does not exist (yet); skipping $w"; continue; }
  img="modeldeploy-$w:$version"
  images+=("$img")
  md::log "building $img from Dockerfile.$w (FROM $base); log $LOGS/$w.log"
  (
    start=$(date +%s)
    if DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain -f "$df" --build-arg "BASE_IMAGE=$base" \
         --label "org.opencontainers.image.version=$version" -t "$img" "$ROOT" >"$LOGS/$w.log" 2>&1; then
      md::log "built $img in $(( $(date +%s) - start ))s"
    else
      md::log "FAILED: $img; last lines of $LOGS/$w.log:"; tail -25 "$LOGS/$w.log" >&2; exit 1
    fi
  ) &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ "$rc" = 0 ] || exit 1
md::log "images built in $(( $(date +%s) - t0 ))s"

if [ "$load" = 1 ] && [ "${#images[@]}" -gt 0 ]; then
  if [ -n "$kind_cluster" ]; then
    for img in "${images[@]}"; do md::log "kind load $img -> $kind_cluster"; kind load docker-image --name "$kind_cluster" "$img" >&2; done
  fi
  if [ -S "$CTRD_SOCK" ] && ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then
    for img in "${images[@]}"; do md::ctr_import "$CTRD_SOCK" "$img"; done
  fi
fi
printf '%s\n' "${images[@]}"
