"""Predict with tree forests without joblib's per-tree dispatch, bit for bit as scikit-learn does.

``RandomForest*.predict`` and ``ExtraTrees*.predict`` hand every tree to ``joblib.Parallel``; for
the one-row requests a model server mostly sees, that bookkeeping is about 90 µs per tree, so a
100-tree forest spends ~9 ms around well under 1 ms of actual tree walking. Here the same fitted
trees are walked directly: a few rows walk all trees at once, a level per numpy step; more rows
call each tree's own Cython ``Tree.apply``. Either way the leaf outputs are summed in the
estimators' order with the same float64 arithmetic as
``sklearn.ensemble._forest._accumulate_prediction``, then divided by the number of trees: the
result is the one ``est.predict`` returns, not an approximation.

That claim rests on scikit-learn internals (what a tree's ``predict_proba`` returns for a leaf,
how a split compares), so ``verify`` checks both walks against the estimator itself on probe rows
when the model loads; the server uses a ``ForestPredictor`` only if every probe matches exactly,
and otherwise keeps calling the estimator. Input this path does not handle (non-numeric,
non-finite, wrong width) is passed to the estimator, which answers or raises exactly as without
this module. Pure: no I/O, no globals.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

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


# Above this many nodes in all trees together the walk tables are not built: they cost 32 bytes
# plus 8 per class a node (two thirds of the trees' own memory again for 3 classes; int32 indices
# would save 12 but make every walk 40 % slower), and such forests take the per-tree path.
_WALK_MAX_NODES = 1_000_000
# Walking all trees at once costs depth x rows x trees numpy work, calling Tree.apply per tree a
# fixed ~4 µs each plus rows x depth in C: the walk wins only while rows x depth is small.
_WALK_MAX_ROW_LEVELS = 128


@dataclass(frozen=True, slots=True)
class _Walk:
    """Every tree's nodes in one set of flat arrays, to walk all trees a level at a time.

    Leaves point to themselves with an infinite threshold, so walking ``depth`` levels leaves
    every row in its leaf whatever its path length. Only finite float32 input comes here, where
    "go left iff x <= threshold" (float32 promoted to float64) is all Tree.apply does.
    """

    roots: Array  # (trees,) index of each tree's root in the flat arrays
    feature: Array
    threshold: Array
    left: Array
    right: Array
    values: Array  # the per-tree tables, concatenated
    depth: int

    def mean_terms(self, x32: Array) -> Array:
        """(trees, rows, ...) leaf outputs, trees in the estimators' order."""
        nodes = np.broadcast_to(self.roots, (x32.shape[0], self.roots.shape[0]))
        rows = np.arange(x32.shape[0])[:, None]
        for _ in range(self.depth):
            go_left = x32[rows, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(go_left, self.left[nodes], self.right[nodes])
        terms: Array = self.values[nodes.T]
        return terms


def _walk(trees: list[Any], tables: list[Array]) -> _Walk | None:
    sizes = [int(t.node_count) for t in trees]
    if sum(sizes) > _WALK_MAX_NODES:
        return None
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    feature, threshold, left, right = [], [], [], []
    for t, offset in zip(trees, offsets, strict=True):
        leaf = t.children_left == -1
        own = np.arange(t.node_count)
        feature.append(np.where(leaf, 0, t.feature))
        threshold.append(np.where(leaf, np.inf, t.threshold))
        left.append(np.where(leaf, own, t.children_left) + offset)
        right.append(np.where(leaf, own, t.children_right) + offset)
    return _Walk(
        roots=offsets,
        feature=np.concatenate(feature).astype(np.intp),
        threshold=np.concatenate(threshold),
        left=np.concatenate(left).astype(np.intp),
        right=np.concatenate(right).astype(np.intp),
        values=np.concatenate(tables),
        depth=max(int(t.max_depth) for t in trees),
    )


@dataclass(frozen=True, slots=True)
class _Forest:
    """The parts of a fitted single-output forest that predicting needs."""

    applies: tuple[Callable[[Array], Array], ...]  # each tree's Cython Tree.apply
    tables: tuple[Array, ...]  # per tree: what its predict(_proba) gives for each node
    classes: Array | None  # None for a regressor
    n_features: int
    estimator: Any  # the forest, for input this path leaves to scikit-learn
    walk: _Walk | None = None

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

    def _mean(self, x32: Array, path: str | None = None) -> Array:
        """Mean leaf output over the trees, summed one tree after another from zero as
        scikit-learn's forests do, so the float64 result is bit for bit theirs."""
        if path is None:
            small = self.walk is not None and x32.shape[0] * self.walk.depth <= _WALK_MAX_ROW_LEVELS
            path = "walk" if small else "apply"
        if path == "walk":
            assert self.walk is not None
            # accumulate is strictly sequential along the axis (np.sum may pair terms up).
            out: Array = np.add.accumulate(self.walk.mean_terms(x32), axis=0)[-1]
        else:
            width = self.tables[0].shape[1:]
            out = np.zeros((x32.shape[0], *width), dtype=np.float64)
            for apply, table in zip(self.applies, self.tables, strict=True):
                out += table.take(apply(x32), axis=0)
        out /= len(self.applies)
        return out

    def predict(self, x: Array, path: str | None = None) -> Array:
        x32 = self._float32(x)
        if x32 is None:
            return np.asarray(self.estimator.predict(x))
        mean = self._mean(x32, path)
        if self.classes is None:
            return mean
        labels: Array = self.classes.take(np.argmax(mean, axis=1), axis=0)
        return labels

    def predict_proba(self, x: Array, path: str | None = None) -> Array:
        x32 = self._float32(x)
        if self.classes is None or x32 is None:
            return np.asarray(self.estimator.predict_proba(x))
        return self._mean(x32, path)


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
    tables: list[Array] = []
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
    walk = _walk([t.tree_ for t in trees], tables)
    return _Forest(tuple(applies), tuple(tables), classes, n_features, est, walk)


@dataclass(frozen=True, slots=True)
class ForestPredictor:
    """Drop-in ``predict``/``predict_proba`` for a forest, or a Pipeline ending in one."""

    forest: _Forest
    transforms: tuple[Method, ...]  # the Pipeline's steps before the forest, in order
    description: str

    def transform(self, x: Array) -> Array:
        """x through the Pipeline's steps before the forest (x itself for a bare forest)."""
        # As Pipeline.predict does without metadata routing: each step's transform in turn.
        for transform in self.transforms:
            x = transform(x)
        return x

    def predict(self, x: Array) -> Array:
        return self.forest.predict(self.transform(x))

    def predict_proba(self, x: Array) -> Array:
        return self.forest.predict_proba(self.transform(x))

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
    trees = [tree.tree_ for tree in f.estimator.estimators_]
    features = np.concatenate([t.feature for t in trees])  # negative at leaves
    thresholds = np.concatenate([t.threshold for t in trees])
    rows = np.empty((n, f.n_features), dtype=np.float64)
    for j in range(f.n_features):
        cuts = thresholds[features == j]
        if cuts.size == 0:
            rows[:, j] = rng.normal(size=n)
            continue
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


class _Check(NamedTuple):
    label: str
    theirs: Method
    ours: Method
    rows: Array
    may_refuse: bool = False  # the estimator may raise on these rows: skip, don't fail


def verify(est: Any, predictor: ForestPredictor) -> str | None:
    """None if ``predictor`` answers exactly as ``est`` on probe rows, else what differed.

    The forest is probed on rows built from its own split thresholds, a Pipeline also end to end
    on numeric rows of its input width (skipped if its steps refuse them: then there is nothing
    to compare). With ``n_jobs`` > 1 a forest sums its trees in whatever order the threads finish,
    so its last bits vary from call to call; the probe compares with ``n_jobs=1``, the order this
    module always uses, and puts the user's setting back afterwards. Both ways of walking the
    trees are checked on every probe row, whichever the row count would pick.
    """
    f = predictor.forest
    checks: list[_Check] = []
    probe = probe_rows(predictor)
    for path in ("apply", "walk") if f.walk is not None else ("apply",):
        ours = partial(f.predict, path=path)
        checks.append(_Check(f"predict ({path})", f.estimator.predict, ours, probe))
        if f.classes is not None:
            proba = partial(f.predict_proba, path=path)
            checks.append(
                _Check(f"predict_proba ({path})", f.estimator.predict_proba, proba, probe)
            )
    raw = _raw_rows(est) if predictor.transforms else None
    if raw is not None:
        # Made-up input the steps may refuse; then there is nothing to compare.
        checks.append(_Check("pipeline predict", est.predict, predictor.predict, raw, True))
    n_jobs = getattr(f.estimator, "n_jobs", None)
    f.estimator.n_jobs = None
    try:
        with warnings.catch_warnings():
            # Probe rows are plain arrays; a model fitted on a DataFrame warns on each call.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return _first_difference(checks)
    finally:
        f.estimator.n_jobs = n_jobs


def _first_difference(checks: list[_Check]) -> str | None:
    for label, theirs, ours, rows, may_refuse in checks:
        try:
            expected = np.asarray(theirs(rows))
        except Exception:
            if may_refuse:
                continue  # ours runs the same steps, so it would refuse alike
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
