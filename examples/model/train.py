"""Trains the two tiny iris models the examples serve and prints their sha256 digests.

iris-v1.joblib is a LogisticRegression (the stable version), iris-v2.joblib a shallow
DecisionTree (the canary): both answer the same requests, but their predictions and V2
``model_version`` differ, so a canary split is visible from the outside. Training is
deterministic (fixed seeds); the digests still depend on the scikit-learn/joblib versions that
pickle them, which is why the committed artifacts, not this script, are the source of truth and
``make_store.py`` plus the unit tests keep the YAMLs in sync with the files.

    python examples/model/train.py && python examples/model/make_store.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

HERE = Path(__file__).resolve().parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    x, y = load_iris(return_X_y=True)
    models = {
        "iris-v1.joblib": LogisticRegression(max_iter=500, random_state=0),
        "iris-v2.joblib": DecisionTreeClassifier(max_depth=3, random_state=0),
    }
    for name, model in models.items():
        model.fit(x, y)
        path = HERE / name
        joblib.dump(model, path, compress=3)
        print(
            f"{sha256(path)}  {name}  ({path.stat().st_size} bytes, "
            f"train accuracy {model.score(x, y):.3f})"
        )


if __name__ == "__main__":
    main()
