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
p50, p99 and the count of failed calls. When a ``-z`` run ends, ghz cuts the calls still in
flight and counts them as Unavailable "closing" errors; those (at most one per worker) are not
the server's and are left out.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PROTO = REPO / "serving_image/modeldeploy_server/oip/grpc_predict_v2.proto"
ROW = [5.1, 3.5, 1.4, 0.2]
DEFAULT_DIR = Path.home() / ".cache/modeldeploy/bench-tools/ghz-v0.120.0-hey-v0.1.4"


@dataclass(frozen=True)
class Cell:
    rps: float
    p50_s: float
    p99_s: float
    errors: int

    def fmt(self) -> str:
        bad = f"  (errors: {self.errors})" if self.errors else ""
        return (
            f"{self.rps:8.0f} req/s  p50 {self.p50_s * 1e3:7.2f} ms  "
            f"p99 {self.p99_s * 1e3:7.2f} ms{bad}"
        )


def tools(directory: Path) -> tuple[Path, Path] | None:
    ghz, hey = directory / "ghz", directory / "hey"
    return (ghz, hey) if ghz.is_file() and hey.is_file() else None


def grpc_request_json(rows: int) -> str:
    """The ModelInferRequest bench/grpc_load.py sends, in protobuf JSON (bytes are base64)."""
    raw = np.array([ROW] * rows, dtype="<f8").tobytes()
    return json.dumps(
        {
            "model_name": "iris",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [rows, 4]}],
            "raw_input_contents": [base64.b64encode(raw).decode()],
        }
    )


def run_ghz(ghz: Path, port: int, rows: int, concurrency: int, duration: float) -> Cell:
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
    pcts = {d["percentage"]: d["latency"] / 1e9 for d in doc.get("latencyDistribution") or []}
    ok = codes.get("OK", 0)
    return Cell(ok / (doc["total"] / 1e9), pcts.get(50, float("nan")), pcts.get(99, 0.0), failed)


def run_hey(
    hey: Path,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
) -> Cell:
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
    times = sorted(float(r["response-time"]) for r in rows if r["status-code"] == "200")
    failed = len(rows) - len(times)
    # offset: when each request started, from the run's start; the last end bounds the run.
    elapsed = max(float(r["offset"]) + float(r["response-time"]) for r in rows)
    if not times:
        return Cell(0.0, float("nan"), float("nan"), failed)
    return Cell(
        len(times) / elapsed,
        times[len(times) // 2],
        times[min(len(times) - 1, int(0.99 * len(times)))],
        failed,
    )
