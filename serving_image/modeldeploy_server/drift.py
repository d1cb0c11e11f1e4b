"""Feature drift and data quality of the served rows, measured against the reference profile.

Served batches are queued and binned together every ``FLUSH_ROWS`` rows (and before every read-out)
into the profile's bins (profile.py) in a few whole-array numpy operations: one broadcast
comparison against all numeric features' edges at once, a dictionary lookup per value for
categorical ones, one ``np.bincount`` over every feature and the prediction together. The counts go
into cumulative totals (the Prometheus counters) and into a sliding window of the last
``window_rows`` rows, kept as ``buckets`` row buckets (the oldest dropped whole, so the window
holds between (buckets-1)/buckets and all of ``window_rows``). PSI per feature and for the
predictions is computed from the window only when /metrics is scraped, by a custom collector, so
the request path pays for the binning alone. Without a profile the tracker still counts missing
values (NaN, None) per column. Label values are bounded: at most ``MAX_FEATURES`` features, bins as
in the profile.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from modeldeploy_server.metrics import Metrics
from modeldeploy_server.profile import (
    MAX_FEATURES,
    CategoricalFeature,
    NumericFeature,
    Profile,
    as_float,
    categorical_codes,
    is_missing,
)

log = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]

# A bin empty on one side would make PSI infinite; shares below this count as this (1e-4: a bin
# with 0.1% of the rows against none in training adds (0.001-0.0001)*ln(10) = 0.002).
PSI_EPSILON = 1e-4
DEFAULT_WINDOW_ROWS = 10_000
DEFAULT_BUCKETS = 10
FLUSH_ROWS = 256  # queued rows binned together (never more than a window bucket)


@dataclass(frozen=True, slots=True)
class _Slots:
    """Where one tracked column's bins sit in the shared count vector."""

    name: str
    offset: int
    size: int  # every bin, out-of-range and missing included
    labels: tuple[str, ...]  # the bins other than missing, in slot order
    out_of_range: tuple[int, ...]  # slot indices (relative) counted as out of range
    expected: Array  # training share of each slot, missing included; sums to 1

    @property
    def missing(self) -> int:
        return self.size - 1


def _slots(feature: NumericFeature | CategoricalFeature, name: str, offset: int) -> _Slots:
    present = 1 - feature.missing_share
    if isinstance(feature, NumericFeature):
        inner = np.asarray(feature.shares) * present
        expected = np.concatenate([[0.0], inner, [0.0, feature.missing_share]])
        k = feature.bins
        return _Slots(name, offset, k + 3, tuple(feature.labels()), (0, k + 1), expected)
    shares = np.asarray([*feature.shares, feature.other_share]) * present
    expected = np.concatenate([shares, [feature.missing_share]])
    m = feature.bins
    return _Slots(name, offset, m + 2, tuple(feature.labels()), (m,), expected)


