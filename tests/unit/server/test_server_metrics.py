"""Predicted-class counting: same counts for small and large batches, a bounded label set."""

from __future__ import annotations

import numpy as np
from modeldeploy_server.metrics import Metrics


def _count(m: Metrics, label: str) -> float | None:
    return m.registry.get_sample_value("modeldeploy_predicted_class_total", {"class": label})


def test_small_and_large_batches_count_alike() -> None:
    small, large = Metrics(), Metrics()
    preds = np.array(["cat", "dog", "cat", "bird"] * 10)
    for start in range(0, len(preds), 4):  # batches of 4: the loop
        small.observe_predictions(preds[start : start + 4], classifier=True)
    large.observe_predictions(preds, classifier=True)  # one batch of 40: np.unique
    for label, n in (("cat", 20.0), ("dog", 10.0), ("bird", 10.0)):
        assert _count(small, label) == n
        assert _count(large, label) == n


def test_class_labels_are_capped() -> None:
    m = Metrics()
    m.observe_predictions(np.arange(150), classifier=True)
    m.observe_predictions(np.array([149, 0]), classifier=True)
    assert _count(m, "0") == 2.0
    assert _count(m, "99") == 1.0
    assert _count(m, "100") is None
    assert _count(m, "__other__") == 51.0
