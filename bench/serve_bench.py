"""Benchmark: modeldeploy-server vs a naive FastAPI server vs MLServer, same model, same load.

A fourth server, bench/floor_server.py (raw ASGI, predict on the loop, nothing else), is the
floor: at concurrency 1 the figure that matters is each request's latency over its own predict
(both servers report it in a Server-Timing header), and the floor shows how much of that any
Python server on uvicorn pays on this machine.

One run trains a 100-tree RandomForest on iris, starts each server in turn on 127.0.0.1 (never
together, so each gets the whole machine), drives it with the closed-loop load generator in
bench/loadgen.py at concurrency 1 and 32 with 1-row and 100-row requests, and prints req/s, p50
and p99 plus the ratios to each baseline. Ours is measured four ways in the same process: V1
JSON, V2 JSON, V2 with binary tensors (the framing tritonclient.http and KServe's client send by
default) and the OIP gRPC service (bench/grpc_load.py), each with its ratio to V2 JSON. Every
cell is bounded by --duration seconds and --max-requests requests. MLServer's pins conflict with
ours, so it gets its own venv in
.bench/mlserver-venv; if that install fails, MLServer is skipped with a message.

With compiled clients (ghz for gRPC, hey for REST: hack/build-bench-tools.sh builds them into
the cache, --compiled-clients names another directory), the run also drives ours (V2 JSON, V2
binary, gRPC), the raw-ASGI floor and bench/grpc_floor_server.py (a bare grpc.aio service that
predicts on the loop: what any Python gRPC server on grpcio pays) with them, and prints a
second summary (labels marked *). grpc.aio as a client costs as much CPU as the server on 2
cores, so only the compiled clients show what the servers' gRPC can do; without the tools
those cells are skipped with a message.

The auth cell (`auth` in --only) runs ours twice more, without and with spec.auth (AUTH_ENABLED,
the operator's default cacheSeconds 10), and drives both with an Authorization header at c=1 and
c=32. Its reviews go to the real control plane when --auth-kubeconfig names one (it creates a
namespace with a server and a caller ServiceAccount and the RBAC for them, and deletes it after),
else to a loopback stub that plays TokenReview and SubjectAccessReview; the output says which.

    .venv/bin/python bench/serve_bench.py            # about 5 minutes
    .venv/bin/python bench/serve_bench.py --duration 5 --skip-mlserver
    .venv/bin/python bench/serve_bench.py --only auth --auth-kubeconfig <admin kubeconfig>

Figures are reported, never asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import joblib
import numpy as np
from compiled_clients import DEFAULT_DIR as TOOLS_DIR
from compiled_clients import run_ghz, run_hey, tools
from grpc_load import infer_request, run_grpc_load
from loadgen import Result, run_load
from modeldeploy_server.codec import decode_v2
from modeldeploy_server.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from modeldeploy_server.runtime.forest import compile_forest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".bench"
MLSERVER_VENV = WORK / "mlserver-venv"
# uvloop>=0.22 removed the implicit event loop MLServer 1.7.1's inference workers rely on
# (RuntimeError "There is no current event loop" and the worker dies), so it is held back.
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
ROW = [5.1, 3.5, 1.4, 0.2]
JSON = {"content-type": "application/json"}
CELLS = [(1, 1), (1, 100), (32, 1), (32, 100)]  # (concurrency, rows per request)
AUTH_CELLS = [(1, 1), (32, 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def v1_body(rows: int) -> bytes:
    return json.dumps({"instances": [ROW] * rows}).encode()


def v2_body(rows: int) -> bytes:
    tensor = {"name": "input-0", "shape": [rows, 4], "datatype": "FP64", "data": ROW * rows}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_binary_header(rows: int) -> bytes:
    # What tritonclient.http sends by default: the tensor as raw bytes, binary outputs asked for.
    tensor = {
        "name": "input-0",
        "shape": [rows, 4],
        "datatype": "FP64",
        "parameters": {"binary_data_size": rows * 4 * 8},
    }
    return json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()


def v2_binary_body(rows: int) -> bytes:
    return v2_binary_header(rows) + np.array([ROW] * rows, dtype="<f8").tobytes()


def v2_binary_headers(rows: int) -> dict[str, str]:
    return {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(v2_binary_header(rows))),
    }


@dataclass
class Target:
    """One server under test and how to talk to it."""

    label: str
    cmd: list[str]
    env: dict[str, str]
    ready_path: str
    path: str
    body: Callable[[int], bytes]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    body_headers: Callable[[int], dict[str, str]] | None = None  # per rows, e.g. the framing

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.log.parent
            )

    def wait_ready(self, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}"
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited: see {self.log}")
            try:
                if self.ready_path == "POST":
                    r = httpx.post(
                        url + self.path, content=self.body(1), headers=self.http_headers, timeout=5
                    )
                else:
                    r = httpx.get(url + self.ready_path, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        else:
            raise RuntimeError(f"{self.label} not ready after {timeout}s: see {self.log}")
        r = httpx.post(url + self.path, content=self.body(2), headers=self.http_headers, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"{self.label} answered {r.status_code}: {r.text[:300]}")
        doc = r.json()
        preds = doc["predictions"] if "predictions" in doc else doc["outputs"][0]["data"]
        if list(preds) != [0, 0]:
            raise RuntimeError(f"{self.label} predicted {preds}, expected [0, 0]")

    @property
    def http_headers(self) -> dict[str, str]:
        return {**JSON, **self.headers}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def train(model_dir: Path, kind: str) -> Path:
    x, y = load_iris(return_X_y=True)
    model = (
        LogisticRegression(max_iter=1000).fit(x, y)
        if kind == "logreg"
        else RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "model.joblib"
    joblib.dump(model, path)
    return path


def in_process_predict_ms(path: Path, rows: int, n: int = 200) -> tuple[float, float | None]:
    """Median in-process predict: scikit-learn's own, and the server's forest path if it has one.

    Interleaved call by call, so both see the same machine from moment to moment.
    """
    model = joblib.load(path)
    fast = compile_forest(model)
    x = np.array([ROW] * rows)
    model.predict(x)
    own: list[float] = []
    ours: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        model.predict(x)
        own.append(time.perf_counter() - t)
        if fast is not None:
            t = time.perf_counter()
            fast.predict(x)
            ours.append(time.perf_counter() - t)
    return statistics.median(own) * 1000, statistics.median(ours) * 1000 if ours else None


def in_process_decode_us(rows: int, n: int = 2000) -> tuple[float, float]:
    """Median decode of one V2 request body in-process: JSON, and the same tensor as binary.

    The transport's share that differs between the two; the HTTP around it is the same.
    """
    json_body, binary_body = v2_body(rows), v2_binary_body(rows)
    length = v2_binary_headers(rows)["inference-header-content-length"]
    as_json: list[float] = []
    as_binary: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        decode_v2(json_body)
        as_json.append(time.perf_counter() - t)
        t = time.perf_counter()
        decode_v2(binary_body, length)
        as_binary.append(time.perf_counter() - t)
    return statistics.median(as_json) * 1e6, statistics.median(as_binary) * 1e6


def ensure_mlserver() -> Path | None:
    exe = MLSERVER_VENV / "bin" / "mlserver"
    marker = MLSERVER_VENV / ".modeldeploy-pins"
    if exe.exists() and marker.exists() and marker.read_text() == " ".join(MLSERVER_PINS):
        return exe
    print(f"creating {MLSERVER_VENV} and installing {' '.join(MLSERVER_PINS)} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", *MLSERVER_PINS],
            check=True,
            timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"SKIPPING MLServer: installing {' '.join(MLSERVER_PINS)} failed ({exc})")
        return None
    marker.write_text(" ".join(MLSERVER_PINS))
    return exe if exe.exists() else None


def mlserver_target(exe: Path, model_path: Path, logs: Path) -> Target:
    root = WORK / "mlserver-models"
    mdir = root / "iris"
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "model.joblib").write_bytes(model_path.read_bytes())
    (mdir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    port = free_port()
    # Only ports and the loopback host are set; everything else is MLServer's default.
    (root / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
    return Target(
        "mlserver",
        [str(exe), "start", str(root)],
        env,
        "/v2/models/iris/ready",
        "/v2/models/iris/infer",
        v2_body,
        port,
        logs / "mlserver.log",
    )


def fmt_cell(r: Result) -> str:
    return f"{r.rps:8.0f} req/s  p50 {r.pct(0.5) * 1e3:7.2f} ms  p99 {r.pct(0.99) * 1e3:7.2f} ms"


async def measure(
    target: Target,
    duration: float,
    max_requests: int,
    cells: list[tuple[int, int]] = CELLS,
) -> dict[tuple[int, int], Result]:
    out: dict[tuple[int, int], Result] = {}
    for conc, rows in cells:
        extra = target.body_headers(rows) if target.body_headers else {}
        r = await run_load(
            target.port,
            target.path,
            target.body(rows),
            concurrency=conc,
            duration_s=duration,
            max_requests=max_requests,
            warmup_s=min(2.0, duration / 4),
            headers={**target.headers, **extra},
        )
        out[(conc, rows)] = r
        bad = {s: n for s, n in r.statuses.items() if s != 200}
        note = f"  (errors: {r.errors}, non-200: {bad})" if r.errors or bad else ""
        if r.overheads:
            # Each request's latency minus its own model call (the server's Server-Timing), so
            # the figure is HTTP + decoding + queueing, free of the predict's own jitter.
            note += (
                f"  [over its own predict: p50 {r.pct(0.5, r.overheads) * 1e3:.2f} ms, "
                f"p99 {r.pct(0.99, r.overheads) * 1e3:.2f} ms]"
            )
        print(f"  {target.label:<14} c={conc:<3} rows={rows:<4} {fmt_cell(r)}{note}", flush=True)
    return out


async def measure_grpc(
    label: str, port: int, duration: float, max_requests: int
) -> dict[tuple[int, int], Result]:
    """The CELLS over the server's gRPC port (bench/grpc_load.py: raw_input_contents, one
    channel), printed like measure's; status 0 is gRPC's OK."""
    out: dict[tuple[int, int], Result] = {}
    for conc, rows in CELLS:
        r = await run_grpc_load(
            port,
            "iris",
            rows,
            concurrency=conc,
            duration_s=duration,
            max_requests=max_requests,
            warmup_s=min(2.0, duration / 4),
        )
        out[(conc, rows)] = r
        bad = {s: n for s, n in r.statuses.items() if s != 0}
        note = f"  (errors: {r.errors}, non-OK codes: {bad})" if r.errors or bad else ""
        if r.overheads:
            note += (
                f"  [over its own predict: p50 {r.pct(0.5, r.overheads) * 1e3:.2f} ms, "
                f"p99 {r.pct(0.99, r.overheads) * 1e3:.2f} ms]"
            )
        print(f"  {label:<14} c={conc:<3} rows={rows:<4} {fmt_cell(r)}{note}", flush=True)
    return out


# --------------------------------------------------------------- compiled clients (ghz, hey)
def compiled_cells(label: str, run: Callable[[int, int], Result]) -> dict[tuple[int, int], Result]:
    """The CELLS through ``run(concurrency, rows)``; the label's * marks a compiled client."""
    out: dict[tuple[int, int], Result] = {}
    for conc, rows in CELLS:
        out[(conc, rows)] = r = run(conc, rows)
        bad = f"  (errors: {r.errors})" if r.errors else ""
        print(f"  {label + ' *':<16} c={conc:<3} rows={rows:<4} {fmt_cell(r)}{bad}", flush=True)
    return out


