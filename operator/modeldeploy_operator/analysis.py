"""Judging a rollout's canary against stable from the serving pods' own ``/metrics``.

spec.rollout.analysis needs no Prometheus: every interval the operator scrapes each serving pod
(scrape.py does that I/O) and this module does the rest, as pure functions a test can feed with
recorded scrapes: ``parse_metrics`` reduces one pod's exposition to the few counters analysis
reads, ``window`` turns two scrapes of a track's pods into what happened in between (pods that
restarted, appeared or went away included), and ``judge`` compares the canary's window with
stable's under the spec's thresholds, one ``Check`` a threshold, which ``verdict`` folds into
the interval's result.

The metric names and the inference endpoints are the server's (modeldeploy_server/metrics.py,
asgi.py, grpc_service.py); they are spelled out here because the operator image does not ship
the server, and a unit test holds the two sides together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Final, Literal

from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_operator.api import AnalysisSpec

Buckets = tuple[tuple[float, float], ...]
"""A cumulative histogram: (upper bound ``le``, observations <= le), ascending, +Inf last."""

CheckName = Literal["errorRate", "latencyP99", "latencyP99Ratio", "predictionShift"]
Result = Literal["Passed", "Failed", "Inconclusive"]

# The route templates the server labels inference with, and the gRPC method (full name, as
# grpc_service.py labels it). Probes, metadata and /metrics are not inference: a canary that
# answers only the kubelet has served nobody.
INFERENCE_ENDPOINTS: Final = frozenset(
    {
        "/v1/models/{name}:predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/inference.GRPCInferenceService/ModelInfer",
    }
)
# gRPC calls carry the code's name as their status. These are the codes the usual HTTP mapping
# (grpc-gateway's) answers with a 5xx: the server's fault, like REST's 5xx. The rest (invalid
# argument, not found, unauthenticated, cancelled by the caller...) are the caller's doing.
GRPC_SERVER_ERRORS: Final = frozenset(
    {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "UNIMPLEMENTED", "DATA_LOSS", "DEADLINE_EXCEEDED"}
)

_REQUESTS: Final = "modeldeploy_requests"
_REQUESTS_SAMPLE: Final = "modeldeploy_requests_total"
_LATENCY_SAMPLE: Final = "modeldeploy_request_duration_seconds_bucket"
_CLASS_SAMPLE: Final = "modeldeploy_predicted_class_total"
_VALUE_SAMPLE: Final = "modeldeploy_predicted_value_bucket"
_STARTED_SAMPLE: Final = "process_start_time_seconds"
# The drift gauges (modeldeploy_server/drift.py): read as they are, not windowed; the server
# computes them over its own sliding window.
_DRIFT_ENABLED: Final = "modeldeploy_drift_enabled"
_DRIFT_ROWS: Final = "modeldeploy_drift_window_rows"
_FEATURE_PSI: Final = "modeldeploy_feature_drift_psi"
_PREDICTION_PSI: Final = "modeldeploy_prediction_drift_psi"


class ScrapeError(ValueError):
    """A pod's /metrics could not be read as a modeldeploy server's exposition."""


@dataclass(frozen=True)
class DriftGauges:
    """One pod's drift gauges: whether it compares served rows with a reference profile, how
    many rows its window holds, and the PSI per feature and of the predictions (absent until
    the window has enough rows)."""

    enabled: bool
    window_rows: float = 0.0
    feature_psi: Mapping[str, float] = field(default_factory=dict)
    prediction_psi: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_psi", MappingProxyType(dict(self.feature_psi)))


@dataclass(frozen=True)
class PodCounters:
    """What analysis reads from one exposition (or a window of them): counts since some start.

    ``requests`` counts inference requests of any status, ``errors`` those answered with a 5xx
    (gRPC: a server-side code). ``latency`` is the cumulative histogram of their durations,
    summed over the inference endpoints; ``classes`` the predicted-class counts (classifiers),
    ``values`` the predicted-value histogram (regressors). ``started`` is the server process's
    start (process_start_time_seconds; 0 unknown, and in a sum over pods): a pod whose process
    changed restarted, even if the new process has already counted past the old one.
    """

    requests: float = 0.0
    errors: float = 0.0
    latency: Buckets = ()
    classes: Mapping[str, float] = field(default_factory=dict)
    values: Buckets = ()
    started: float = 0.0
    drift: DriftGauges | None = None  # None: a server without drift gauges (or a window sum)

    def __post_init__(self) -> None:
        # Frozen all the way down: a window handed to status code must not change under it.
        object.__setattr__(self, "classes", MappingProxyType(dict(self.classes)))
        object.__setattr__(self, "requests", float(self.requests))
        object.__setattr__(self, "errors", float(self.errors))


EMPTY: Final = PodCounters()


@dataclass(frozen=True)
class Check:
    """One threshold of spec.rollout.analysis applied to one interval, said as a sentence."""

    name: CheckName
    value: float | None
    threshold: float
    result: Result
    message: str


# ------------------------------------------------------------------------------- parsing


def _count(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ScrapeError(f"{what} is {value}; expected a finite number >= 0")
    return value


def _bound(le: str | None, what: str) -> float:
    try:
        bound = float(le) if le is not None else math.nan
    except ValueError:
        bound = math.nan
    if math.isnan(bound):
        raise ScrapeError(f"{what} has no numeric le label (le={le!r})")
    return bound


def _histogram(sums: Mapping[float, float], what: str) -> Buckets:
    if not sums:
        return ()
    buckets = tuple(sorted(sums.items()))
    if buckets[-1][0] != math.inf:
        raise ScrapeError(f'{what} has no le="+Inf" bucket; the exposition is cut short')
    for (_, below), (le, count) in pairwise(buckets):
        if count < below:
            raise ScrapeError(f"{what} falls at le={le:g}: cumulative buckets never decrease")
    return buckets


def _is_server_error(status: str) -> bool:
    if status.isdigit():
        return len(status) == 3 and status.startswith("5")
    return status in GRPC_SERVER_ERRORS


def parse_metrics(text: str) -> PodCounters:
    """The inference counters in one pod's /metrics (Prometheus text format).

    Raises ScrapeError for text that is not an exposition, and for one without the server's
    request counter (some other process answered on the port).
    """
    requests = errors = 0.0
    latency: dict[float, float] = {}
    classes: dict[str, float] = {}
    values: dict[float, float] = {}
    started = 0.0
    seen_requests = False
    drift_enabled: bool | None = None
    drift_rows = 0.0
    feature_psi: dict[str, float] = {}
    prediction_psi: float | None = None
    try:
        for family in text_string_to_metric_families(text):
            seen_requests = seen_requests or family.name == _REQUESTS
            for sample in family.samples:
                name, labels = sample.name, sample.labels
                if name == _REQUESTS_SAMPLE:
                    if labels.get("endpoint") in INFERENCE_ENDPOINTS:
                        n = _count(sample.value, _REQUESTS_SAMPLE)
                        requests += n
                        if _is_server_error(labels.get("status", "")):
                            errors += n
                elif name == _LATENCY_SAMPLE:
                    if labels.get("endpoint") in INFERENCE_ENDPOINTS:
                        le = _bound(labels.get("le"), _LATENCY_SAMPLE)
                        latency[le] = latency.get(le, 0.0) + _count(sample.value, _LATENCY_SAMPLE)
                elif name == _CLASS_SAMPLE:
                    label = labels.get("class", "")
                    classes[label] = classes.get(label, 0.0) + _count(sample.value, _CLASS_SAMPLE)
                elif name == _VALUE_SAMPLE:
                    le = _bound(labels.get("le"), _VALUE_SAMPLE)
                    values[le] = values.get(le, 0.0) + _count(sample.value, _VALUE_SAMPLE)
                elif name == _STARTED_SAMPLE:
                    started = _count(sample.value, _STARTED_SAMPLE)
                elif name == _DRIFT_ENABLED:
                    drift_enabled = sample.value == 1.0
                elif name == _DRIFT_ROWS:
                    drift_rows = _count(sample.value, _DRIFT_ROWS)
                elif name == _FEATURE_PSI:
                    feature_psi[labels.get("feature", "")] = _count(sample.value, _FEATURE_PSI)
                elif name == _PREDICTION_PSI:
                    prediction_psi = _count(sample.value, _PREDICTION_PSI)
    # The parser raises ValueError for what it can't read; IndexError on a few truncated lines.
    except (ValueError, IndexError) as exc:
        if isinstance(exc, ScrapeError):
            raise
        raise ScrapeError(f"not Prometheus text format ({exc})") from exc
    if not seen_requests:
        raise ScrapeError(
            f"no {_REQUESTS_SAMPLE} in the exposition; is this a modeldeploy server's /metrics?"
        )
    return PodCounters(
        requests=requests,
        errors=errors,
        latency=_histogram(latency, _LATENCY_SAMPLE),
        classes=classes,
        values=_histogram(values, _VALUE_SAMPLE),
        started=started,
        drift=None
        if drift_enabled is None
        else DriftGauges(drift_enabled, drift_rows, feature_psi, prediction_psi),
    )


# ------------------------------------------------------------------------------- windows


def _at(buckets: Buckets, le: float) -> float:
    """Observations <= le: the count at the largest bound <= le (a lower bound between bounds)."""
    count = 0.0
    for bound, c in buckets:
        if bound > le:
            break
        count = c
    return count


def _restarted(before: PodCounters, now: PodCounters) -> bool:
    # A process's counters only grow and its bucket layout is fixed; anything else is a new
    # process behind the same pod name, whose counters started again from zero.
    if before.started and now.started and before.started != now.started:
        return True
    if now.requests < before.requests or now.errors < before.errors:
        return True
    if any(now.classes.get(c, -1.0) < n for c, n in before.classes.items()):
        return True
    for old, new in ((before.latency, now.latency), (before.values, now.values)):
        if old and [le for le, _ in old] != [le for le, _ in new]:
            return True
        if any(n < o for (_, o), (_, n) in zip(old, new, strict=False)):
            return True
    return False


def _minus(now: PodCounters, before: PodCounters) -> PodCounters:
    return PodCounters(
        requests=now.requests - before.requests,
        errors=now.errors - before.errors,
        latency=tuple((le, n - _at(before.latency, le)) for le, n in now.latency),
        classes={c: n - before.classes.get(c, 0.0) for c, n in now.classes.items()},
        values=tuple((le, n - _at(before.values, le)) for le, n in now.values),
    )


def _sum_buckets(histograms: Sequence[Buckets]) -> Buckets:
    # Pods of one track share a layout; should one differ (another server version), each is
    # read at the union's bounds, which keeps the sum cumulative.
    bounds = sorted({le for h in histograms for le, _ in h})
    return tuple((le, sum(_at(h, le) for h in histograms)) for le in bounds)


def total(counters: Iterable[PodCounters]) -> PodCounters:
    """The sum of several pods' counters (one track's)."""
    parts = list(counters)
    classes: dict[str, float] = {}
    for part in parts:
        for c, n in part.classes.items():
            classes[c] = classes.get(c, 0.0) + n
    return PodCounters(
        requests=sum(p.requests for p in parts),
        errors=sum(p.errors for p in parts),
        latency=_sum_buckets([p.latency for p in parts]),
        classes=classes,
        values=_sum_buckets([p.values for p in parts]),
    )


def window(previous: Mapping[str, PodCounters], current: Mapping[str, PodCounters]) -> PodCounters:
    """What a track's pods (by pod name) counted between two scrapes, summed over the pods.

    A pod that restarted (a counter went down, its process start or bucket layout changed)
    counted all of its current value since. A pod new since the previous scrape contributes all
    it counted; a pod gone contributes nothing (what it served after the previous scrape is lost
    with it), and so does one missing from ``current`` because it could not be scraped: keep its
    previous counters as its baseline, or its whole history lands in the next window.
    """
    deltas = []
    for pod, now in current.items():
        before = previous.get(pod)
        if before is None or _restarted(before, now):
            deltas.append(now)
        else:
            deltas.append(_minus(now, before))
    return total(deltas)


# ------------------------------------------------------------------------------- statistics


def quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of a cumulative histogram, as PromQL's histogram_quantile estimates it.

    Linear interpolation inside the bucket the rank falls in (the first bucket starts at 0,
    unless its bound is <= 0); a rank in the +Inf bucket gives the highest finite bound. None
    without observations, or without a finite bound to answer with.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    if not buckets:
        return None
    if buckets[-1][0] != math.inf:
        raise ValueError("a histogram's last bucket is le=+Inf")
    observations = buckets[-1][1]
    if observations <= 0 or len(buckets) < 2:
        return None
    rank = q * observations
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank or i == len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    end, count = buckets[b]
    if b == 0 and end <= 0:
        return end
    start = 0.0
    if b > 0:
        start, below = buckets[b - 1]
        count -= below
        rank -= below
    if count <= 0:  # q=0 at an empty first bucket: PromQL's 0/0, answered with where it starts
        return start
    return start + (end - start) * (rank / count)


def _h(x: float, s: float) -> float:
    return x * math.log2(2 * x / s) if x > 0 else 0.0


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence, base 2, between two count distributions: 0 same, 1 disjoint.

    Counts are normalised here; a key missing on one side counts 0 there. Both sides empty: 0
    (nothing differs); one side empty: 1 (nothing in common).
    """
    p_total = sum(v for v in p.values() if v > 0)
    q_total = sum(v for v in q.values() if v > 0)
    if p_total <= 0 or q_total <= 0:
        return 0.0 if p_total <= 0 and q_total <= 0 else 1.0
    divergence = 0.0
    # Sorted keys and a commutative term make js(p, q) == js(q, p) to the bit.
    for key in sorted(p.keys() | q.keys()):
        a = max(p.get(key, 0.0), 0.0) / p_total
        b = max(q.get(key, 0.0), 0.0) / q_total
        if a > 0 or b > 0:
            divergence += (_h(a, a + b) + _h(b, a + b)) / 2
    return min(max(divergence, 0.0), 1.0)


