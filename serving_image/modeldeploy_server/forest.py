"""Predict with tree forests without joblib's per-tree dispatch, bit for bit as scikit-learn does.

``RandomForest*.predict`` and ``ExtraTrees*.predict`` hand every tree to ``joblib.Parallel``; for
the one-row requests a model server mostly sees, that bookkeeping is about 90 µs per tree, so a
100-tree forest spends ~9 ms around ~0.4 ms of actual tree walking. Here the same fitted trees are
walked with scikit-learn's own Cython ``Tree.apply`` (same float32 input, same missing-value
routing) and their leaf outputs summed in the estimators' order with the same float64 arithmetic
as ``sklearn.ensemble._forest._accumulate_prediction``, then divided by the number of trees: the
result is the one ``est.predict`` returns, not an approximation.

That claim rests on scikit-learn internals (what a tree's ``predict_proba`` returns for a leaf), so
``verify`` checks it against the estimator itself on probe rows when the model loads; the server
uses a ``ForestPredictor`` only if every probe matches exactly, and otherwise keeps calling the
estimator. Input this path does not handle (non-numeric, non-finite, wrong width) is passed to the
estimator, which answers or raises exactly as without this module. Pure: no I/O, no globals.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
Method = Callable[[Array], Array]

# Exact classes, not subclasses: a subclass may override predict, and then its answer is the one
# to serve.
_CLASSIFIERS = ("RandomForestClassifier", "ExtraTreesClassifier")
_REGRESSORS = ("RandomForestRegressor", "ExtraTreesRegressor")
_TREES = (
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "ExtraTreeClassifier",
    "ExtraTreeRegressor",
)


def _exact(est: Any, module: str, names: tuple[str, ...]) -> bool:
    cls = type(est)
    return cls.__module__ == module and cls.__name__ in names


@dataclass(frozen=True, slots=True)
class _Forest:
    """The parts of a fitted single-output forest that predicting needs."""

    applies: tuple[Callable[[Array], Array], ...]  # each tree's Cython Tree.apply
    tables: tuple[Array, ...]  # per tree: what its predict(_proba) gives for each node
    classes: Array | None  # None for a regressor
    n_features: int
    estimator: Any  # the forest, for input this path leaves to scikit-learn

    def _float32(self, x: Any) -> Array | None:
        """x as the float32 matrix scikit-learn would walk, or None to let scikit-learn decide."""
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.n_features:
            return None
        if x.dtype.kind not in "biuf":
            return None
        with np.errstate(over="ignore"):  # a float64 beyond float32's range: caught just below
            x32 = np.asarray(x, dtype=np.float32)
        # NaN (routed by the trees' missing-value rules, or refused) and overflow are rare; the
        # estimator's own validation gives the exact answer or message for them.
        if not np.isfinite(x32).all():
            return None
        return x32

    def _mean(self, x32: Array) -> Array:
        width = self.tables[0].shape[1:]
        out = np.zeros((x32.shape[0], *width), dtype=np.float64)
        for apply, table in zip(self.applies, self.tables, strict=True):
            out += table.take(apply(x32), axis=0)
        out /= len(self.applies)
        return out

    def predict(self, x: Array) -> Array:
        x32 = self._float32(x)
        if x32 is None:
            return np.asarray(self.estimator.predict(x))
        mean = self._mean(x32)
        if self.classes is None:
            return mean
        labels: Array = self.classes.take(np.argmax(mean, axis=1), axis=0)
        return labels

    def predict_proba(self, x: Array) -> Array:
        x32 = self._float32(x)
        if self.classes is None or x32 is None:
            return np.asarray(self.estimator.predict_proba(x))
        return self._mean(x32)


def _forest(est: Any) -> _Forest | None:
    module = "sklearn.ensemble._forest"
    is_classifier = _exact(est, module, _CLASSIFIERS)
    if not (is_classifier or _exact(est, module, _REGRESSORS)):
        return None
    trees = getattr(est, "estimators_", None)
    if not trees or getattr(est, "n_outputs_", None) != 1:
        return None
    n_features = getattr(est, "n_features_in_", None)
    if not isinstance(n_features, int):
        return None
    applies = []
    tables = []
    for tree in trees:
        if not _exact(tree, "sklearn.tree._classes", _TREES) or tree.n_outputs_ != 1:
            return None
        tree_ = tree.tree_
        values = np.asarray(tree_.value)  # (nodes, outputs, classes), float64
        if values.ndim != 3 or values.dtype != np.float64:
            return None
        # A single-output tree's predict_proba is value[:, 0, :n_classes_] at the leaf (stored as
        # fractions since scikit-learn 1.4); a regression tree's predict is value[:, 0, 0].
        tables.append(
            np.ascontiguousarray(
                values[:, 0, : int(tree.n_classes_)] if is_classifier else values[:, 0, 0]
            )
        )
        applies.append(tree_.apply)
    if len({t.shape[1:] for t in tables}) != 1:
        return None
    classes = np.asarray(est.classes_) if is_classifier else None
    if classes is not None and (classes.ndim != 1 or tables[0].shape[1] != len(classes)):
        return None
    return _Forest(tuple(applies), tuple(tables), classes, n_features, est)


@dataclass(frozen=True, slots=True)
class ForestPredictor:
    """Drop-in ``predict``/``predict_proba`` for a forest, or a Pipeline ending in one."""

    forest: _Forest
    transforms: tuple[Method, ...]  # the Pipeline's steps before the forest, in order
    description: str

    def _transformed(self, x: Array) -> Array:
        # As Pipeline.predict does without metadata routing: each step's transform in turn.
        for transform in self.transforms:
            x = transform(x)
        return x

    def predict(self, x: Array) -> Array:
        return self.forest.predict(self._transformed(x))

    def predict_proba(self, x: Array) -> Array:
        return self.forest.predict_proba(self._transformed(x))

    def method(self, name: str) -> Method | None:
        """The replacement for ``getattr(estimator, name)``, or None where there is none."""
        if name == "predict":
            return self.predict
        if name == "predict_proba" and self.forest.classes is not None:
            return self.predict_proba
        return None


def compile_forest(est: Any) -> ForestPredictor | None:
    """A ForestPredictor for ``est`` if it is a forest this module serves exactly, else None."""
    transforms: list[Method] = []
    final = est
    if _exact(est, "sklearn.pipeline", ("Pipeline",)):
        steps = list(getattr(est, "steps", []))
        if not steps:
            return None
        for _, step in steps[:-1]:
            if step is None or (isinstance(step, str) and step == "passthrough"):
                continue
            transforms.append(step.transform)
        final = steps[-1][1]
    forest = _forest(final)
    if forest is None:
        return None
    name = type(final).__name__
    description = (
        f"{name} ({len(forest.applies)} trees) after {len(transforms)} pipeline steps"
        if transforms or final is not est
        else f"{name} ({len(forest.applies)} trees)"
    )
    return ForestPredictor(forest, tuple(transforms), description)


def probe_rows(forest: ForestPredictor, n: int = 256, seed: int = 0) -> Array:
    """Rows that reach many different leaves: each feature at, just above or between the
    thresholds the trees split it on. Input to the forest itself (after any Pipeline steps)."""
    rng = np.random.default_rng(seed)
    f = forest.forest
    thresholds: list[list[float]] = [[] for _ in range(f.n_features)]
    for tree in f.estimator.estimators_:
        t = tree.tree_
        for feature, threshold in zip(t.feature, t.threshold, strict=True):
            if feature >= 0:
                thresholds[int(feature)].append(float(threshold))
    rows = np.empty((n, f.n_features), dtype=np.float64)
    for j, ts in enumerate(thresholds):
        if not ts:
            rows[:, j] = rng.normal(size=n)
            continue
        cuts = np.array(ts)
        picked = rng.choice(cuts, size=n)
        lo, hi = float(cuts.min()), float(cuts.max())
        spread = max(hi - lo, 1.0)
        nudged = np.nextafter(picked.astype(np.float32), np.float32(np.inf)).astype(np.float64)
        between = rng.uniform(lo - 0.1 * spread, hi + 0.1 * spread, size=n)
        rows[:, j] = np.select(
            [rng.random(n) < 1 / 3, rng.random(n) < 1 / 2], [picked, nudged], between
        )
    return rows


def _raw_rows(est: Any, n: int = 64, seed: int = 1) -> Array | None:
    """Numeric rows shaped like a Pipeline's own input, at a few magnitudes."""
    width = getattr(est, "n_features_in_", None)
    if not isinstance(width, int):
        return None
    rng = np.random.default_rng(seed)
    scale = np.repeat([1.0, 10.0, 1000.0, 0.01], n // 4 + 1)[:n, None]
    rows: Array = rng.normal(size=(n, width)) * scale
    return rows


def verify(est: Any, predictor: ForestPredictor) -> str | None:
    """None if ``predictor`` answers exactly as ``est`` on probe rows, else what differed.

    The forest is probed on rows built from its own split thresholds, a Pipeline also end to end
    on numeric rows of its input width (skipped if its steps refuse them: then there is nothing
    to compare). With ``n_jobs`` > 1 a forest sums its trees in whatever order the threads finish,
    so its last bits vary from call to call; the probe compares with ``n_jobs=1``, the order this
    module always uses, and puts the user's setting back afterwards.
    """
    f = predictor.forest
    checks: list[tuple[str, Method, Method, Array]] = []
    probe = probe_rows(predictor)
    checks.append(("predict", f.estimator.predict, f.predict, probe))
    if f.classes is not None:
        checks.append(("predict_proba", f.estimator.predict_proba, f.predict_proba, probe))
    raw = _raw_rows(est) if predictor.transforms else None
    if raw is not None:
        checks.append(("pipeline predict", est.predict, predictor.predict, raw))
    n_jobs = getattr(f.estimator, "n_jobs", None)
    f.estimator.n_jobs = None
    try:
        with warnings.catch_warnings():
            # Probe rows are plain arrays; a model fitted on a DataFrame warns on each call.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return _first_difference(checks)
    finally:
        f.estimator.n_jobs = n_jobs


def _first_difference(checks: list[tuple[str, Method, Method, Array]]) -> str | None:
    for label, theirs, ours, rows in checks:
        try:
            expected = np.asarray(theirs(rows))
        except Exception:
            if label == "pipeline predict":
                continue  # the steps refuse made-up input; ours runs the same steps
            raise
        got = ours(rows)
        if expected.shape != got.shape or expected.dtype != got.dtype:
            return (
                f"{label}: scikit-learn gives {expected.dtype}{list(expected.shape)}, "
                f"the forest path {got.dtype}{list(got.shape)}"
            )
        if not np.array_equal(expected, got):
            row = int(np.argwhere(expected != got)[0][0])
            return f"{label} differs on probe row {row}: {expected[row]!r} vs {got[row]!r}"
    return None
