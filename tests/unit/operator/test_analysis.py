"""The canary analysis (analysis.py) on real scrapes of the server, and its statistics by hand.

The expositions under scrapes/ are recorded from the real server app, driven in-process by
scrapes/record.py with fixed traffic; the counts asserted here are that traffic (see the script).
Re-record them after a change to the server's metrics; these tests then say whether analysis
still finds its counters.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modeldeploy_operator import analysis
from modeldeploy_operator.analysis import (
    EMPTY,
    Buckets,
    Check,
    PodCounters,
    ScrapeError,
    js_divergence,
    js_divergence_buckets,
    judge,
    parse_metrics,
    quantile,
    verdict,
    window,
)
from modeldeploy_operator.api import AnalysisSpec
from modeldeploy_server.asgi import INFERENCE_ROUTES
from modeldeploy_server.metrics import LATENCY_BUCKETS, Metrics
from prometheus_client import generate_latest

SCRAPES = Path(__file__).parent / "scrapes"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
INF = math.inf


def scrape(name: str) -> PodCounters:
    return parse_metrics((SCRAPES / name).read_text())


def spec(**kw: object) -> AnalysisSpec:
    return AnalysisSpec.model_validate(kw)


def latency(*observations: float) -> Buckets:
    """The server's latency histogram (its bucket layout) after these observations."""
    bounds = (*LATENCY_BUCKETS, INF)
    return tuple((le, float(sum(1 for o in observations if o <= le))) for le in bounds)


def counters(
    n: int = 0, errors: int = 0, classes: dict[str, float] | None = None, seconds: float = 0.004
) -> PodCounters:
    return PodCounters(
        requests=n, errors=errors, latency=latency(*[seconds] * n), classes=classes or {}
    )


# ------------------------------------------------------------------------------ parse_metrics


def test_the_inference_endpoints_are_the_servers() -> None:
    templates = {route.template for route in INFERENCE_ROUTES}
    assert templates | {GRPC_INFER} == analysis.INFERENCE_ENDPOINTS
    grpc_service = pytest.importorskip("modeldeploy_server.grpc_service")
    assert f"/{grpc_service.SERVICE}/ModelInfer" == GRPC_INFER


def test_a_recorded_scrape_counts_inference_only() -> None:
    text = (SCRAPES / "stable-1.txt").read_text()
    # The probes, the metadata call and /metrics itself are in the exposition...
    for endpoint in ("/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/metrics"):
        assert f'endpoint="{endpoint}"' in text
    c = parse_metrics(text)
    # ...but only 30 V2 + 10 V1 answered, 3 400s and 2 404s are inference.
    assert c.requests == 45
    assert c.errors == 0
    assert c.latency[-1] == (INF, 45.0)
    assert [le for le, _ in c.latency] == [*LATENCY_BUCKETS, INF]
    assert set(c.classes) == {"0", "1", "2"}
    assert sum(c.classes.values()) == 160  # 150 rows over V2 and 10 over V1
    assert c.values[-1] == (INF, 0.0)
    assert c.started > 0


def test_5xx_are_errors_4xx_are_the_callers() -> None:
    c = scrape("canary-faulty.txt")  # 36 answered, 4 raised in the model (500), 6 bad inputs
    assert c.requests == 46
    assert c.errors == 4


def test_a_regressor_has_values_and_no_classes() -> None:
    c = scrape("regressor.txt")  # 25 requests of 2 rows
    assert c.requests == 25
    assert dict(c.classes) == {}
    assert c.values[-1] == (INF, 50.0)


def test_grpc_calls_count_with_their_codes() -> None:
    m = Metrics()
    m.requests.labels(GRPC_INFER, "grpc", "OK").inc(10)
    m.requests.labels(GRPC_INFER, "grpc", "INTERNAL").inc(2)
    m.requests.labels(GRPC_INFER, "grpc", "UNAVAILABLE").inc(1)
    m.requests.labels(GRPC_INFER, "grpc", "INVALID_ARGUMENT").inc(3)
    m.requests.labels(GRPC_INFER, "grpc", "CANCELLED").inc(1)
    m.requests.labels("/inference.GRPCInferenceService/ServerReady", "grpc", "OK").inc(50)
    m.latency.labels(GRPC_INFER, "grpc").observe(0.004)
    m.latency.labels("/inference.GRPCInferenceService/ServerReady", "grpc").observe(0.001)
    c = parse_metrics(generate_latest(m.registry).decode())
    assert c.requests == 17
    assert c.errors == 3
    assert c.latency[-1] == (INF, 1.0)


