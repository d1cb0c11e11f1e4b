"""In-process benchmark: the server's forest fast path against scikit-learn's own predict.

Two forests: the serve bench's 100-tree iris RandomForest (shallow trees, depth ~8) and a
100-tree RandomForest on a 10 000-row, 20-feature synthetic problem (deep trees, depth ~27,
~150 000 nodes). For each batch size it times ``model.predict`` and ``compile_forest(model)
.predict`` alternately, call by call, so both see the same machine, prints the medians and the
ratio, and checks that both return the same array (it stops if they ever differ).

    .venv/bin/python bench/forest_bench.py          # about a minute

Figures are reported, never asserted.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import numpy as np
from modeldeploy_server.runtime.forest import compile_forest, verify
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier

BATCHES = (1, 8, 32, 100, 1000)


def _time_ms(fn: Any, x: np.ndarray[Any, Any], times: list[float]) -> None:
    started = time.perf_counter()
    fn(x)
    times.append((time.perf_counter() - started) * 1000)


def main() -> int:
    iris_x, iris_y = load_iris(return_X_y=True)
    synth_x, synth_y = make_classification(
        n_samples=10_000, n_features=20, n_informative=10, random_state=0
    )
    cases = [
        ("iris, 100 trees", iris_x, iris_y),
        ("synthetic 10k x 20, 100 trees", synth_x, synth_y),
    ]
    rng = np.random.default_rng(0)
    for label, x, y in cases:
        model = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
        fast = compile_forest(model)
        assert fast is not None
        started = time.perf_counter()
        mismatch = verify(model, fast)
        check_ms = (time.perf_counter() - started) * 1000
        if mismatch is not None:
            print(f"{label}: the fast path differs ({mismatch}); nothing to measure")
            return 1
        depth = max(e.tree_.max_depth for e in model.estimators_)
        nodes = sum(e.tree_.node_count for e in model.estimators_)
        print(f"{label}: depth {depth}, {nodes} nodes; load-time check {check_ms:.0f} ms")
        for rows in BATCHES:
            batch = x[rng.integers(0, len(x), size=rows)]
            if not np.array_equal(model.predict(batch), fast.predict(batch)):
                print(f"  {rows} rows: predictions differ")
                return 1
            theirs: list[float] = []
            ours: list[float] = []
            n = 30 if rows >= 1000 else 100
            for _ in range(n):
                _time_ms(model.predict, batch, theirs)
                _time_ms(fast.predict, batch, ours)
            a, b = statistics.median(theirs), statistics.median(ours)
            print(
                f"  {rows:>5} rows: scikit-learn {a:8.3f} ms   fast path {b:7.3f} ms   "
                f"{a / b:6.1f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
