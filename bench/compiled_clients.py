"""Compiled load generators for bench/serve_bench.py: ghz (gRPC) and hey (HTTP/1.1).

On 2 cores the client shares the CPU with the server. bench/loadgen.py keeps the REST client
light (raw asyncio sockets and httptools), but grpc.aio has no light mode: against a bare
grpc.aio echo server (no model) it topped out near 1,000 calls/s at c=32 here, where ghz got
near 3,000. So a gRPC figure measured with it might be the client's. These cells drive the same
servers with compiled clients, REST and gRPC alike, to tell which. (Against servers that
predict, ghz turned out no faster than grpc.aio at c=32 on one connection: the servers set those
figures.) hack/build-bench-tools.sh builds both at pinned releases.

ghz keeps one connection (``--connections 1``), as tritonclient and KServe's client do; hey
opens ``concurrency`` keep-alive connections, as bench/loadgen.py does. Each cell returns req/s,
a bench/loadgen.py ``Result`` (every answered call's latency), so serve_bench.py prints and
compares them as it does its own cells. When a ``-z`` run ends, ghz cuts the calls still in
flight and counts them as Unavailable "closing" errors; those (at most one per worker) are not
the server's and are left out.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from google.protobuf import json_format
from grpc_load import infer_request
from loadgen import Result

REPO = Path(__file__).resolve().parent.parent
PROTO = REPO / "serving_image/modeldeploy_server/oip/grpc_predict_v2.proto"
DEFAULT_DIR = Path.home() / ".cache/modeldeploy/bench-tools/ghz-v0.120.0-hey-v0.1.4"


def tools(directory: Path) -> tuple[Path, Path] | None:
    ghz, hey = directory / "ghz", directory / "hey"
    return (ghz, hey) if ghz.is_file() and hey.is_file() else None


def grpc_request_json(rows: int) -> str:
    """bench/grpc_load.py's ModelInferRequest in protobuf JSON (ghz's -d; bytes are base64)."""
    request = infer_request("iris", rows)
    return json_format.MessageToJson(request, preserving_proto_field_name=True, indent=None)


def run_ghz(ghz: Path, port: int, rows: int, concurrency: int, duration: float) -> Result:
    out = subprocess.run(
        [
            str(ghz), "--insecure", "--proto", str(PROTO),
            "--call", "inference.GRPCInferenceService/ModelInfer",
            "-d", grpc_request_json(rows), "-c", str(concurrency), "--connections", "1",
            "-z", f"{duration}s", "--format", "json", f"127.0.0.1:{port}",
        ],
        capture_output=True, text=True, timeout=duration + 60, check=False,
    )  # fmt: skip
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise RuntimeError(f"ghz failed ({out.returncode}): {out.stderr[-500:]}")
    doc = json.loads(out.stdout)
    codes: dict[str, int] = doc.get("statusCodeDistribution") or {}
    cut = sum(
        n
        for message, n in (doc.get("errorDistribution") or {}).items()
        if "closing" in message or "closed network connection" in message
    )
    failed = sum(n for code, n in codes.items() if code != "OK") - min(cut, concurrency)
    latencies = [d["latency"] / 1e9 for d in doc.get("details") or [] if d["status"] == "OK"]
    return Result(latencies=latencies, errors=failed, elapsed=doc["total"] / 1e9)


def run_hey(
    hey: Path,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
) -> Result:
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body)
        f.flush()
        args = [str(hey), "-z", f"{duration}s", "-c", str(concurrency), "-m", "POST"]
        args += ["-D", f.name, "-o", "csv"]
        for key, value in headers.items():
            args += ["-T", value] if key.lower() == "content-type" else ["-H", f"{key}: {value}"]
        out = subprocess.run(
            [*args, url], capture_output=True, text=True, timeout=duration + 60, check=False
        )
    if out.returncode != 0:
        raise RuntimeError(f"hey failed ({out.returncode}): {out.stderr[-500:]}")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    if not rows:
        raise RuntimeError(f"hey sent nothing: {out.stderr[-500:]}")
    latencies = [float(r["response-time"]) for r in rows if r["status-code"] == "200"]
    # offset: when each request started, from the run's start; the last end bounds the run.
    elapsed = max(float(r["offset"]) + float(r["response-time"]) for r in rows)
    statuses = Counter(int(r["status-code"]) for r in rows if r["status-code"].isdigit())
    return Result(
        latencies=latencies,
        errors=len(rows) - len(latencies),
        statuses=dict(statuses),
        elapsed=elapsed,
    )