def test_an_idle_server_is_zero_not_an_error() -> None:
    c = parse_metrics(generate_latest(Metrics().registry).decode())
    assert (c.requests, c.errors, c.latency, dict(c.classes)) == (0, 0, (), {})
    assert c.values[-1] == (INF, 0.0)  # unlabelled: exposed from the start


def test_created_samples_are_ignored() -> None:
    text = (
        "# TYPE modeldeploy_requests counter\n"
        'modeldeploy_requests_total{endpoint="/v2/models/{name}/infer",protocol="v2",'
        'status="503"} 4\n'
        'modeldeploy_requests_created{endpoint="/v2/models/{name}/infer",protocol="v2",'
        'status="503"} 1.7e9\n'
    )
    assert parse_metrics(text) == PodCounters(requests=4, errors=4)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hello world", "not Prometheus text format"),
        ("<html><body>Not Found</body></html>", "not Prometheus text format"),
        ('{"status": "ok"}', "not Prometheus text format"),
        ("", "is this a modeldeploy server's /metrics?"),
        ("# TYPE other_total counter\nother_total 3\n", "no modeldeploy_requests_total"),
        (
            "# TYPE modeldeploy_requests counter\n"
            'modeldeploy_requests_total{endpoint="/v2/models/{name}/infer",status="200"} -1\n',
            "expected a finite number >= 0",
        ),
        (
            '# TYPE modeldeploy_requests counter\nmodeldeploy_predicted_value_bucket{le="1.0"} 3\n',
            'no le="+Inf" bucket',
        ),
        (
            '# TYPE modeldeploy_requests counter\nmodeldeploy_predicted_value_bucket{le="one"} 3\n',
            "no numeric le label",
        ),
        (
            "# TYPE modeldeploy_requests counter\n"
            'modeldeploy_predicted_value_bucket{le="1.0"} 3\n'
            'modeldeploy_predicted_value_bucket{le="+Inf"} 2\n',
            "cumulative buckets never decrease",
        ),
    ],
)
def test_what_is_not_a_server_exposition_says_so(text: str, words: str) -> None:
    with pytest.raises(ScrapeError, match=re.escape(words)) as caught:
        parse_metrics(text)
    assert isinstance(caught.value, ValueError)


# ------------------------------------------------------------------------------ window


def test_the_window_is_the_delta_between_two_scrapes() -> None:
    w = window({"iris-a": scrape("stable-1.txt")}, {"iris-a": scrape("stable-2.txt")})
    assert w.requests == 20  # 20 V2 requests of one row; 5 more rounds of probes
    assert w.errors == 0
    assert w.latency[-1] == (INF, 20.0)
    assert sum(w.classes.values()) == 20


def test_a_restarted_pod_counts_from_zero() -> None:
    # Same pod name, a new process: 7 requests, fewer than the 65 counted before.
    w = window({"iris-a": scrape("stable-2.txt")}, {"iris-a": scrape("stable-restarted.txt")})
    assert w.requests == 7
    assert w.latency[-1] == (INF, 7.0)
    assert sum(w.classes.values()) == 7


def test_a_new_process_start_is_a_restart_even_past_the_old_counts() -> None:
    before = scrape("stable-restarted.txt")  # 7 requests
    text = (SCRAPES / "stable-2.txt").read_text()
    start = f"process_start_time_seconds {before.started!r}"
    assert "process_start_time_seconds " in text
    lines = [
        start.replace(repr(before.started), repr(before.started + 60))
        if line.startswith("process_start_time_seconds ")
        else line
        for line in text.splitlines()
    ]
    after = parse_metrics("\n".join(lines) + "\n")  # 65 requests, a process started a minute on
    assert window({"p": before}, {"p": after}).requests == 65
    # The same start: an ordinary delta.
    assert window({"p": before}, {"p": scrape("stable-2.txt")}).requests == 65 - 7


def test_a_new_pod_counts_whole_and_a_gone_pod_not_at_all() -> None:
    one, two, other = scrape("stable-1.txt"), scrape("stable-2.txt"), scrape("stable-restarted.txt")
    assert window({"a": one}, {"a": two, "b": other}).requests == 20 + 7
    assert window({"a": one, "b": other}, {"a": two}).requests == 20
    assert window({}, {}) == EMPTY


