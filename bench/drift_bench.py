"""Benchmark: what drift tracking costs the server, with and without a reference profile.

Two modeldeploy-server processes serve the same 100-tree iris forest on 127.0.0.1, one from a
directory holding only the model (drift off: missing values are still counted) and one from a
directory holding the model and its profile.json (built with the server's own
``modeldeploy-profile`` code). Both run for the whole benchmark, but only one is driven at a
time (an idle server costs nothing), alternating off/on round by round so both see the same
machine; bench/loadgen.py drives V2 JSON with 1-row requests at concurrency 1 and 32. It prints
req/s, p50 and p99 per cell (the median over the rounds), the on/off ratios, and the in-process
cost of one ``DriftTracker.observe`` call for 1, 32 and 100 rows.

    .venv/bin/python bench/drift_bench.py                  # 3 rounds of 5 s per cell, ~2 min
    .venv/bin/python bench/drift_bench.py --rounds 5 --duration 10

Figures are reported, never asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from loadgen import Result
from modeldeploy_server.drift import DriftTracker
from modeldeploy_server.profile import Profile, build_profile, dump
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime
from serve_bench import Target, free_port, measure, train, v2_body
from sklearn.datasets import load_iris

CELLS = [(1, 1), (32, 1)]  # (concurrency, rows per request)


def iris_profile(model_path: Path) -> Profile:
    x, _ = load_iris(return_X_y=True)
    rt = load_sklearn_runtime(model_path, "sklearn")
    predictions = rt.predict(x, ("output-0",))[0]
    return build_profile(x, predictions, prediction_kind="categorical", model=model_path.name)


def observe_us(profile: Profile | None, rows: int, n: int = 5120) -> float:
    """Mean µs of one observe() call on ``rows`` served iris rows (with their predictions),
    the binning of the queued batches included (a mean, not a median: most calls only queue)."""
    x, _ = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    tracker = DriftTracker(profile, None, n_features=4)
    batches = [x[rng.integers(0, len(x), rows)] for _ in range(64)]
    preds = [rng.integers(0, 3, rows) for _ in range(64)]
    t0 = time.perf_counter()
    for i in range(n):
        tracker.observe(batches[i % 64], preds[i % 64])
    tracker.snapshot()  # bins what is still queued
    return (time.perf_counter() - t0) / n * 1e6


def median_result(results: list[Result]) -> tuple[float, float, float]:
    return (
        statistics.median(r.rps for r in results),
        statistics.median(r.pct(0.5) for r in results) * 1e3,
        statistics.median(r.pct(0.99) for r in results) * 1e3,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per cell and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-requests", type=int, default=200_000)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    off_dir, on_dir = work / "off", work / "on"
    model_path = train(off_dir, "forest")
    on_dir.mkdir()
    (on_dir / "model.joblib").write_bytes(model_path.read_bytes())
    profile = iris_profile(on_dir / "model.joblib")
    dump(profile, on_dir / "profile.json")

    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    for rows in (1, 32, 100):
        on, off = observe_us(profile, rows), observe_us(None, rows)
        print(
            f"in-process observe(), {rows:>3} rows: with profile {on:6.1f} us, "
            f"without {off:5.1f} us"
        )

    exe = str(Path(sys.executable).parent / "modeldeploy-server")
    targets: dict[str, Target] = {}
    for label, d in (("drift-off", off_dir), ("drift-on", on_dir)):
        port = free_port()
        env = {
            **os.environ,
            "MODEL_NAME": "iris",
            "STORAGE_URI": str(d),
            "MODEL_DIR": str(work / f"{label}-dir"),
            "TERMINATION_LOG": str(work / f"{label}-termination-log"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "GRPC_PORT": "0",
        }
        targets[label] = Target(
            label, [exe], env, "/ready", "/v2/models/iris/infer", v2_body, port,
            work / f"{label}.log",
        )  # fmt: skip
    results: dict[tuple[str, int, int], list[Result]] = {}
    try:
        for t in targets.values():
            t.start()
        for t in targets.values():
            t.wait_ready()
        meta = httpx.get(f"http://127.0.0.1:{targets['drift-on'].port}/v2/models/iris").json()
        print(f"drift-on metadata: {meta['parameters']['drift']}")
        for rnd in range(args.rounds):
            for conc, rows in CELLS:
                order = ["drift-off", "drift-on"] if rnd % 2 == 0 else ["drift-on", "drift-off"]
                for label in order:
                    print(f"  round {rnd + 1}:", end="")
                    cell = [(conc, rows)]
                    r = asyncio.run(
                        measure(targets[label], args.duration, args.max_requests, cell)
                    )[(conc, rows)]
                    results.setdefault((label, conc, rows), []).append(r)
    finally:
        for t in targets.values():
            t.stop()
    print(f"\nmedian of {args.rounds} rounds, {args.duration:g} s each, V2 JSON:")
    for conc, rows in CELLS:
        off = median_result(results[("drift-off", conc, rows)])
        on = median_result(results[("drift-on", conc, rows)])
        print(
            f"  c={conc:<3} rows={rows}  off {off[0]:6.0f} req/s p50 {off[1]:.2f} "
            f"p99 {off[2]:.2f} ms"
            f"  |  on {on[0]:6.0f} req/s p50 {on[1]:.2f} p99 {on[2]:.2f} ms"
            f"  |  on/off throughput {on[0] / off[0]:.3f}, p50 {on[1] - off[1]:+.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
