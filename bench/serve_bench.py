"""Benchmark: modeldeploy-server vs a naive FastAPI server vs MLServer, same model, same load.

A fourth server, bench/floor_server.py (raw ASGI, predict on the loop, nothing else), is the
floor: at concurrency 1 the figure that matters is each request's latency over its own predict
(both servers report it in a Server-Timing header), and the floor shows how much of that any
Python server on uvicorn pays on this machine.

One run trains a 100-tree RandomForest on iris, starts each server in turn on 127.0.0.1 (never
together, so each gets the whole machine), drives it with the closed-loop load generator in
bench/loadgen.py at concurrency 1 and 32 with 1-row and 100-row requests, and prints req/s, p50
and p99 plus the ratios to each baseline. Every cell is bounded by --duration seconds and
--max-requests requests. MLServer's pins conflict with ours, so it gets its own venv in
.bench/mlserver-venv; if that install fails, MLServer is skipped with a message.

    .venv/bin/python bench/serve_bench.py            # about 4 minutes
    .venv/bin/python bench/serve_bench.py --duration 5 --skip-mlserver

Figures are reported, never asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
from loadgen import Result, run_load
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
                    r = httpx.post(url + self.path, content=self.body(1), headers=JSON, timeout=5)
                else:
                    r = httpx.get(url + self.ready_path, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        else:
            raise RuntimeError(f"{self.label} not ready after {timeout}s: see {self.log}")
        r = httpx.post(url + self.path, content=self.body(2), headers=JSON, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"{self.label} answered {r.status_code}: {r.text[:300]}")
        doc = r.json()
        preds = doc["predictions"] if "predictions" in doc else doc["outputs"][0]["data"]
        if list(preds) != [0, 0]:
            raise RuntimeError(f"{self.label} predicted {preds}, expected [0, 0]")

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
    target: Target, duration: float, max_requests: int
) -> dict[tuple[int, int], Result]:
    out: dict[tuple[int, int], Result] = {}
    for conc, rows in CELLS:
        r = await run_load(
            target.port,
            target.path,
            target.body(rows),
            concurrency=conc,
            duration_s=duration,
            max_requests=max_requests,
            warmup_s=min(2.0, duration / 4),
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
        "--only", default="", help="comma-separated subset: ours,naive-fastapi,floor-asgi,mlserver"
    )
    args = ap.parse_args()
    duration = min(args.duration, 20.0)

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

    base_env = dict(os.environ)
    ours_port = free_port()
    ours_env = {
        **base_env,
        "MODEL_NAME": "iris",
        "STORAGE_URI": str(model_path),
        "MODEL_DIR": str(WORK / "model"),
        "TERMINATION_LOG": str(logs / "termination-log"),
        "HOST": "127.0.0.1",
        "PORT": str(ours_port),
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

    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
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
        except RuntimeError as exc:
            print(f"SKIPPING {t.label}: {exc}")
        finally:
            t.stop()

    print("\nsummary (req/s, p50, p99); ratios are throughput x and p99 ratio (baseline/ours)")
    pairs = [("ours-v1", "naive-fastapi"), ("ours-v2", "mlserver")]
    for conc, rows in CELLS:
        print(f"c={conc} rows={rows}:")
        for label, res in results.items():
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
            for label in ("ours-v1", "ours-v2"):
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