def test_a_reset_is_decided_for_the_whole_pod() -> None:
    before = counters(10, classes={"0": 10.0})
    # More requests than before, but a class count fell: the process is new.
    now = counters(12, classes={"0": 2.0, "1": 10.0})
    assert window({"p": before}, {"p": now}) == window({}, {"p": now})
    # A bucket layout that changed is a new process too.
    relaid = PodCounters(requests=12, latency=((1.0, 12.0), (INF, 12.0)))
    assert window({"p": before}, {"p": relaid}).latency == relaid.latency


# ------------------------------------------------------------------------------ quantile

HAND = ((0.1, 10.0), (0.2, 60.0), (0.5, 100.0), (INF, 100.0))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.99, 0.2 + 0.3 * 39 / 40),  # rank 99 in (0.2, 0.5]: 39 of its 40 in
        (0.5, 0.1 + 0.1 * 40 / 50),  # rank 50 in (0.1, 0.2]: 40 of its 50 in
        (0.05, 0.1 * 5 / 10),  # the first bucket starts at 0
        (1.0, 0.5),
        (0.0, 0.0),
    ],
)
def test_quantile_interpolates_in_the_bucket(q: float, expected: float) -> None:
    assert quantile(q, HAND) == pytest.approx(expected)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert quantile(0.99, ((0.1, 10.0), (0.2, 50.0), (INF, 100.0))) == 0.2
    assert quantile(0.4, ((0.1, 10.0), (0.2, 50.0), (INF, 100.0))) == pytest.approx(0.175)


def test_quantile_without_observations_is_none() -> None:
    assert quantile(0.99, ()) is None
    assert quantile(0.99, ((0.1, 0.0), (INF, 0.0))) is None
    assert quantile(0.99, ((INF, 5.0),)) is None  # no finite bound to answer with
    with pytest.raises(ValueError, match="outside"):
        quantile(1.5, HAND)


def test_quantile_of_a_non_positive_first_bound_is_that_bound() -> None:
    assert quantile(0.05, ((-1.0, 10.0), (0.0, 20.0), (INF, 20.0))) == -1.0


def test_the_recorded_p99_is_within_the_buckets() -> None:
    p99 = quantile(0.99, scrape("stable-1.txt").latency)
    assert p99 is not None
    assert 0 < p99 <= LATENCY_BUCKETS[-1]


# ------------------------------------------------------------------------------ divergence


def test_js_of_identical_distributions_is_zero_of_disjoint_one() -> None:
    assert js_divergence({"a": 3, "b": 1}, {"a": 30, "b": 10}) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence({"a": 3}, {"b": 5}) == pytest.approx(1.0)
    assert js_divergence({"a": 1, "b": 0}, {"a": 7}) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence({}, {}) == 0.0
    assert js_divergence({"a": 1}, {}) == 1.0


def test_js_of_a_constant_canary_against_iris_three_classes() -> None:
    canary = scrape("canary-constant.txt").classes  # class 0 for all 150 rows
    assert dict(canary) == {"0": 150}
    # M = (2/3, 1/6, 1/6): KL(P||M) = log2(3/2), KL(Q||M) = 1/3; JS is their mean.
    expected = (math.log2(1.5) + 1 / 3) / 2
    assert expected == pytest.approx(0.4591, abs=1e-4)
    assert js_divergence(canary, {"0": 50, "1": 50, "2": 50}) == pytest.approx(expected)


def test_js_over_value_histograms() -> None:
    values = scrape("regressor.txt").values
    assert js_divergence_buckets(values, values) == pytest.approx(0.0, abs=1e-12)
    low = ((0.0, 10.0), (1.0, 10.0), (INF, 10.0))
    high = ((0.0, 0.0), (1.0, 0.0), (INF, 10.0))
    assert js_divergence_buckets(low, high) == pytest.approx(1.0)
    # Another bucket layout is read at the union of the bounds.
    assert js_divergence_buckets(low, ((0.0, 4.0), (INF, 4.0))) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------ judge, verdict