def per_bucket(buckets: Buckets) -> dict[str, float]:
    """A cumulative histogram's observations per bucket, keyed by the bucket's upper bound."""
    counts: dict[str, float] = {}
    below = 0.0
    for le, count in buckets:
        counts[repr(le)] = count - below
        below = count
    return counts


def js_divergence_buckets(p: Buckets, q: Buckets) -> float:
    """js_divergence between two cumulative histograms' per-bucket counts (regressors' values)."""
    both = _sum_buckets([p, q])  # a common layout, should the two differ
    bounds = [le for le, _ in both]
    return js_divergence(
        per_bucket(tuple((le, _at(p, le)) for le in bounds)),
        per_bucket(tuple((le, _at(q, le)) for le in bounds)),
    )


# ------------------------------------------------------------------------------- judging


def _n(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"


def _pct(x: float) -> str:
    """A limit in as few decimals as say it exactly: "1.0%", "0.25%"."""
    for decimals in range(1, 5):
        text = f"{x:.{decimals}%}"
        if math.isclose(float(text[:-1]) / 100, x, rel_tol=1e-9, abs_tol=1e-12):
            return text
    return f"{x:.4%}"


def _pct_near(x: float, limit: float) -> str:
    """A measured share in the limit's decimals, more where one would read it as the limit."""
    shown = _pct(limit)
    for decimals in range(len(shown.partition(".")[2]) - 1, 5):
        text = f"{x:.{decimals}%}"
        if text != shown or x == limit:
            return text
    return f"{x:.4%}"


def _seconds(x: float) -> str:
    return f"{x * 1000:.3g} ms" if x < 1 else f"{x:.3g} s"


def _requests(n: float) -> str:
    return f"{_n(n)} inference request" + ("" if n == 1 else "s")


def _has(buckets: Buckets) -> bool:
    return bool(buckets) and buckets[-1][1] > 0


def _has_classes(c: PodCounters) -> bool:
    return any(n > 0 for n in c.classes.values())


def _check(name: CheckName, threshold: float, value: float | None, ok: bool, msg: str) -> Check:
    result: Result = "Inconclusive" if value is None else "Passed" if ok else "Failed"
    return Check(name=name, value=value, threshold=threshold, result=result, message=msg)


def _error_rate(canary: PodCounters, limit: float) -> Check:
    if canary.requests <= 0:
        msg = "canary served no inference requests in the interval; no error rate to judge"
        return _check("errorRate", limit, None, True, msg)
    rate = canary.errors / canary.requests
    msg = (
        f"canary answered {_n(canary.errors)} of {_requests(canary.requests)} "
        f"({_pct_near(rate, limit)}) "
        f"with a 5xx; at most {_pct(limit)} allowed"
    )
    return _check("errorRate", limit, rate, rate <= limit, msg)


def _p99(buckets: Buckets) -> tuple[float | None, str]:
    """The p99 and how to say it: past the last finite bound the estimate is only a floor."""
    p99 = quantile(0.99, buckets)
    if p99 is None:
        return None, ""
    past_last = len(buckets) >= 2 and 0.99 * buckets[-1][1] > buckets[-2][1]
    return p99, f"over {_seconds(p99)}" if past_last else _seconds(p99)


def _latency(canary: PodCounters, limit: float) -> Check:
    p99, said = _p99(canary.latency)
    if p99 is None:
        msg = "canary's latency histogram has no inference requests in the interval"
        return _check("latencyP99", limit, None, True, msg)
    msg = (
        f"canary's p99 latency was {said} over {_requests(canary.requests)}; "
        f"at most {_seconds(limit)} allowed"
    )
    return _check("latencyP99", limit, p99, p99 <= limit, msg)


def _latency_ratio(canary: PodCounters, stable: PodCounters, limit: float) -> Check:
    (mine, mine_said), (theirs, theirs_said) = _p99(canary.latency), _p99(stable.latency)
    if mine is None or theirs is None or theirs <= 0:
        msg = "the latency histograms have no inference requests in the interval to compare"
        return _check("latencyP99Ratio", limit, None, True, msg)
    ratio = mine / theirs
    msg = (
        f"canary's p99 latency ({mine_said}) was {ratio:.3g} times stable's "
        f"({theirs_said}); at most {limit:g} times allowed"
    )
    return _check("latencyP99Ratio", limit, ratio, ratio <= limit, msg)


def _prediction_shift(canary: PodCounters, stable: PodCounters, limit: float) -> Check:
    def check(value: float | None, msg: str) -> Check:
        return _check("predictionShift", limit, value, value is not None and value <= limit, msg)

    has = {
        "classes": (_has_classes(canary), _has_classes(stable)),
        "values": (_has(canary.values), _has(stable.values)),
    }
    if any(has["classes"]):
        kind, other = "classes", "values"
        shift = js_divergence(canary.classes, stable.classes)
    elif any(has["values"]):
        kind, other = "values", "classes"
        shift = js_divergence_buckets(canary.values, stable.values)
    else:
        return check(None, "neither track made a prediction in the interval to compare")
    bound = f"at most {limit:g} allowed"
    for i, track in enumerate(("canary", "stable")):
        if has[kind][i]:
            continue
        if not has[other][i]:
            return check(None, f"{track} made no predictions in the interval to compare")
        # A classifier replaced by a regressor (or back): the outputs have nothing in common.
        canary_kind, stable_kind = (other, kind) if i == 0 else (kind, other)
        return check(
            1.0,
            f"canary predicted {canary_kind} and stable {stable_kind}: nothing in common, a "
            f"Jensen-Shannon divergence of 1; {bound}",
        )
    noun = "predicted-class" if kind == "classes" else "predicted-value"
    return check(
        shift,
        f"canary's {noun} distribution is {shift:.3g} from stable's (Jensen-Shannon "
        f"divergence, base 2: 0 same, 1 disjoint); {bound}",
    )


def judge(canary: PodCounters, stable: PodCounters, spec: AnalysisSpec) -> tuple[Check, ...]:
    """One interval's checks, one per threshold set in ``spec`` (errorRate always).

    Too little traffic is not a failure: a canary under minRequests makes every check
    Inconclusive, stable under minRequests the checks that compare against it.
    """
    wanted: list[tuple[CheckName, float]] = [("errorRate", spec.max_error_rate)]
    if spec.max_latency_p99_seconds is not None:
        wanted.append(("latencyP99", spec.max_latency_p99_seconds))
    if spec.max_latency_p99_ratio is not None:
        wanted.append(("latencyP99Ratio", spec.max_latency_p99_ratio))
    if spec.max_prediction_shift is not None:
        wanted.append(("predictionShift", spec.max_prediction_shift))
    need = spec.min_requests
    checks: list[Check] = []
    for name, threshold in wanted:
        relative = name in ("latencyP99Ratio", "predictionShift")
        short = next(
            (
                (track, c)
                for track, c in (("canary", canary), ("stable", stable))
                if c.requests < need and (track == "canary" or relative)
            ),
            None,
        )
        if short is not None:
            track, c = short
            msg = f"{track} served {_requests(c.requests)} in the interval; {need} needed to judge"
            checks.append(_check(name, threshold, None, True, msg))
        elif name == "errorRate":
            checks.append(_error_rate(canary, threshold))
        elif name == "latencyP99":
            checks.append(_latency(canary, threshold))
        elif name == "latencyP99Ratio":
            checks.append(_latency_ratio(canary, stable, threshold))
        else:
            checks.append(_prediction_shift(canary, stable, threshold))
    return tuple(checks)


def verdict(checks: Iterable[Check]) -> Result:
    """The interval's result: Failed if any check failed, Inconclusive unless errorRate passed."""
    checks = list(checks)
    if any(c.result == "Failed" for c in checks):
        return "Failed"
    if not any(c.name == "errorRate" and c.result == "Passed" for c in checks):
        return "Inconclusive"
    return "Passed"
