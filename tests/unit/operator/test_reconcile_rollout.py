"""reconcile with spec.rollout against the in-memory cluster: what each step writes, and an
analysis interval judged from scraped counters that aborts the rollout.

The scrape is a function handed to reconcile (the real one reads pods over HTTP, tested in
tests/integration); here it returns the counters a test chooses, per pod and per run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from conftest import FakeCluster, md_body
from modeldeploy_operator.analysis import PodCounters
from modeldeploy_operator.reconcile import Baseline, reconcile
from modeldeploy_operator.settings import OperatorSettings

V1 = "s3://models/iris/v1/model.joblib"
V2 = "s3://models/iris/v2/model.joblib"
ROLLOUT = {
    "steps": [{"setWeight": 50}, {"pause": {"duration": "5m"}}],
    "analysis": {"interval": "30s", "failureLimit": 0, "minRequests": 10},
}


def counters(requests: float, errors: float = 0, cls: str = "0") -> PodCounters:
    n, e = float(requests), float(errors)
    return PodCounters(requests=n, errors=e, latency=((0.005, n), (math.inf, n)), classes={cls: n})


class Scrapes:
    """What each pod's /metrics says right now, and which pods were asked."""

    def __init__(self) -> None:
        self.now: dict[str, PodCounters] = {}
        self.asked: list[list[str]] = []

    def __call__(self, targets: Mapping[str, str]) -> dict[str, PodCounters | str]:
        self.asked.append(sorted(targets))
        return {n: self.now.get(n, "connection refused") for n in targets}


def pod(name: str, track: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/instance": "iris", "modeldeploy.io/track": track},
        },
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def storage_uri(cluster: FakeCluster, deployment: str) -> str | None:
    dep = cluster.objects.get(("Deployment", "default", deployment))
    if dep is None:
        return None
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e["value"] for e in env if e["name"] == "STORAGE_URI")


def test_a_canary_that_fails_analysis_is_aborted_and_removed(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    scrapes = Scrapes()
    baselines: dict[tuple[str, str], Baseline] = {}

    def run(body: dict[str, Any], clock: float) -> Any:
        out = reconcile(
            cluster, body, settings, now="2026-12-02T07:00:00Z",
            scrape=scrapes, baselines=baselines, clock=clock,
        )  # fmt: skip
        body["status"] = out.status
        return out

    body = md_body(model={"storageUri": V1}, rollout=ROLLOUT)
    run(body, 900.0)
    cluster.roll_out()
    run(body, 901.0)
    assert body["status"]["rollout"]["phase"] == "Healthy"
    assert storage_uri(cluster, "iris-canary") is None

    # A new model: the canary runs it at 50 %, stable keeps the old one.
    body["spec"]["model"]["storageUri"] = V2
    body["metadata"]["generation"] = 2
    cluster.events.clear()
    run(body, 1000.0)
    assert storage_uri(cluster, "iris-stable") == V1
    assert storage_uri(cluster, "iris-canary") == V2
    assert [e[1] for e in cluster.events if e[1].startswith("Rollout")] == [
        "RolloutStarted",
        "RolloutStep",
    ]
    assert scrapes.asked == []  # the canary is not ready yet: nothing to judge

    cluster.roll_out()
    cluster.pods = [pod("s-1", "stable", "10.0.0.1"), pod("c-1", "canary", "10.0.0.2")]
    scrapes.now = {"s-1": counters(100), "c-1": counters(0)}
    out = run(body, 1001.0)  # canary ready: the pause begins, the first scrape is the baseline
    ro = body["status"]["rollout"]
    assert (ro["phase"], ro["step"]) == ("Progressing", 1)
    assert scrapes.asked == [["c-1", "s-1"]]
    assert out.requeue_after == 30.0
    assert "analysis" not in ro

    # 30 s later: the canary answered half of its 40 requests with a 5xx.
    scrapes.now = {"s-1": counters(140), "c-1": counters(40, errors=20)}
    run(body, 1031.0)
    ro = body["status"]["rollout"]
    assert ro["phase"] == "Aborted"
    assert ro["weight"] == 0
    assert storage_uri(cluster, "iris-canary") is None
    assert storage_uri(cluster, "iris-stable") == V1
    degraded = next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutAborted")
    assert "analysis failed" in degraded["message"]
    error_rate = next(c for c in ro["analysis"] if c["name"] == "errorRate")
    assert (error_rate["result"], error_rate["value"]) == ("Failed", 0.5)
    promoted = next(c for c in body["status"]["conditions"] if c["type"] == "Promoted")
    assert promoted["status"] == "False"

    # Aborted stays aborted: later runs scrape nothing and write nothing.
    cluster.calls.clear()
    scrapes.asked.clear()
    run(body, 2000.0)
    assert scrapes.asked == []
    assert [c for c in cluster.writes() if not c.startswith("event")] == []


def test_without_spec_rollout_status_has_no_rollout(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = md_body(model={"storageUri": V1}, rollout=ROLLOUT)
    out = reconcile(cluster, body, settings, now="2026-12-02T07:00:00Z", clock=1.0)
    body["status"] = out.status
    assert "rollout" in body["status"]
    del body["spec"]["rollout"]
    cluster.status_patches.clear()
    out = reconcile(cluster, body, settings, now="2026-12-02T07:00:00Z", clock=2.0)
    assert "rollout" not in out.status
    assert cluster.status_patches[-1]["rollout"] is None  # removed from the live status too
    assert [c["type"] for c in out.status["conditions"]] == ["Ready", "Progressing", "Degraded"]
