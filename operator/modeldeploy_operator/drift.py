"""The DataDrift condition and the DRIFT column, from the serving pods' own drift gauges.

Each server compares the rows it serves with its model's reference profile and exports the PSI
of every feature and of the predictions over a sliding window (modeldeploy_server/drift.py).
The operator reads those gauges from the pods' /metrics every MODELDEPLOY_DRIFT_SECONDS
(handlers.py schedules it, scrape.py fetches, analysis.parse_metrics reads) and this module
turns one round of scrapes into one report per ModelDeployment: the worst feature over its
tracks, said as a condition a person can act on. Pure, so unit tests feed it recorded scrapes.

Pods of one track serve the same model with the same profile; their PSIs are averaged weighted
by the rows in each pod's window (a pod that served little says little). Tracks are not
averaged: a canary with another model has its own profile, and the worse of the two is shown.
Values are rounded to two decimals, which is all PSI's customary thresholds (0.1, 0.25) need,
and keeps status from being rewritten for noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from modeldeploy_operator import conditions as c
from modeldeploy_operator.analysis import DriftGauges, PodCounters

Obj = dict[str, Any]
MODERATE: Final = 0.1  # PSI's customary "some shift" level, named in messages

# pod name -> (track, its parsed /metrics, or why it could not be read)
Scrapes = Mapping[str, tuple[str, "PodCounters | str"]]


@dataclass(frozen=True)
class DriftReport:
    """What one round of scrapes says about a ModelDeployment's inputs."""

    reason: c.Reason
    drifting: bool | None  # the condition's status; None: Unknown
    message: str
    feature: str = ""
    psi: float | None = None
    track: str = ""
    prediction_psi: float | None = None

    @property
    def summary(self) -> str:
        """The DRIFT column: the worst of the features and the predictions, with its PSI."""
        if self.reason is c.PREDICTION_DRIFT and self.prediction_psi is not None:
            return f"predictions {self.prediction_psi:.2f}"
        if self.feature and self.psi is not None:
            return f"{self.feature} {self.psi:.2f}"
        return ""

    def to_status(self) -> Obj | None:
        """status.drift, or None when nothing was measured (the column stays empty)."""
        if not self.summary:
            return None
        out: Obj = {"summary": self.summary, "track": self.track}
        if self.feature and self.psi is not None:
            out["feature"] = self.feature
            out["psi"] = self.psi
        if self.prediction_psi is not None:
            out["predictionPsi"] = self.prediction_psi
        return out


def _weighted(values: list[tuple[float, float]]) -> float:
    """The mean of (value, rows) pairs weighted by rows; a plain mean when no pod says rows."""
    rows = sum(w for _, w in values)
    if rows <= 0:
        return sum(v for v, _ in values) / len(values)
    return sum(v * w for v, w in values) / rows


@dataclass(frozen=True)
class _TrackDrift:
    track: str
    rows: float
    features: dict[str, float]
    prediction: float | None


def _per_track(gauges: list[tuple[str, DriftGauges]]) -> list[_TrackDrift]:
    out = []
    for track in sorted({t for t, _ in gauges}):
        pods = [g for t, g in gauges if t == track]
        features: dict[str, list[tuple[float, float]]] = {}
        predictions: list[tuple[float, float]] = []
        for g in pods:
            for name, value in g.feature_psi.items():
                features.setdefault(name, []).append((value, g.window_rows))
            if g.prediction_psi is not None:
                predictions.append((g.prediction_psi, g.window_rows))
        out.append(
            _TrackDrift(
                track,
                sum(g.window_rows for g in pods),
                {n: round(_weighted(v), 2) for n, v in features.items()},
                round(_weighted(predictions), 2) if predictions else None,
            )
        )
    return out


def _unreadable(failures: list[str]) -> str:
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"could not read the drift gauges: {failures[0]}{more}"


def summarize(scrapes: Scrapes, threshold: float, min_rows: int) -> DriftReport | None:
    """One report from one round of scrapes of a ModelDeployment's ready pods. ``threshold``:
    the PSI from which a feature (or the predictions) drifts; ``min_rows``: the rows a track's
    window must hold before its PSI is believed (a handful of rows always looks drifted).

    None when no pod could be read (or there was none): a pod unreachable from the operator is
    not a statement about its inputs, so the last report stands rather than flapping."""
    failures = sorted(r for _, r in scrapes.values() if isinstance(r, str))
    read = [(t, r) for t, r in scrapes.values() if not isinstance(r, str)]
    if not read:
        return None
    enabled = [(t, r.drift) for t, r in read if r.drift is not None and r.drift.enabled]
    if not enabled:
        return DriftReport(
            c.NO_PROFILE,
            None,
            "the serving pods have no reference profile, so drift is not tracked: write one "
            "with modeldeploy-profile and put profile.json beside the model, or set "
            "spec.model.profileUri (docs/monitoring.md)",
        )
    tracks = _per_track(enabled)
    judged = [t for t in tracks if t.rows >= min_rows and (t.features or t.prediction is not None)]
    if not judged:
        rows = ", ".join(f"{t.track} {t.rows:.0f}" for t in tracks)
        return DriftReport(
            c.DRIFT_NOT_MEASURED,
            None,
            f"too few served rows in the drift window to judge ({rows}; needs {min_rows} a "
            "track): send traffic",
        )
    unread = f"; {_unreadable(failures)}" if failures else ""
    ranked = sorted(
        ((psi, t.track, name) for t in judged for name, psi in t.features.items()),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    pred = max(
        ((t.prediction, t.track) for t in judged if t.prediction is not None),
        default=None,
        key=lambda x: x[0],
    )
    pred_psi = pred[0] if pred is not None else None
    if ranked:
        psi, track, feature = ranked[0]
    else:
        psi, track, feature = None, pred[1] if pred else "", ""
    base = DriftReport(c.NO_DRIFT, False, "", feature, psi, track, pred_psi)
    pred_note = f"; predictions PSI {pred_psi:.2f}" if pred_psi is not None else ""
    if psi is not None and psi >= threshold:
        also = [f"{n} {p:.2f}" for p, _, n in ranked[1:4] if p >= threshold]
        more = f" (also {', '.join(also)})" if also else ""
        return _with(
            base,
            c.FEATURE_DRIFT,
            True,
            f"feature {feature} drifts on the {track} track: PSI {psi:.2f} >= {threshold:g} "
            f"against the reference profile{more}{pred_note}{unread}",
        )
    if pred_psi is not None and pred is not None and pred_psi >= threshold:
        worst = f" (worst feature {feature} {psi:.2f})" if psi is not None else ""
        return _with(
            base,
            c.PREDICTION_DRIFT,
            True,
            f"the predictions drift on the {pred[1]} track: PSI {pred_psi:.2f} >= "
            f"{threshold:g} against the reference profile{worst}{unread}",
        )
    if psi is None:
        message = f"no feature PSI yet{pred_note}, below {threshold:g}{unread}"
    else:
        level = "moderate shift" if psi >= MODERATE else "stable"
        message = (
            f"worst feature {feature} on the {track} track: PSI {psi:.2f} < {threshold:g} "
            f"({level}){pred_note}{unread}"
        )
    return _with(base, c.NO_DRIFT, False, message)


def _with(base: DriftReport, reason: c.Reason, drifting: bool, message: str) -> DriftReport:
    return DriftReport(
        reason, drifting, message, base.feature, base.psi, base.track, base.prediction_psi
    )