def by_name(checks: tuple[Check, ...]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_a_faulty_canary_fails_its_error_rate() -> None:
    canary = window({}, {"iris-canary-x": scrape("canary-faulty.txt")})
    stable = window({"a": scrape("stable-1.txt")}, {"a": scrape("stable-2.txt")})
    checks = by_name(judge(canary, stable, spec(minRequests=20)))
    error_rate = checks["errorRate"]
    assert error_rate.result == "Failed"
    assert error_rate.value == pytest.approx(4 / 46)
    assert error_rate.threshold == 0.01
    assert error_rate.message == (
        "canary answered 4 of 46 inference requests (8.7%) with a 5xx; at most 1.0% allowed"
    )
    assert verdict(checks.values()) == "Failed"


def test_an_error_rate_near_its_limit_is_not_said_as_the_limit() -> None:
    just_over = by_name(judge(counters(1000, errors=101), counters(1000), spec(maxErrorRate=0.1)))
    assert just_over["errorRate"].result == "Failed"
    assert "(10.1%)" in just_over["errorRate"].message
    hair = by_name(judge(counters(10_000, errors=1001), counters(10_000), spec(maxErrorRate=0.1)))
    assert "(10.01%) with a 5xx; at most 10.0% allowed" in hair["errorRate"].message
    assert by_name(judge(counters(400, errors=1), EMPTY, spec(maxErrorRate=0.0025)))[
        "errorRate"
    ].message.endswith("(0.25%) with a 5xx; at most 0.25% allowed")


def test_too_few_canary_requests_is_inconclusive_not_failed() -> None:
    canary = counters(3, errors=3, classes={"x": 3.0})
    checks = judge(canary, counters(100, classes={"0": 100.0}), spec(maxLatencyP99Seconds=0.1))
    assert [c.name for c in checks] == [
        "errorRate",
        "latencyP99",
        "latencyP99Ratio",
        "predictionShift",
    ]
    for c in checks:
        assert c.result == "Inconclusive"
        assert c.value is None
        assert c.message == "canary served 3 inference requests in the interval; 20 needed to judge"
    assert verdict(checks) == "Inconclusive"


def test_too_few_stable_requests_leaves_the_relative_checks_inconclusive() -> None:
    checks = by_name(judge(counters(40, classes={"0": 40.0}), counters(5), spec()))
    assert checks["errorRate"].result == "Passed"
    assert checks["errorRate"].message == (
        "canary answered 0 of 40 inference requests (0.0%) with a 5xx; at most 1.0% allowed"
    )
    for name in ("latencyP99Ratio", "predictionShift"):
        assert checks[name].result == "Inconclusive"
        assert checks[name].message == (
            "stable served 5 inference requests in the interval; 20 needed to judge"
        )
    assert verdict(checks.values()) == "Passed"


def test_only_the_thresholds_set_are_checked() -> None:
    plain = spec(maxLatencyP99Ratio=None, maxPredictionShift=None)
    assert [c.name for c in judge(counters(40), counters(40), plain)] == ["errorRate"]


def test_latency_checks_against_hand_computed_p99() -> None:
    canary = PodCounters(requests=100, latency=HAND)  # p99 0.4925 s
    stable = PodCounters(requests=100, latency=((0.1, 10.0), (0.2, 100.0), (INF, 100.0)))
    checks = by_name(judge(canary, stable, spec(maxLatencyP99Seconds=0.25, maxLatencyP99Ratio=2.0)))
    p99 = checks["latencyP99"]
    assert p99.result == "Failed"
    assert p99.value == pytest.approx(0.4925)
    assert p99.message.startswith("canary's p99 latency was 49")
    assert p99.message.endswith("over 100 inference requests; at most 250 ms allowed")
    ratio = checks["latencyP99Ratio"]  # stable's p99: 0.1 + 0.1 * 89/90
    assert ratio.value == pytest.approx(0.4925 / (0.1 + 0.1 * 89 / 90))
    assert ratio.result == "Failed"
    assert "times stable's" in ratio.message
    assert ratio.message.endswith("at most 2 times allowed")


def test_a_p99_past_the_last_bucket_is_said_as_a_floor() -> None:
    slow = PodCounters(requests=100, latency=latency(*[20.0] * 100))
    p99 = by_name(judge(slow, slow, spec(maxLatencyP99Seconds=1)))["latencyP99"]
    assert p99.value == 10.0
    assert p99.result == "Failed"
    assert "was over 10 s" in p99.message


def test_a_constant_canary_fails_prediction_shift() -> None:
    canary = window({}, {"c": scrape("canary-constant.txt")})
    stable = window({}, {"s": scrape("stable-1.txt")})
    shift = by_name(judge(canary, stable, spec()))["predictionShift"]
    assert shift.result == "Failed"
    assert shift.value == pytest.approx(js_divergence(canary.classes, stable.classes))
    assert shift.value is not None
    assert 0.4 < shift.value < 0.5
    assert shift.message.startswith("canary's predicted-class distribution is 0.4")
    assert shift.message.endswith("; at most 0.1 allowed")


def test_regressors_compare_value_histograms() -> None:
    pod = scrape("regressor.txt")
    shift = by_name(judge(pod, pod, spec()))["predictionShift"]
    assert shift.result == "Passed"
    assert shift.value == pytest.approx(0.0, abs=1e-12)
    assert "predicted-value distribution" in shift.message


def test_a_classifier_against_a_regressor_has_nothing_in_common() -> None:
    shift = by_name(judge(scrape("canary-constant.txt"), scrape("regressor.txt"), spec()))
    assert shift["predictionShift"].value == 1.0
    assert shift["predictionShift"].result == "Failed"
    assert shift["predictionShift"].message.startswith("canary predicted classes and stable values")


def test_no_predictions_is_inconclusive() -> None:
    checks = by_name(judge(counters(40), counters(40), spec()))
    assert checks["predictionShift"].result == "Inconclusive"
    assert checks["predictionShift"].message == (
        "neither track made a prediction in the interval to compare"
    )
    one_sided = by_name(judge(counters(40, classes={"0": 40.0}), counters(40), spec()))
    assert one_sided["predictionShift"].result == "Inconclusive"
    assert one_sided["predictionShift"].message.startswith("stable made no predictions")


def test_min_requests_zero_and_no_traffic_is_still_inconclusive() -> None:
    checks = judge(EMPTY, EMPTY, spec(minRequests=0))
    assert by_name(checks)["errorRate"].result == "Inconclusive"
    assert verdict(checks) == "Inconclusive"


def check(name: analysis.CheckName, result: analysis.Result) -> Check:
    return Check(name=name, value=None, threshold=1.0, result=result, message="")


def test_verdict() -> None:
    assert verdict([check("errorRate", "Passed"), check("latencyP99", "Failed")]) == "Failed"
    assert verdict([check("errorRate", "Inconclusive"), check("latencyP99", "Failed")]) == (
        "Failed"
    )
    assert verdict([check("errorRate", "Inconclusive"), check("latencyP99", "Passed")]) == (
        "Inconclusive"
    )
    assert verdict([check("errorRate", "Passed"), check("predictionShift", "Inconclusive")]) == (
        "Passed"
    )
    assert verdict([]) == "Inconclusive"


# ------------------------------------------------------------------------------ properties

distributions = st.dictionaries(
    st.sampled_from(["0", "1", "2", "setosa", "__other__"]),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
seconds = st.floats(min_value=0, max_value=30, allow_nan=False)


@given(distributions, distributions)
def test_js_is_symmetric_and_in_0_1(p: dict[str, float], q: dict[str, float]) -> None:
    d = js_divergence(p, q)
    assert 0.0 <= d <= 1.0
    assert d == js_divergence(q, p)


@st.composite
def pods(draw: st.DrawFn) -> PodCounters:
    observations = draw(st.lists(seconds, max_size=30))
    classes = draw(st.dictionaries(st.sampled_from(["0", "1", "2"]), st.integers(0, 50)))
    errors = draw(st.integers(0, len(observations)))
    return PodCounters(
        requests=len(observations),
        errors=errors,
        latency=latency(*observations),
        classes={c: float(n) for c, n in classes.items()},
        values=latency(*observations[:5]),
    )


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), pods()))
def test_the_window_of_identical_scrapes_is_zero(scrapes: dict[str, PodCounters]) -> None:
    w = window(scrapes, scrapes)
    assert w.requests == 0
    assert w.errors == 0
    assert all(n == 0 for _, n in w.latency + w.values)
    assert all(n == 0 for n in w.classes.values())


@given(st.lists(seconds, max_size=30), st.lists(seconds, max_size=30))
def test_the_window_is_what_was_observed_in_between(first: list[float], then: list[float]) -> None:
    before = PodCounters(requests=len(first), latency=latency(*first))
    after = PodCounters(requests=len(first) + len(then), latency=latency(*first, *then))
    w = window({"p": before}, {"p": after})
    assert w.requests == len(then)
    assert w.latency == latency(*then)


@given(st.lists(seconds, min_size=1, max_size=50), st.floats(0, 1), st.floats(0, 1))
def test_quantile_is_monotone_in_q(observations: list[float], a: float, b: float) -> None:
    buckets = latency(*observations)
    low, high = sorted((a, b))
    q_low, q_high = quantile(low, buckets), quantile(high, buckets)
    assert q_low is not None
    assert q_high is not None
    assert q_low <= q_high
