"""Trains the tiny iris models the examples serve and prints their sha256 digests.

iris-v1.joblib is a LogisticRegression (the stable version), iris-v2.joblib a shallow
DecisionTree (the canary): both answer the same requests, but their predictions and V2
``model_version`` differ, so a canary split is visible from the outside.

Two more are deliberately bad, for the progressive-rollout examples and e2e tests that must be
aborted: iris-v3-broken.joblib is a DecisionTree whose third class label is a
``decimal.Decimal``, which the server cannot write as JSON, so every V1 request with a virginica
row gets a 500 while the other rows are answered; iris-v3-constant.joblib always predicts class
0 (setosa): no errors and fast, but its predictions differ from stable's on the same traffic.

Training is deterministic (fixed seeds); the digests still depend on the scikit-learn/joblib
versions that pickle them, which is why the committed artifacts, not this script, are the source
of truth and ``make_store.py`` plus the unit tests keep the YAMLs in sync with the files. Name
files to write only those:

    python examples/model/train.py iris-v3-constant.joblib && python examples/model/make_store.py
"""

from __future__ import annotations

import hashlib
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

HERE = Path(__file__).resolve().parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _broken(x: Any, y: Any) -> DecisionTreeClassifier:
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    # scikit-learn predicts by indexing classes_: class 2 comes out as a Decimal.
    model.classes_ = np.array([0, 1, Decimal(2)], dtype=object)
    return model


def main(only: list[str]) -> None:
    x, y = load_iris(return_X_y=True)
    models = {
        "iris-v1.joblib": LogisticRegression(max_iter=500, random_state=0).fit(x, y),
        "iris-v2.joblib": DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y),
        "iris-v3-broken.joblib": _broken(x, y),
        "iris-v3-constant.joblib": DummyClassifier(strategy="constant", constant=0).fit(x, y),
    }
    for name, model in models.items():
        if only and name not in only:
            continue
        path = HERE / name
        joblib.dump(model, path, compress=3)
        print(
            f"{sha256(path)}  {name}  ({path.stat().st_size} bytes, "
            # == rather than score(): the broken model's labels are not all one type.
            f"train accuracy {np.mean(model.predict(x) == y):.3f})"
        )


if __name__ == "__main__":
    # Names given: write only those (the committed artifacts of the others stay as they are).
    main(sys.argv[1:])