def psi(actual: Array, expected: Array, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of counts (or shares) ``actual`` against shares ``expected``:
    sum over bins of (a - e) * ln(a / e), both shares floored at ``epsilon``."""
    total = float(actual.sum())
    if total <= 0:
        return float("nan")
    a = np.maximum(actual / total, epsilon)
    e = np.maximum(expected, epsilon)
    return float(((a - e) * np.log(a / e)).sum())


class DriftTracker:
    """Bins served rows against a profile (or, without one, counts missing values only)."""

    def __init__(
        self,
        profile: Profile | None,
        metrics: Metrics | None = None,
        *,
        window_rows: int = DEFAULT_WINDOW_ROWS,
        buckets: int = DEFAULT_BUCKETS,
        feature_names: Sequence[str] | None = None,
        n_features: int | None = None,
        source: str = "",
        off_reason: str = "no reference profile",
    ) -> None:
        self._lock = threading.Lock()
        self.off_reason = off_reason
        self.profile: Profile | None = None
        if profile is not None:
            mismatch = _mismatch(profile, feature_names, n_features)
            if mismatch is None:
                self.profile = profile
            else:
                self.off_reason = f"profile {source or 'given'} does not fit the model: {mismatch}"
                log.warning("drift tracking off: %s", self.off_reason)
        self.source = source
        self._bucket_rows = max(1, window_rows // max(1, buckets))
        self._buckets = max(1, buckets)
        # Without a profile: missing values per column, named like the model's columns.
        width = min(n_features or MAX_FEATURES, MAX_FEATURES)
        self._names = (
            [str(n) for n in feature_names[:width]]
            if feature_names is not None
            else [f"x{j}" for j in range(width)]
        )
        self._missing = np.zeros(width, dtype=np.int64)
        self._seen = 0  # columns seen so far: only those are exported
        self._columns: list[_Slots] = []
        self._prediction: _Slots | None = None
        size = 0
        if self.profile is not None:
            self._build(self.profile)
            size = sum(c.size for c in self._columns) + (
                self._prediction.size if self._prediction is not None else 0
            )
        self._total = np.zeros(size, dtype=np.int64)
        self._window = np.zeros(size, dtype=np.int64)
        self._bucket = np.zeros(size, dtype=np.int64)
        self._bucket_n = 0
        self._ring: deque[tuple[Array, int]] = deque()
        self._window_n = 0
        self._pending_x: list[Array] = []
        self._pending_p: list[Array] = []
        self._pending_n = 0
        self._flush_rows = min(FLUSH_ROWS, self._bucket_rows)
        if metrics is not None:
            metrics.registry.register(_Collector(self))

    # ---- set-up ----------------------------------------------------------------------------

    def _build(self, profile: Profile) -> None:
        offset = 0
        num: list[tuple[int, NumericFeature]] = []
        cat: list[tuple[int, CategoricalFeature]] = []
        for j, f in enumerate(profile.features):
            slots = _slots(f, f.name, offset)
            self._columns.append(slots)
            offset += slots.size
            if isinstance(f, NumericFeature):
                num.append((j, f))
            else:
                cat.append((j, f))
        if profile.prediction is not None:
            self._prediction = _slots(profile.prediction, "prediction", offset)
        # Numeric features side by side: interior edges padded with +inf (never <= a value).
        kmax = max((len(f.edges) - 2 for _, f in num), default=0)
        inner = np.full((len(num), max(kmax, 0)), np.inf)
        for i, (_, f) in enumerate(num):
            inner[i, : max(len(f.edges) - 2, 0)] = f.edges[1:-1]
        self._num_idx = np.asarray([j for j, _ in num], dtype=np.intp)
        self._num_all = self._num_idx.tolist() == list(range(len(num))) and len(num) > 0
        self._inner = inner
        self._lo = np.asarray([f.edges[0] for _, f in num])
        self._hi = np.asarray([f.edges[-1] for _, f in num])
        self._above = np.asarray([f.bins + 1 for _, f in num], dtype=np.int64)
        self._miss = np.asarray([f.bins + 2 for _, f in num], dtype=np.int64)
        self._num_off = np.asarray([self._columns[j].offset for j, _ in num], dtype=np.int64)
        self._cat = [(j, f.categories, self._columns[j].offset) for j, f in cat]
        self._pred_feature = profile.prediction
        self._width = len(profile.features)

    @property
    def enabled(self) -> bool:
        return self.profile is not None

    def describe(self) -> str:
        """What the V2 model metadata says about drift tracking."""
        if self.profile is None:
            return f"off: {self.off_reason}"
        return f"on (profile {self.source or 'given'}, schema v{self.profile.schema_version})"

    # ---- per batch -------------------------------------------------------------------------

    def observe(self, x: Array, predictions: Array | None = None) -> None:
        """Count one batch: ``x`` as the model took it (rows first), its default output.

        Batches are queued and binned together every ``flush_rows`` rows (and before every
        read-out): a numpy call costs about a microsecond whatever its size, so binning 256
        single-row batches at once costs a few microseconds more than binning one.
        """
        if x.ndim != 2 or x.shape[0] == 0:
            return
        with self._lock:
            self._pending_x.append(x)
            if predictions is not None and predictions.ndim == 1:
                self._pending_p.append(predictions)
            self._pending_n += x.shape[0]
            if self._pending_n >= self._flush_rows:
                self._flush()

    def _flush(self) -> None:
        """Bin the queued batches; the lock is held."""
        xs, ps = self._pending_x, self._pending_p
        self._pending_x, self._pending_p, self._pending_n = [], [], 0
        for x in _stacked(xs):
            if self.profile is None:
                self._count_missing(x)
            elif x.shape[1] >= self._width:
                self._bin(x, None)
        if self.profile is not None:
            for p in _stacked(ps):
                self._bin(None, p)

    def _bin(self, x: Array | None, predictions: Array | None) -> None:
        parts = []
        n = 0
        if x is not None:
            n = x.shape[0]
            if len(self._num_idx):
                v = x if self._num_all and x.shape[1] == len(self._num_idx) else x[:, self._num_idx]
                if v.dtype.kind != "f":
                    v = np.column_stack([as_float(v[:, i]) for i in range(v.shape[1])])
                codes = (v[:, :, None] >= self._inner).sum(axis=2) + 1
                codes[v < self._lo] = 0
                codes = np.where(v > self._hi, self._above, codes)
                codes = np.where(np.isnan(v), self._miss, codes)
                parts.append((codes + self._num_off).ravel())
            for j, categories, offset in self._cat:
                parts.append(categorical_codes(x[:, j], categories) + offset)
        pred = self._prediction
        if pred is not None and predictions is not None:
            f = self._pred_feature
            if isinstance(f, NumericFeature):
                pv = as_float(predictions)
                pc = np.searchsorted(np.asarray(f.edges[1:-1]), pv, side="right") + 1
                pc[pv < f.edges[0]] = 0
                pc[pv > f.edges[-1]] = f.bins + 1
                pc[np.isnan(pv)] = f.bins + 2
            else:
                assert isinstance(f, CategoricalFeature)
                pc = categorical_codes(predictions, f.categories)
            parts.append(pc + pred.offset)
        if not parts:
            return
        counts = np.bincount(
            parts[0] if len(parts) == 1 else np.concatenate(parts), minlength=self._total.size
        )
        self._total += counts
        self._window += counts
        self._bucket += counts
        self._bucket_n += n
        self._window_n += n
        if self._bucket_n >= self._bucket_rows:
            self._ring.append((self._bucket, self._bucket_n))
            self._bucket = np.zeros_like(self._total)
            self._bucket_n = 0
            if len(self._ring) >= self._buckets:
                old, old_n = self._ring.popleft()
                self._window -= old
                self._window_n -= old_n

    def _count_missing(self, x: Array) -> None:
        cols = x[:, : self._missing.size]
        if cols.dtype.kind in "iub":
            return
        found = is_missing(cols).sum(axis=0)
        self._missing[: found.size] += found
        self._seen = max(self._seen, found.size)

    # ---- read-out (scrape time) ------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Totals and PSI per feature (and prediction) from the current window."""
        with self._lock:
            self._flush()
            total = self._total.copy()
            window = self._window.copy()
            rows = self._window_n
            missing = self._missing[: self._seen].copy()
        out: dict[str, Any] = {"window_rows": rows, "features": {}, "prediction_psi": None}
        if self.profile is None:
            out["missing"] = dict(zip(self._names, missing.tolist(), strict=False))
            return out
        for c in self._columns:
            t = total[c.offset : c.offset + c.size]
            w = window[c.offset : c.offset + c.size]
            out["features"][c.name] = {
                "bins": dict(zip(c.labels, t[: c.missing].tolist(), strict=True)),
                "missing": int(t[c.missing]),
                "out_of_range": int(sum(int(t[i]) for i in c.out_of_range)),
                "psi": psi(w, c.expected) if w.sum() else None,
            }
        p = self._prediction
        if p is not None:
            w = window[p.offset : p.offset + p.size]
            out["prediction_psi"] = psi(w, p.expected) if w.sum() else None
        return out


def _stacked(arrays: list[Array]) -> list[Array]:
    """The queued batches as few arrays as numpy can stack (same width; mixed dtypes as objects)."""
    if len(arrays) <= 1:
        return arrays
    widths = {a.shape[1:] for a in arrays}
    if len(widths) != 1:
        return arrays
    if len({a.dtype for a in arrays}) == 1:
        return [np.concatenate(arrays)]
    return [np.concatenate([a.astype(object) for a in arrays])]


def _mismatch(profile: Profile, names: Sequence[str] | None, n_features: int | None) -> str | None:
    if n_features is not None and n_features > 0 and profile.n_features != n_features:
        return f"it describes {profile.n_features} features, the model takes {n_features}"
    if names is not None:
        theirs = [f.name for f in profile.features]
        if list(names[: len(theirs)]) != theirs:
            return (
                f"its features are {', '.join(theirs[:5])}…, the model's "
                f"{', '.join(list(names)[:5])}…"
            )
    return None


class _Collector:
    """Exports the tracker's counters and PSI gauges, computed when /metrics is read."""

    def __init__(self, tracker: DriftTracker) -> None:
        self.tracker = tracker

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: nothing is counted yet

    def collect(self) -> Iterator[Metric]:
        t = self.tracker
        snap = t.snapshot()
        enabled = GaugeMetricFamily(
            "modeldeploy_drift_enabled", "1 when served rows are compared with a reference profile."
        )
        enabled.add_metric([], 1.0 if t.enabled else 0.0)
        yield enabled
        missing = CounterMetricFamily(
            "modeldeploy_feature_missing",
            "Served values that were missing (NaN or null), per feature.",
            labels=["feature"],
        )
        if t.profile is None:
            for name, n in snap["missing"].items():
                missing.add_metric([name], n)
            yield missing
            return
        window = GaugeMetricFamily(
            "modeldeploy_drift_window_rows", "Served rows in the window PSI is computed over."
        )
        window.add_metric([], snap["window_rows"])
        yield window
        bins = CounterMetricFamily(
            "modeldeploy_feature_bin",
            "Served values per reference-profile bin, per feature.",
            labels=["feature", "bin"],
        )
        oor = CounterMetricFamily(
            "modeldeploy_feature_out_of_range",
            "Served values outside the profile's range (numeric) or categories (categorical).",
            labels=["feature"],
        )
        gauge = GaugeMetricFamily(
            "modeldeploy_feature_drift_psi",
            "PSI of the window's values against the profile, per feature (0.1 moderate, "
            "0.25 significant).",
            labels=["feature"],
        )
        for name, f in snap["features"].items():
            for label, n in f["bins"].items():
                bins.add_metric([name, label], n)
            missing.add_metric([name], f["missing"])
            oor.add_metric([name], f["out_of_range"])
            if f["psi"] is not None:
                gauge.add_metric([name], f["psi"])
        yield bins
        yield missing
        yield oor
        yield gauge
        if snap["prediction_psi"] is not None:
            pred = GaugeMetricFamily(
                "modeldeploy_prediction_drift_psi",
                "PSI of the window's predictions against the profile's prediction distribution.",
            )
            pred.add_metric([], snap["prediction_psi"])
            yield pred
