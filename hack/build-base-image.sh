#!/usr/bin/env bash
# Builds the project's own base image without any image registry: no registry is reachable here,
# so `FROM debian` can't be pulled. debootstrap (variant minbase) makes a Debian bookworm rootfs
# with python3, python3-venv and ca-certificates from Debian's package mirror, the rootfs is cached
# as a tarball under ~/.cache/modeldeploy/base/, and `docker import` turns it into
# modeldeploy-base-raw:<BASE_TAG>. A second, tiny `docker build` adds this host's extra CA
# certificates (/usr/local/share/ca-certificates/*.crt) to the trust store and points pip/requests
# at the system bundle: the registries here are reached through a TLS-intercepting egress proxy
# whose CA only the host trusts, and without it every `pip install` in a RUN step fails with
# CERTIFICATE_VERIFY_FAILED. That layer is modeldeploy-base:<BASE_TAG>. Dockerfile.server / Dockerfile.operator build FROM it via
# --build-arg BASE_IMAGE=... (hack/build-images.sh passes it).
#
# Idempotent: skips everything when the image exists, skips debootstrap when the tarball exists.
# Bump BASE_TAG when the recipe below changes (it is the cache key).
# usage: hack/build-base-image.sh            prints the image reference as its last line
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/util.sh"
MD_TAG=base
BASE_TAG="${BASE_TAG:-bookworm-1}"
BASE_IMAGE="modeldeploy-base:$BASE_TAG"
RAW_IMAGE="modeldeploy-base-raw:$BASE_TAG"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,ca-certificates"
dir="$CACHE/base/$BASE_TAG"
tarball="$dir/rootfs.tar"
log="$dir/build.log"
mkdir -p "$dir"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

"$HACK/docker-up.sh" >&2

if ! "$DOCKER" image inspect "$RAW_IMAGE" >/dev/null 2>&1; then
if [ ! -s "$tarball" ]; then
  md::ensure_packages debootstrap:debootstrap
  rootfs="$dir/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  md::log "debootstrap $SUITE ($PACKAGES) into $rootfs; log $log"
  start=$(date +%s)
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >>"$log" 2>&1 \
    || { tail -20 "$log" >&2; exit 1; }
  # apt sources for RUN steps that install more packages (they `apt-get update` first)
  md::render "$HACK/base/sources.list.in" "$rootfs/etc/apt/sources.list" MIRROR="$MIRROR" SUITE="$SUITE"
  # keep the image small and reproducible-ish: no apt lists, no downloaded .debs, no logs
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache "$rootfs"/debootstrap
  : > "$rootfs/etc/machine-id"
  printf 'modeldeploy\n' > "$rootfs/etc/hostname"
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  md::log "rootfs done in $(( $(date +%s) - start ))s ($(du -h "$tarball" | cut -f1))"
fi

md::log "docker import $tarball as $RAW_IMAGE"
"$DOCKER" import \
  -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["python3"]' \
  -m "debootstrap --variant=minbase $SUITE +$PACKAGES ($(date -u +%Y-%m-%d))" \
  "$tarball" "$RAW_IMAGE" >&2
fi

# Local CA layer (always run: docker's build cache makes it a no-op unless the CAs changed)
ctx="$dir/ca-context"
rm -rf "$ctx"; mkdir -p "$ctx/ca"
cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
md::render "$HACK/base/ca-layer.Dockerfile.in" "$ctx/Dockerfile" RAW_IMAGE="$RAW_IMAGE"
md::log "adding $(find "$ctx/ca" -name '*.crt' | wc -l) local CA certificate(s): $BASE_IMAGE"
DOCKER_BUILDKIT=0 "$DOCKER" build -q -t "$BASE_IMAGE" "$ctx" >&2
echo "$BASE_IMAGE"