def compiled_ours(
    compiled: tuple[Path, Path], port: int, grpc_port: int, duration: float
) -> dict[str, dict[tuple[int, int], Result]]:
    """Ours, warm from the Python clients' cells: V2 JSON and binary with hey, gRPC with ghz."""
    ghz, hey = compiled
    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
    return {
        "ours-v2": compiled_cells(
            "ours-v2", lambda c, r: run_hey(hey, url, v2_body(r), JSON, c, duration)
        ),
        "ours-v2-binary": compiled_cells(
            "ours-v2-binary",
            lambda c, r: run_hey(hey, url, v2_binary_body(r), v2_binary_headers(r), c, duration),
        ),
        "ours-grpc": compiled_cells(
            "ours-grpc", lambda c, r: run_ghz(ghz, grpc_port, r, c, duration)
        ),
    }


def compiled_floor(hey: Path, port: int, duration: float) -> dict[tuple[int, int], Result]:
    """bench/floor_server.py (the raw-ASGI floor) with hey: V1 JSON, as the Python client sends."""
    url = f"http://127.0.0.1:{port}/predict"
    return compiled_cells(
        "floor-asgi", lambda c, r: run_hey(hey, url, v1_body(r), JSON, c, duration)
    )


def _grpc_answers(port: int) -> bool:
    """One ModelInfer call that gets an answer (the floor has no readiness RPC)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.ModelInfer(infer_request("iris", 1), timeout=5)
        except grpc.RpcError:
            return False
    return True


def grpc_floor_cells(
    compiled: tuple[Path, Path] | None,
    model_path: Path,
    logs: Path,
    duration: float,
    max_requests: int,
) -> tuple[dict[tuple[int, int], Result], dict[tuple[int, int], Result]]:
    """bench/grpc_floor_server.py in its own process: the CELLS with the same Python client as
    ours-grpc, then with ghz when the compiled clients are there."""
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(model_path)}
    log_path = logs / "grpc-floor.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench/grpc_floor_server.py"), str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        end = time.monotonic() + 60
        while not _grpc_answers(port):
            if proc.poll() is not None:
                raise RuntimeError(f"grpc_floor_server.py exited: see {log_path}")
            if time.monotonic() > end:
                raise RuntimeError(f"grpc_floor_server.py answered no call: see {log_path}")
            time.sleep(0.5)
        print("grpc-floor: ready", flush=True)
        python = asyncio.run(measure_grpc("grpc-floor", port, duration, max_requests))
        ghz = compiled[0] if compiled is not None else None
        cells = (
            compiled_cells("grpc-floor", lambda c, r: run_ghz(ghz, port, r, c, duration))
            if ghz is not None
            else {}
        )
        return python, cells
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def print_compiled_summary(results: dict[str, dict[tuple[int, int], Result]]) -> None:
    if not results:
        return
    print(
        "\ncompiled clients (hey for REST, ghz for gRPC; bench/compiled_clients.py): "
        "req/s, p50, p99; ratios are throughput x"
    )
    pairs = [
        ("ours-v2-binary", "ours-v2"),
        ("ours-grpc", "ours-v2"),
        ("ours-grpc", "grpc-floor"),
        ("grpc-floor", "ours-v2"),
    ]
    for cell in CELLS:
        print(f"c={cell[0]} rows={cell[1]}:")
        for label, res in results.items():
            if cell in res:
                print(f"  {label + ' *':<16} {fmt_cell(res[cell])}")
        for ours, base in pairs:
            if cell in results.get(ours, {}) and cell in results.get(base, {}):
                o, b = results[ours][cell], results[base][cell]
                ratio = o.rps / b.rps if b.rps else float("nan")
                print(f"  {ours} vs {base}: {ratio:5.2f}x throughput")


# ------------------------------------------------------------------------------ the auth cell
@dataclass
class ReviewApi:
    """Where the auth server's reviews go, the AUTH_* env that points it there, and the caller's
    token that API allows."""

    label: str
    env: dict[str, str]
    token: str
    close: Callable[[], None]


def stub_review_api(work: Path) -> ReviewApi:
    """A loopback API server stand-in: TokenReview says authenticated, the SAR allows."""
    # As long as a real projected ServiceAccount token (~1 kB), so hashing it costs the same.
    token = "bench." + base64.urlsafe_b64encode(os.urandom(768)).decode().rstrip("=")
    user = "system:serviceaccount:bench:caller"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            doc = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            if doc["kind"] == "TokenReview":
                ok = doc["spec"]["token"] == token
                doc["status"] = {"authenticated": ok, "user": {"username": user}} if ok else {}
            else:
                doc["status"] = {"allowed": doc["spec"]["user"] == user}
            data = json.dumps(doc).encode()
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (work / "auth-server.token").write_text("bench-server-token")
    env = {
        "AUTH_API_SERVER": f"http://127.0.0.1:{server.server_address[1]}",
        "AUTH_TOKEN_FILE": str(work / "auth-server.token"),
        "MODEL_NAMESPACE": "bench",
    }

    def close() -> None:
        server.shutdown()
        server.server_close()

    return ReviewApi("a loopback review stub (no --auth-kubeconfig given)", env, token, close)


def _kubectl_binary() -> str:
    cached = Path.home() / ".cache/modeldeploy/k8s-v1.34.4/bin/kubectl"
    found = str(cached) if cached.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("no kubectl: run hack/build-k8s.sh core")
    return found


def cluster_review_api(kubeconfig: Path, work: Path) -> ReviewApi:
    """The real control plane: a namespace with the server's ServiceAccount bound to
    deploy/rbac.yaml's modeldeploy-server-auth and a caller allowed to predict on `iris`."""
    kubectl = [_kubectl_binary(), "--kubeconfig", str(kubeconfig)]

    def run(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [*kubectl, *args], input=stdin, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    ns = f"bench-auth-{uuid.uuid4().hex[:6]}"
    binding = f"modeldeploy-auth.{ns}.iris"
    import yaml

    docs = yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text())
    role = next(d for d in docs if d and d["metadata"]["name"] == "modeldeploy-server-auth")
    rbac = "rbac.authorization.k8s.io"
    objects: list[dict[str, Any]] = [
        role,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        *(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n, "namespace": ns}}
            for n in ("iris-server", "caller")
        ),
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": role["metadata"]["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": "iris-server", "namespace": ns}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": {"name": "predict-iris", "namespace": ns},
            "rules": [
                {
                    "apiGroups": ["modeldeploy.io"],
                    "resources": ["modeldeployments/predict"],
                    "verbs": ["create"],
                    "resourceNames": ["iris"],
                }
            ],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "caller-predicts-iris", "namespace": ns},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "predict-iris"},
            "subjects": [{"kind": "ServiceAccount", "name": "caller", "namespace": ns}],
        },
    ]
    run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def token(account: str) -> str:
        deadline = time.monotonic() + 60
        while True:  # until the ServiceAccount is there; bounded by the deadline
            try:
                return run("create", "token", account, "-n", ns, "--duration=1h").strip()
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    cfg = json.loads(run("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = cfg["clusters"][0]["cluster"]
    ca = work / "auth-ca.crt"
    if "certificate-authority-data" in cluster:
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    else:
        ca.write_bytes(Path(cluster["certificate-authority"]).read_bytes())
    (work / "auth-server.token").write_text(token("iris-server"))
    env = {
        "AUTH_API_SERVER": cluster["server"],
        "AUTH_CA_FILE": str(ca),
        "AUTH_TOKEN_FILE": str(work / "auth-server.token"),
        "MODEL_NAMESPACE": ns,
    }

    def close() -> None:
        subprocess.run([*kubectl, "delete", "clusterrolebinding", binding], capture_output=True)
        subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)

    label = f"the real control plane at {cluster['server']} ({kubeconfig}), namespace {ns}"
    return ReviewApi(label, env, token("caller"), close)


def auth_counts(port: int) -> str:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    rows = [
        line.removeprefix("modeldeploy_auth_requests_total")
        for line in text.splitlines()
        if line.startswith("modeldeploy_auth_requests_total{") and not line.endswith(" 0.0")
    ]
    return ", ".join(rows) or "none"


def _merge(a: Result | None, b: Result) -> Result:
    if a is None:
        return b
    return Result(
        latencies=a.latencies + b.latencies,
        errors=a.errors + b.errors,
        statuses={
            k: a.statuses.get(k, 0) + b.statuses.get(k, 0) for k in {*a.statuses, *b.statuses}
        },
        elapsed=a.elapsed + b.elapsed,
        overheads=a.overheads + b.overheads,
    )


def in_process_auth_us(
    model_path: Path, review: ReviewApi, n: int = 20_000, block: int = 100
) -> tuple[float, float]:
    """Per-request time of ServingApp itself (no socket, no uvicorn) without and with spec.auth,
    a cached decision, in alternating blocks of `block` requests, median block: the CPU the check
    adds, with less of the machine's scheduling noise than the loopback figures have."""
    from modeldeploy_server.app import create_app
    from modeldeploy_server.auth import Reviewer, config_from_settings
    from modeldeploy_server.config import Settings
    from modeldeploy_server.dataplane import DataPlane, ServingInfo
    from modeldeploy_server.metrics import Metrics
    from modeldeploy_server.runtime.sklearn import load_sklearn_runtime

    async def run() -> tuple[float, float]:
        apps = []
        for auth_on in (False, True):
            info = ServingInfo("iris", "v1", "stable", "", "", False)
            dp = DataPlane(info, Metrics(), max_batch_rows=1024, max_wait_s=0.002)
            await dp.set_ready(load_sklearn_runtime(model_path, "sklearn"), "")
            reviewer = None
            if auth_on:
                settings = Settings(
                    model_name="iris",
                    auth_enabled=True,
                    auth_cache_seconds=3600,
                    auth_api_server=review.env["AUTH_API_SERVER"],
                    auth_token_file=Path(review.env["AUTH_TOKEN_FILE"]),
                    auth_ca_file=review.env.get("AUTH_CA_FILE", ""),
                    model_namespace=review.env["MODEL_NAMESPACE"],
                )
                reviewer = Reviewer(config_from_settings(settings, {}), dp.metrics)
            apps.append((create_app(dp, auth=reviewer), dp, reviewer))
        body = v1_body(1)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/models/iris:predict",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"authorization", f"Bearer {review.token}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        statuses: list[int] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        for app, _, _ in apps:  # warm up, and the one review that fills the cache
            for _ in range(200):
                await app(dict(scope), receive, send)
        if set(statuses) != {200}:
            raise RuntimeError(f"in-process auth check answered {set(statuses)}")
        # Per block, then the median block: a burst of other work lands on a few blocks.
        spent: list[list[float]] = [[], []]
        for _ in range(n // block):
            for i, (app, _, _) in enumerate(apps):
                t = time.perf_counter()
                for _ in range(block):
                    await app(dict(scope), receive, send)
                spent[i].append(time.perf_counter() - t)
        for _, dp, reviewer in apps:
            await dp.stop()
            if reviewer is not None:
                await reviewer.close()
        plain, auth = (statistics.median(s) / block * 1e6 for s in spent)
        return plain, auth

    return asyncio.run(run())


def run_auth_cells(
    ours_cmd: list[str],
    ours_env: dict[str, str],
    review: ReviewApi,
    logs: Path,
    duration: float,
    max_requests: int,
    rounds: int,
) -> dict[str, dict[tuple[int, int], Result]]:
    """Ours without and with spec.auth, same model, same load, the cells alternating.

    Both servers run at once but only one is driven at a time (the idle one costs nothing), and
    each cell alternates between them for `rounds` slices of duration/rounds seconds (the order
    flipping every round), so a busy moment on the machine lands on both sides alike instead of
    on whichever ran second.
    """
    print(f"auth cell: reviews go to {review.label}", flush=True)
    plain_us, auth_us = in_process_auth_us(Path(ours_env["STORAGE_URI"]), review)
    print(
        f"  in process (ServingApp, V1 1 row, no socket): {plain_us:.1f} us/request without "
        f"auth, {auth_us:.1f} us with a cached decision ({auth_us - plain_us:+.1f} us)",
        flush=True,
    )
    header = {"Authorization": f"Bearer {review.token}"}
    targets: list[Target] = []
    for label, extra in (
        ("ours-noauth", {}),
        ("ours-auth", {"AUTH_ENABLED": "true", **review.env}),
    ):
        port = free_port()
        env = {**ours_env, **extra, "PORT": str(port), "MODEL_NAME": "iris"}
        # The unauthenticated server gets the header too, so both parse the same bytes.
        targets.append(
            Target(
                label, ours_cmd, env, "/ready", "/v1/models/iris:predict", v1_body, port,
                logs / f"{label}.log", headers=header,
            )
        )  # fmt: skip
    merged: dict[str, dict[tuple[int, int], Result | None]] = {
        t.label: dict.fromkeys(AUTH_CELLS) for t in targets
    }
    try:
        for t in targets:
            t.start()
            t.wait_ready()
        for conc, rows in AUTH_CELLS:
            ratios: list[float] = []
            for i in range(rounds):
                rps: dict[str, float] = {}
                # Each goes first in every other round, so neither always follows the other.
                for t in targets if i % 2 == 0 else targets[::-1]:
                    r = asyncio.run(
                        run_load(
                            t.port,
                            t.path,
                            t.body(rows),
                            concurrency=conc,
                            duration_s=duration / rounds,
                            max_requests=max_requests // rounds,
                            warmup_s=min(1.0, duration / rounds / 4),
                            headers=t.headers,
                        )
                    )
                    merged[t.label][(conc, rows)] = _merge(merged[t.label][(conc, rows)], r)
                    rps[t.label] = r.rps
                if rps.get("ours-noauth"):
                    ratios.append(rps["ours-auth"] / rps["ours-noauth"])
            PAIRED[(conc, rows)] = ratios
            for t in targets:
                res = merged[t.label][(conc, rows)]
                assert res is not None
                bad = {s: n for s, n in res.statuses.items() if s != 200}
                note = f"  (errors: {res.errors}, non-200: {bad})" if res.errors or bad else ""
                print(f"  {t.label:<14} c={conc:<3} rows={rows:<4} {fmt_cell(res)}{note}")
        print(f"  ours-auth decisions: {auth_counts(targets[1].port)}", flush=True)
    finally:
        for t in targets:
            t.stop()
    return {
        label: {cell: r for cell, r in cells.items() if r is not None}
        for label, cells in merged.items()
    }


# Per cell, auth/no-auth throughput of each round's adjacent pair of slices.
PAIRED: dict[tuple[int, int], list[float]] = {}


def print_auth_summary(results: dict[str, dict[tuple[int, int], Result]], where: str) -> None:
    if not {"ours-noauth", "ours-auth"} <= results.keys():
        return
    print(f"auth (V1, 1 row; reviews against {where}):")
    for cell in AUTH_CELLS:
        plain, auth = results["ours-noauth"][cell], results["ours-auth"][cell]
        print(f"  c={cell[0]:<3} no auth   {fmt_cell(plain)}")
        print(f"  c={cell[0]:<3} auth      {fmt_cell(auth)}")
        print(
            f"  c={cell[0]:<3} auth/no auth: throughput {auth.rps / plain.rps:5.3f}x, "
            f"p50 {(auth.pct(0.5) - plain.pct(0.5)) * 1e3:+.3f} ms, "
            f"p99 {(auth.pct(0.99) - plain.pct(0.99)) * 1e3:+.3f} ms"
        )
        ratios = sorted(PAIRED.get(cell, []))
        if ratios:
            # Robust to another process's burst landing on one slice: each ratio compares two
            # slices run back to back.
            print(
                f"  c={cell[0]:<3} auth/no auth throughput, median of {len(ratios)} adjacent "
                f"pairs: {statistics.median(ratios):5.3f}x (range {ratios[0]:.3f}-{ratios[-1]:.3f})"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per cell (max 20)")
    ap.add_argument("--max-requests", type=int, default=100_000, help="requests per cell")
    ap.add_argument("--skip-mlserver", action="store_true")
    ap.add_argument(
        "--model",
        choices=["forest", "logreg"],
        default="forest",
        help="forest: the issue's 100-tree RandomForest; logreg: a LogisticRegression whose "
        "predict is cheap, so HTTP overhead dominates",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated subset: ours,naive-fastapi,floor-asgi,grpc-floor,mlserver,auth",
    )
    ap.add_argument(
        "--auth-rounds",
        type=int,
        default=10,
        help="the auth cell alternates no-auth and auth this many times per cell",
    )
    ap.add_argument(
        "--auth-kubeconfig",
        type=Path,
        help="admin kubeconfig of a control plane for the auth cell's reviews "
        "(default: a loopback review stub)",
    )
    ap.add_argument(
        "--compiled-clients",
        type=Path,
        default=TOOLS_DIR,
        help="directory with ghz and hey (hack/build-bench-tools.sh) for the compiled-client "
        "cells; skipped with a message when they are not there",
    )
    args = ap.parse_args()
    duration = min(args.duration, 20.0)
    compiled = tools(args.compiled_clients)
    compiled_results: dict[str, dict[tuple[int, int], Result]] = {}

    WORK.mkdir(exist_ok=True)
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    model_path = train(WORK / "model", args.model)
    bin_dir = Path(sys.executable).parent
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    pred1, fast1 = in_process_predict_ms(model_path, 1)
    pred100, fast100 = in_process_predict_ms(model_path, 100)
    print(f"in-process {args.model} predict: 1 row {pred1:.2f} ms, 100 rows {pred100:.2f} ms")
    if fast1 is not None and fast100 is not None:
        print(
            f"in-process forest fast path (ours): 1 row {fast1:.2f} ms, 100 rows {fast100:.2f} ms"
        )

    for rows in (1, 100):
        dec_json, dec_binary = in_process_decode_us(rows)
        print(
            f"in-process V2 decode, {rows} rows: JSON {dec_json:.1f} us, binary "
            f"{dec_binary:.1f} us ({dec_json / dec_binary:.2f}x)"
        )

    base_env = dict(os.environ)
    ours_port = free_port()
    ours_grpc_port = free_port()
    ours_env = {
        **base_env,
        "MODEL_NAME": "iris",
        "STORAGE_URI": str(model_path),
        "MODEL_DIR": str(WORK / "model"),
        "TERMINATION_LOG": str(logs / "termination-log"),
        "HOST": "127.0.0.1",
        "PORT": str(ours_port),
        "GRPC_PORT": str(ours_grpc_port),
    }
    ours_cmd = [str(bin_dir / "modeldeploy-server")]
    naive_port = free_port()
    floor_port = free_port()
    targets = [
        Target(
            "ours-v1", ours_cmd, ours_env, "/ready", "/v1/models/iris:predict", v1_body,
            ours_port, logs / "ours.log",
        ),
        Target(
            "naive-fastapi",
            [sys.executable, "-m", "uvicorn", "naive_server:app", "--app-dir", str(REPO / "bench"),
             "--host", "127.0.0.1", "--port", str(naive_port)],
            {**base_env, "MODEL_PATH": str(model_path)},
            "POST", "/predict", v1_body, naive_port, logs / "naive.log",
        ),
        Target(
            "floor-asgi",
            [sys.executable, "-m", "uvicorn", "floor_server:app", "--app-dir", str(REPO / "bench"),
             "--host", "127.0.0.1", "--port", str(floor_port), "--log-level", "warning"],
            {**base_env, "MODEL_PATH": str(model_path)},
            "POST", "/predict", v1_body, floor_port, logs / "floor.log",
        ),
    ]  # fmt: skip
    if args.skip_mlserver:
        print("SKIPPING MLServer: --skip-mlserver")
    else:
        exe = ensure_mlserver()
        if exe is not None:
            targets.append(mlserver_target(exe, model_path, logs))

    wanted = {w.strip() for w in args.only.split(",")} if args.only else set()
    if wanted:
        targets = [
            t for t in targets if t.label in wanted or (t.label == "ours-v1" and "ours" in wanted)
        ]
    results: dict[str, dict[tuple[int, int], Result]] = {}
    for t in targets:
        t.start()
        try:
            t.wait_ready()
            print(f"{t.label}: ready", flush=True)
            results[t.label] = asyncio.run(measure(t, duration, args.max_requests))
            if t.label == "ours-v1":
                # Same process, V2 protocol: the like-for-like comparison with MLServer.
                v2 = Target(
                    "ours-v2", [], {}, "/ready", "/v2/models/iris/infer", v2_body, t.port, t.log
                )
                results["ours-v2"] = asyncio.run(measure(v2, duration, args.max_requests))
                # The same V2 request as raw tensor bytes (the binary tensor data extension).
                binary = Target(
                    "ours-v2-binary", [], {}, "/ready", "/v2/models/iris/infer", v2_binary_body,
                    t.port, t.log, body_headers=v2_binary_headers,
                )  # fmt: skip
                results["ours-v2-binary"] = asyncio.run(
                    measure(binary, duration, args.max_requests)
                )
                # And the same model over the Open Inference Protocol's gRPC service.
                results["ours-grpc"] = asyncio.run(
                    measure_grpc("ours-grpc", ours_grpc_port, duration, args.max_requests)
                )
                if compiled is not None:
                    compiled_results.update(
                        compiled_ours(compiled, t.port, ours_grpc_port, duration)
                    )
            if t.label == "floor-asgi" and compiled is not None:
                compiled_results["floor-asgi"] = compiled_floor(compiled[1], t.port, duration)
        except RuntimeError as exc:
            print(f"SKIPPING {t.label}: {exc}")
        finally:
            t.stop()
    if compiled is None:
        print(
            f"SKIPPING the compiled-client cells: no ghz and hey in {args.compiled_clients} "
            "(hack/build-bench-tools.sh builds them)"
        )
    if not wanted or "grpc-floor" in wanted or "ours" in wanted:
        try:
            results["grpc-floor"], floor_cells = grpc_floor_cells(
                compiled, model_path, logs, duration, args.max_requests
            )
            if floor_cells:
                compiled_results["grpc-floor"] = floor_cells
        except RuntimeError as exc:
            print(f"SKIPPING grpc-floor: {exc}")
    auth_where = ""
    if not wanted or "auth" in wanted:
        review = (
            cluster_review_api(args.auth_kubeconfig, WORK)
            if args.auth_kubeconfig
            else stub_review_api(WORK)
        )
        auth_where = review.label
        try:
            results.update(
                run_auth_cells(
                    ours_cmd, ours_env, review, logs, duration, args.max_requests, args.auth_rounds
                )
            )
        except RuntimeError as exc:
            print(f"SKIPPING auth: {exc}")
        finally:
            review.close()

    print("\nsummary (req/s, p50, p99); ratios are throughput x and p99 ratio (baseline/ours)")
    pairs = [
        ("ours-v1", "naive-fastapi"),
        ("ours-v2", "mlserver"),
        ("ours-v2-binary", "ours-v2"),
        ("ours-grpc", "ours-v2"),
        ("ours-grpc", "grpc-floor"),
        ("grpc-floor", "ours-v2"),
    ]
    for conc, rows in CELLS:
        print(f"c={conc} rows={rows}:")
        for label, res in results.items():
            if (conc, rows) in res:
                print(f"  {label:<14} {fmt_cell(res[(conc, rows)])}")
        for ours, base in pairs:
            if ours in results and base in results:
                o, b = results[ours][(conc, rows)], results[base][(conc, rows)]
                print(
                    f"  {ours} vs {base}: {o.rps / b.rps:5.2f}x throughput, "
                    f"p99 {b.pct(0.99) / o.pct(0.99):5.2f}x lower"
                )
        if conc == 1:
            base_ms = pred1 if rows == 1 else pred100
            fast_ms = fast1 if rows == 1 else fast100
            floor = results.get("floor-asgi", {}).get((conc, rows))
            floor_ms = floor.pct(0.5, floor.overheads) * 1e3 if floor and floor.overheads else None
            for label in ("ours-v1", "ours-v2", "ours-v2-binary", "ours-grpc"):
                if label not in results:
                    continue
                res = results[label][(conc, rows)]
                line = (
                    f"  {label} p50 over in-process predict ({base_ms:.2f} ms): "
                    f"{res.pct(0.5) * 1e3 - base_ms:+.2f} ms"
                )
                if fast_ms is not None:
                    line += (
                        f"; over the in-process forest fast path ({fast_ms:.2f} ms): "
                        f"{res.pct(0.5) * 1e3 - fast_ms:+.2f} ms"
                    )
                if res.overheads:
                    own_ms = res.pct(0.5, res.overheads) * 1e3
                    line += f"; over its own predict (Server-Timing): {own_ms:+.2f} ms"
                    if floor_ms is not None:
                        line += (
                            f", of which the bare-ASGI floor pays {floor_ms:.2f} ms "
                            f"(ours adds {own_ms - floor_ms:+.2f} ms)"
                        )
                print(line)
    print_compiled_summary(compiled_results)
    print_auth_summary(results, auth_where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
