#!/usr/bin/env bash
# Generates the Python code of the Open Inference Protocol's gRPC service from the checked-in
# proto (serving_image/modeldeploy_server/oip/grpc_predict_v2.proto, KServe's, unchanged):
# grpc_predict_v2_pb2.py (messages), grpc_predict_v2_pb2.pyi (their types, for mypy) and
# grpc_predict_v2_pb2_grpc.py (the servicer base and the client stub). The generated files are
# checked in; tests/unit/server/test_server_grpc.py runs this script into a temporary directory
# and fails when the result differs from them, so the proto and the code can't drift.
#
# The proto is compiled under its bare name, as KServe compiles it: protobuf keeps one registry
# of proto files per process, and a process that imports both kserve and this package (the test
# suite, a client script) loads the same "grpc_predict_v2.proto" twice, which protobuf accepts
# only when the two are identical. The code embeds the grpcio-tools and protobuf versions that
# generated it and refuses older runtimes, which is why pyproject.toml pins grpcio-tools and
# gives grpcio and protobuf the matching lower bounds: regenerate after bumping the pin.
#
# usage: hack/gen-proto.sh [OUT_DIR]   (default: the oip package itself)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "$0")/lib/util.sh"

OIP="$ROOT/serving_image/modeldeploy_server/oip"
OUT="${1:-$OIP}"
mkdir -p "$OUT"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || md::die "no $PY: run hack/bootstrap.sh first"

"$PY" -m grpc_tools.protoc -I "$OIP" \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  grpc_predict_v2.proto
# The gRPC plugin imports the messages as a top-level module (right only when OUT is on
# sys.path); inside the package they are a sibling.
sed -i 's/^import grpc_predict_v2_pb2 as /from . import grpc_predict_v2_pb2 as /' \
  "$OUT/grpc_predict_v2_pb2_grpc.py"
md::log "generated $OUT/grpc_predict_v2_pb2{.py,.pyi,_grpc.py}"
