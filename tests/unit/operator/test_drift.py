"""The DataDrift condition from recorded scrapes: drift.summarize, the status it writes, and the
server's real exposition read by analysis.parse_metrics."""

from __future__ import annotations

from modeldeploy_operator import conditions as c
from modeldeploy_operator.analysis import DriftGauges, PodCounters, parse_metrics
from modeldeploy_operator.drift import summarize
from modeldeploy_operator.status import _drift, condition


def pod(psi: dict[str, float], rows: float = 1000, pred: float | None = None) -> PodCounters:
    return PodCounters(drift=DriftGauges(True, rows, psi, pred))


def test_the_worst_feature_over_the_threshold_makes_datadrift_true_and_names_it() -> None:
    r = summarize(
        {"a": ("stable", pod({"x": 0.05, "y": 0.41})), "b": ("canary", pod({"x": 0.3}))},
        0.25,
        200,
    )
    assert (r.reason, r.drifting, r.feature, r.psi, r.track) == (
        c.FEATURE_DRIFT,
        True,
        "y",
        0.41,
        "stable",
    )
    assert r.summary == "y 0.41"
    assert "feature y drifts on the stable track: PSI 0.41 >= 0.25" in r.message
    assert "also x 0.30" in r.message


def test_pods_of_a_track_are_weighted_by_the_rows_they_served() -> None:
    r = summarize(
        {"a": ("stable", pod({"x": 0.5}, rows=100)), "b": ("stable", pod({"x": 0.1}, rows=900))},
        0.25,
        200,
    )
    assert (r.reason, r.psi) == (c.NO_DRIFT, 0.14)
    assert "moderate shift" in r.message


def test_prediction_drift_is_reported_when_no_feature_drifts() -> None:
    r = summarize({"a": ("stable", pod({"x": 0.02}, pred=0.3))}, 0.25, 200)
    assert (r.reason, r.drifting, r.summary) == (c.PREDICTION_DRIFT, True, "predictions 0.30")


def test_no_profile_and_too_few_rows_are_unknown_with_a_reason() -> None:
    off = summarize({"a": ("stable", PodCounters(drift=DriftGauges(False)))}, 0.25, 200)
    assert (off.reason, off.drifting, off.to_status()) == (c.NO_PROFILE, None, None)
    assert "spec.model.profileUri" in off.message
    few = summarize({"a": ("stable", pod({"x": 0.9}, rows=10))}, 0.25, 200)
    assert few.reason is c.DRIFT_NOT_MEASURED
    assert "stable 10; needs 200" in few.message


def test_no_report_when_no_pod_was_read_so_the_last_one_stands() -> None:
    assert summarize({"a": ("stable", "pod a (10.0.0.1): connection refused")}, 0.25, 200) is None
    assert summarize({}, 0.25, 200) is None
    # One pod read is enough; the unread one is named in the message.
    both = summarize(
        {"a": ("stable", pod({"x": 0.4})), "b": ("stable", "pod b (10.0.0.2): timed out")},
        0.25,
        200,
    )
    assert both is not None
    assert both.reason is c.FEATURE_DRIFT
    assert "pod b (10.0.0.2): timed out" in both.message


def test_status_gets_the_condition_and_keeps_the_last_one_when_there_is_no_new_report() -> None:
    report = summarize({"a": ("stable", pod({"x": 0.4}))}, 0.25, 200)

    def cond(t: str, v: bool | None, reason: c.Reason, m: str) -> dict[str, object]:
        return condition(t, v, reason.name, m, 3, [], "2026-01-01T00:00:00Z")

    status: dict[str, object] = {"conditions": []}
    _drift(status, report, {}, cond)
    assert status["drift"] == {"summary": "x 0.40", "track": "stable", "feature": "x", "psi": 0.4}
    (dd,) = status["conditions"]  # type: ignore[misc]
    assert (dd["type"], dd["status"], dd["reason"]) == ("DataDrift", "True", "FeatureDrift")
    kept: dict[str, object] = {"conditions": []}
    _drift(kept, None, status, cond)
    assert kept == status
    unknown: dict[str, object] = {"conditions": []}
    few = summarize({"a": ("stable", pod({"x": 0.9}, rows=10))}, 0.25, 200)
    _drift(unknown, few, status, cond)
    assert "drift" not in unknown
    assert unknown["conditions"][0]["status"] == "Unknown"  # type: ignore[index]


def test_parse_metrics_reads_the_drift_gauges_of_the_servers_exposition() -> None:
    text = (
        "# TYPE modeldeploy_requests counter\n"
        'modeldeploy_requests_total{endpoint="/v2/models/{name}/infer",status="200"} 5\n'
        "# TYPE modeldeploy_drift_enabled gauge\nmodeldeploy_drift_enabled 1\n"
        "# TYPE modeldeploy_drift_window_rows gauge\nmodeldeploy_drift_window_rows 800\n"
        "# TYPE modeldeploy_feature_drift_psi gauge\n"
        'modeldeploy_feature_drift_psi{feature="petal_length"} 0.31\n'
        "# TYPE modeldeploy_prediction_drift_psi gauge\nmodeldeploy_prediction_drift_psi 0.05\n"
    )
    got = parse_metrics(text).drift
    assert got == DriftGauges(True, 800.0, {"petal_length": 0.31}, 0.05)
    plain = "# TYPE modeldeploy_requests counter\nmodeldeploy_requests_total{} 0\n"
    assert parse_metrics(plain).drift is None
