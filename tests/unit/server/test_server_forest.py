"""The forest fast path gives scikit-learn's own answers, exactly, or steps aside.

Every comparison is ``np.array_equal`` on the arrays scikit-learn returns (same dtype, same bits),
on training rows, probe rows and random rows, for each estimator the path claims to serve.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from modeldeploy_server.runtime import forest as forest_mod
from modeldeploy_server.runtime.forest import ForestPredictor, compile_forest, verify
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

Array = np.ndarray[Any, Any]


def _classification(n_classes: int = 3) -> tuple[Array, Array]:
    x, y = make_classification(
        n_samples=400, n_features=6, n_informative=4, n_classes=n_classes, random_state=0
    )
    return x, y


def _served() -> list[tuple[str, Any, Array]]:
    x, y = _classification()
    xb, yb = _classification(2)
    xr, yr = make_regression(n_samples=300, n_features=5, noise=5.0, random_state=0)
    labels = np.array(["cat", "dog"])[yb]
    return [
        ("random-forest", RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y), x),
        ("extra-trees", ExtraTreesClassifier(n_estimators=25, random_state=0).fit(x, y), x),
        (
            "string-labels",
            RandomForestClassifier(n_estimators=15, random_state=1).fit(xb, labels),
            xb,
        ),
        (
            "shallow-weighted",
            RandomForestClassifier(
                n_estimators=30, max_depth=3, class_weight="balanced", random_state=2
            ).fit(x, y),
            x,
        ),
        (
            "n-jobs-2",
            RandomForestClassifier(n_estimators=20, n_jobs=2, random_state=3).fit(x, y),
            x,
        ),
        ("rf-regressor", RandomForestRegressor(n_estimators=20, random_state=0).fit(xr, yr), xr),
        ("et-regressor", ExtraTreesRegressor(n_estimators=20, random_state=0).fit(xr, yr), xr),
        (
            "pipeline",
            Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("skip", "passthrough"),
                    ("forest", RandomForestClassifier(n_estimators=20, random_state=0)),
                ]
            ).fit(x, y),
            x,
        ),
    ]


SERVED = _served()


def _rows(x: Array) -> list[Array]:
    rng = np.random.default_rng(7)
    return [
        x,
        x[:1],
        rng.normal(size=(50, x.shape[1])) * x.std(axis=0) * 3,
        x[:20].astype(np.float32),
        np.rint(x[:20]).astype(np.int64),
    ]


@pytest.mark.parametrize(
    ("est", "x"), [(e, x) for _, e, x in SERVED], ids=[n for n, _, _ in SERVED]
)
def test_same_answers_as_scikit_learn(est: Any, x: Array) -> None:
    predictor = compile_forest(est)
    assert predictor is not None
    assert predictor.forest.walk is not None
    assert verify(est, predictor) is None
    f = predictor.forest
    for rows in _rows(x):
        expected = est.predict(rows)
        got = predictor.predict(rows)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        proba = est.predict_proba(rows) if hasattr(est, "predict_proba") else None
        if proba is not None:
            method = predictor.method("predict_proba")
            assert method is not None
            assert method(rows).dtype == proba.dtype
            np.testing.assert_array_equal(method(rows), proba)
        # Each way of walking the trees, whatever the row count would pick.
        xt = predictor.transform(rows)
        for path in ("apply", "walk"):
            np.testing.assert_array_equal(f.predict(xt, path=path), expected)
            if proba is not None:
                np.testing.assert_array_equal(f.predict_proba(xt, path=path), proba)


def test_a_regressor_offers_no_predict_proba() -> None:
    est = dict((n, e) for n, e, _ in SERVED)["rf-regressor"]
    predictor = compile_forest(est)
    assert predictor is not None
    assert predictor.method("predict_proba") is None
    assert predictor.method("predict") is not None


def _not_served() -> list[tuple[str, Any]]:
    x, y = _classification()
    multi = np.column_stack([y, y % 2])

    class TweakedForest(RandomForestClassifier):
        def predict(self, X: Any) -> Any:  # noqa: N803  (scikit-learn's argument name)
            return np.zeros(len(X), dtype=int)

    return [
        ("subclass", TweakedForest(n_estimators=3, random_state=0).fit(x, y)),
        ("multi-output", RandomForestClassifier(n_estimators=3, random_state=0).fit(x, multi)),
        ("boosting", GradientBoostingClassifier(n_estimators=3, random_state=0).fit(x, y)),
        ("linear", LogisticRegression(max_iter=500).fit(x, y)),
        ("pipeline-to-linear", Pipeline([("m", LogisticRegression(max_iter=500))]).fit(x, y)),
        ("unfitted", RandomForestClassifier()),
    ]


@pytest.mark.parametrize("est", [e for _, e in _not_served()], ids=[n for n, _ in _not_served()])
def test_other_estimators_are_left_to_scikit_learn(est: Any) -> None:
    assert compile_forest(est) is None


def _forest() -> tuple[RandomForestClassifier, ForestPredictor, Array]:
    x, y = _classification()
    est = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    predictor = compile_forest(est)
    assert predictor is not None
    return est, predictor, x


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_input_it_does_not_handle_gets_scikit_learns_own_answer_or_error() -> None:
    x, y = _classification()
    with_nan = x.copy()
    with_nan[::7, 2] = np.nan  # trained with missing values: the trees route them
    est = RandomForestClassifier(n_estimators=10, random_state=0).fit(with_nan, y)
    predictor = compile_forest(est)
    assert predictor is not None
    probe = x[:30].copy()
    probe[::3, 2] = np.nan
    np.testing.assert_array_equal(predictor.predict(probe), est.predict(probe))
    np.testing.assert_array_equal(predictor.predict_proba(probe), est.predict_proba(probe))
    too_big = x[:2].copy()
    too_big[0, 0] = 1e300  # finite in float64, infinite in float32
    with pytest.raises(ValueError, match="infinity or a value too large"):
        predictor.predict(too_big)
    with pytest.raises(ValueError, match="features"):
        predictor.predict(x[:2, :3])
    with pytest.raises(ValueError, match="could not convert"):
        predictor.predict(np.array([["a"] * x.shape[1]], dtype=object))


def test_verify_names_the_method_and_row_that_differ() -> None:
    est, predictor, _x = _forest()
    f = predictor.forest
    tables = list(f.tables)
    tables[3] = tables[3][:, ::-1].copy()  # one tree's class columns swapped
    broken = ForestPredictor(
        forest_mod._Forest(f.applies, tuple(tables), f.classes, f.n_features, f.estimator),
        (),
        "broken",
    )
    message = verify(est, broken)
    assert message is not None
    assert message.startswith("predict")
    assert "probe row" in message


def test_verify_checks_the_level_walk_on_its_own() -> None:
    est, predictor, _x = _forest()
    f = predictor.forest
    assert f.walk is not None
    # Every split moved just below its threshold: the per-tree path is untouched.
    threshold = np.nextafter(f.walk.threshold, -np.inf)
    walk = forest_mod._Walk(
        f.walk.roots,
        f.walk.feature,
        threshold,
        f.walk.left,
        f.walk.right,
        f.walk.values,
        f.walk.depth,
    )
    broken = ForestPredictor(
        forest_mod._Forest(f.applies, f.tables, f.classes, f.n_features, f.estimator, walk),
        (),
        "broken walk",
    )
    message = verify(est, broken)
    assert message is not None
    assert message.startswith("predict (walk)")


def test_big_forests_skip_the_walk_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    est, _predictor, x = _forest()
    monkeypatch.setattr(forest_mod, "_WALK_MAX_NODES", 10)
    predictor = compile_forest(est)
    assert predictor is not None
    assert predictor.forest.walk is None
    assert verify(est, predictor) is None
    np.testing.assert_array_equal(predictor.predict(x[:1]), est.predict(x[:1]))


def test_verify_puts_n_jobs_back() -> None:
    x, y = _classification()
    est = RandomForestClassifier(n_estimators=8, n_jobs=2, random_state=0).fit(x, y)
    predictor = compile_forest(est)
    assert predictor is not None
    assert verify(est, predictor) is None
    assert est.n_jobs == 2


def test_probe_rows_reach_many_leaves() -> None:
    _est, predictor, _x = _forest()
    rows = forest_mod.probe_rows(predictor).astype(np.float32)
    first_tree = predictor.forest.applies[0]
    leaves = set(first_tree(rows).tolist())
    n_leaves = int((predictor.forest.estimator.estimators_[0].tree_.children_left == -1).sum())
    assert len(leaves) >= n_leaves // 2


def test_the_runtime_uses_it_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    est, _predictor, x = _forest()
    path = tmp_path / "forest.joblib"
    joblib.dump(est, path)
    with caplog.at_level(logging.INFO, logger="modeldeploy_server.runtime.sklearn"):
        runtime = load_sklearn_runtime(path, "sklearn")
    assert runtime.forest is not None
    assert runtime.predict_path == "forest fast path: RandomForestClassifier (10 trees)"
    assert runtime.info.predict_path == runtime.predict_path
    assert "checked against the estimator's own predict" in caplog.text
    np.testing.assert_array_equal(runtime.forest.predict(x), est.predict(x))
    # ... and the runtime's own predict goes through it, for both outputs.
    (labels, proba) = runtime.predict(x, ("output-0", "probabilities"))
    np.testing.assert_array_equal(labels, est.predict(x))
    np.testing.assert_array_equal(proba, est.predict_proba(x))
    assert load_sklearn_runtime(path, "sklearn", fast_forest=False).forest is None
    assert load_sklearn_runtime(path, "sklearn", fast_forest=False).predict_path == "estimator"


def test_the_runtime_falls_back_when_the_check_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A scikit-learn release that changed what a leaf holds can't be installed next to the pinned
    # one, so the check's verdict is what is replaced here.
    est, _predictor, _x = _forest()
    path = tmp_path / "forest.joblib"
    joblib.dump(est, path)
    monkeypatch.setattr(
        "modeldeploy_server.runtime.sklearn.verify",
        lambda *_: "predict differs on probe row 4: 1 vs 2",
    )
    with caplog.at_level(logging.WARNING, logger="modeldeploy_server.runtime.sklearn"):
        runtime = load_sklearn_runtime(path, "sklearn")
    assert runtime.forest is None
    assert runtime.predict_path == "estimator"
    assert "not using the forest fast path" in caplog.text
    assert "probe row 4" in caplog.text
