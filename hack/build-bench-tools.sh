#!/usr/bin/env bash
# Builds the compiled load generators that bench/serve_bench.py drives its servers with when they
# are there (--compiled-clients): ghz (gRPC) and hey (HTTP/1.1), from the Go module proxy at
# pinned releases, cached by version. On 2 cores a Python client (grpc.aio above all) can spend
# as much CPU as the server it measures; the compiled clients tell whether a figure is the
# client's or the server's. Only the benchmark needs them: the tests don't.
#
# usage: hack/build-bench-tools.sh     prints the directory holding ghz and hey, last on stdout
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/util.sh"
MD_TAG=bench-tools
GHZ_VERSION=v0.120.0
HEY_VERSION=v0.1.4
OUT="$CACHE/bench-tools/ghz-$GHZ_VERSION-hey-$HEY_VERSION"

command -v go >/dev/null || md::die "no go on PATH (the Go toolchain builds these tools)"
mkdir -p "$OUT"
for pkg in "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" "github.com/rakyll/hey@$HEY_VERSION"; do
  name=${pkg%@*}
  name=${name##*/}
  [ -x "$OUT/$name" ] && continue
  md::log "building $pkg (Go module proxy; a few minutes on 2 cores)"
  t0=$SECONDS
  GOFLAGS='' CGO_ENABLED=0 GOBIN="$OUT" go install -trimpath -ldflags '-s -w' "$pkg" >&2
  md::log "built $name in $((SECONDS - t0))s"
done
echo "$OUT"
