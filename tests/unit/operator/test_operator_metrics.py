"""The operator's Prometheus metrics: counters by outcome, writes by kind and verb, the per-object
gauges from a status dict (one series per reason and phase), series gone with their object, and
Runtime feeding them from real reconciles over the in-memory cluster."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT, FakeCluster, md_body
from modeldeploy_operator import metrics
from modeldeploy_operator.errors import ApiError
from modeldeploy_operator.handlers import Runtime
from modeldeploy_operator.metrics import ObjectGauges, OperatorMetrics, gauges_of, write_labels
from modeldeploy_operator.reconcile import InvalidSpecError
from modeldeploy_operator.settings import OperatorSettings
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

P = "modeldeploy_operator_"
KEY = ("team-a", "iris")


def value(m: OperatorMetrics, metric: str, /, **labels: str) -> float | None:
    return m.registry.get_sample_value(P + metric, labels)


def series(m: OperatorMetrics, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of ``name`` in the exposition text, as a scraper sees it."""
    text = generate_latest(m.registry).decode()
    return [
        s.labels
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == P + name
    ]


def status(
    ready: str = "True",
    degraded: str = "False",
    reason: str = "AsExpected",
    replicas: int = 2,
    ready_replicas: int = 2,
    phase: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "conditions": [
            {"type": "Ready", "status": ready, "reason": "Serving" if ready == "True" else "X"},
            {"type": "Progressing", "status": "False", "reason": "RolloutComplete"},
            {"type": "Degraded", "status": degraded, "reason": reason},
        ],
    }
    if phase is not None:
        out["rollout"] = {"phase": phase, "revision": "abc", "step": 1, "steps": 3}
    return out


# ---------------------------------------------------------------------------- pure parts
def test_gauges_of_a_status_dict() -> None:
    assert gauges_of(status()) == ObjectGauges(
        ready=1.0, degraded=("AsExpected", 0.0), replicas=2.0, ready_replicas=2.0
    )
    got = gauges_of(status("False", "True", "ImagePullFailed", 3, 1, phase="Progressing"))
    assert got == ObjectGauges(
        ready=0.0,
        degraded=("ImagePullFailed", 1.0),
        replicas=3.0,
        ready_replicas=1.0,
        rollout_phase="Progressing",
    )
    # what status does not say has no series; junk is not a number
    assert gauges_of({}) == ObjectGauges()
    assert gauges_of({"replicas": "x", "readyReplicas": True, "rollout": "?"}) == ObjectGauges()


@pytest.mark.parametrize(
    ("write", "labels"),
    [
        ("apply Deployment iris-stable", ("Deployment", "apply")),
        ("delete Service iris-canary", ("Service", "delete")),
        ("apply HTTPRoute iris", ("HTTPRoute", "apply")),
        ("apply", ("unknown", "apply")),
        ("", ("unknown", "unknown")),
    ],
)
def test_write_labels(write: str, labels: tuple[str, str]) -> None:
    assert write_labels(write) == labels


def test_api_error_reason_falls_back_to_the_code() -> None:
    assert metrics.api_error_reason(ApiError(409, "Conflict", "x")) == "Conflict"
    assert metrics.api_error_reason(ApiError(503, "", "x")) == "HTTP503"


# ---------------------------------------------------------------------------- counters
def test_outcomes_and_durations_are_counted_and_start_at_zero() -> None:
    m = OperatorMetrics()
    for outcome in metrics.OUTCOMES:
        assert value(m, "reconciles_total", outcome=outcome) == 0.0
    m.observe_reconcile(metrics.OK, 0.2)
    m.observe_reconcile(metrics.OK, 0.02)
    m.observe_reconcile(metrics.RETRY, 3.0)
    assert value(m, "reconciles_total", outcome="ok") == 2
    assert value(m, "reconciles_total", outcome="retry") == 1
    assert value(m, "reconcile_duration_seconds_count", outcome="ok") == 2
    assert value(m, "reconcile_duration_seconds_sum", outcome="ok") == pytest.approx(0.22)
    assert value(m, "reconcile_duration_seconds_bucket", outcome="ok", le="0.025") == 1
    assert value(m, "reconcile_duration_seconds_bucket", outcome="retry", le="2.5") == 0


def test_writes_by_kind_and_verb_with_the_status_patch() -> None:
    m = OperatorMetrics()
    m.count_writes(
        ["apply Deployment iris-stable", "apply Service iris", "apply Service iris-stable"],
        status_written=True,
    )
    m.count_writes(["delete Deployment iris-canary"], status_written=False)
    assert value(m, "api_writes_total", kind="Deployment", verb="apply") == 1
    assert value(m, "api_writes_total", kind="Service", verb="apply") == 2
    assert value(m, "api_writes_total", kind="Deployment", verb="delete") == 1
    assert value(m, "api_writes_total", kind="ModelDeployment", verb="patch_status") == 1


def test_errors_by_reason_and_work_in_flight() -> None:
    m = OperatorMetrics()
    m.count_error("Conflict")
    m.count_error("Conflict")
    m.count_error("")
    assert value(m, "errors_total", reason="Conflict") == 2
    assert value(m, "errors_total", reason="unknown") == 1
    queued: dict[tuple[str, str], bool] = {("a", "b"): False}
    m.track(lambda: len(queued), lambda: 7)
    assert value(m, "queue_depth") == 1
    queued.clear()
    assert value(m, "queue_depth") == 0  # read at scrape time
    assert value(m, "known_model_deployments") == 7
    with m.reconciling():
        assert value(m, "reconciles_in_flight") == 1
    assert value(m, "reconciles_in_flight") == 0


# ---------------------------------------------------------------------------- per object
def test_object_gauges_from_status() -> None:
    m = OperatorMetrics()
    m.observe_status(*KEY, status())
    ns, name = KEY
    assert value(m, "model_deployment_ready", namespace=ns, name=name) == 1
    assert value(m, "model_deployment_replicas", namespace=ns, name=name) == 2
    assert value(m, "model_deployment_ready_replicas", namespace=ns, name=name) == 2
    assert value(m, "model_deployment_degraded", namespace=ns, name=name, reason="AsExpected") == 0
    assert series(m, "model_deployment_rollout_phase") == []  # no rollout, no series


def test_a_changed_reason_or_phase_leaves_one_series() -> None:
    m = OperatorMetrics()
    ns, name = KEY
    m.observe_status(*KEY, status(phase="Progressing"))
    m.observe_status(*KEY, status("False", "True", "ImagePullFailed", 2, 0, phase="Paused"))
    assert series(m, "model_deployment_degraded") == [
        {"namespace": ns, "name": name, "reason": "ImagePullFailed"}
    ]
    assert value(m, "model_deployment_degraded", namespace=ns, name=name, reason="ImagePullFailed")
    assert series(m, "model_deployment_rollout_phase") == [
        {"namespace": ns, "name": name, "phase": "Paused"}
    ]
    assert value(m, "model_deployment_ready", namespace=ns, name=name) == 0
    m.observe_status(*KEY, status())  # healthy again, rollout done
    assert series(m, "model_deployment_degraded") == [
        {"namespace": ns, "name": name, "reason": "AsExpected"}
    ]
    assert series(m, "model_deployment_rollout_phase") == []


def test_invalid_spec_marks_degraded_and_keeps_replicas() -> None:
    m = OperatorMetrics()
    ns, name = KEY
    m.observe_status(*KEY, status())
    m.invalid_spec(*KEY)
    assert series(m, "model_deployment_degraded") == [
        {"namespace": ns, "name": name, "reason": "InvalidSpec"}
    ]
    assert value(m, "model_deployment_degraded", namespace=ns, name=name, reason="InvalidSpec") == 1
    assert value(m, "model_deployment_ready", namespace=ns, name=name) == 0
    assert value(m, "model_deployment_replicas", namespace=ns, name=name) == 2


def test_a_deleted_object_leaves_no_series_and_no_memory() -> None:
    m = OperatorMetrics()
    for i in range(200):
        m.observe_status("ns", f"md-{i}", status(phase="Progressing"))
    m.observe_status(*KEY, status("False", "True", "ImagePullFailed", phase="Paused"))
    for i in range(200):
        m.forget("ns", f"md-{i}")
    m.forget("ns", "never-seen")  # no error
    assert m.objects() == 1
    for name in (
        "model_deployment_ready",
        "model_deployment_degraded",
        "model_deployment_replicas",
        "model_deployment_ready_replicas",
        "model_deployment_rollout_phase",
    ):
        assert [s["name"] for s in series(m, name)] == ["iris"], name
    m.forget(*KEY)
    assert m.objects() == 0
    text = generate_latest(m.registry).decode()
    assert 'name="iris"' not in text


# ---------------------------------------------------------------------------- Runtime feeds them
class MetricsCluster(FakeCluster):
    """The in-memory cluster with the ModelDeployment read Runtime does first."""

    def __init__(self, body: dict[str, Any] | None) -> None:
        super().__init__()
        self.body = body
        self.get_error: ApiError | None = None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind != "ModelDeployment":
            return super().get(kind, namespace, name)
        if self.get_error is not None:
            raise self.get_error
        return copy.deepcopy(self.body)


def runtime(kube: MetricsCluster) -> Runtime:
    return Runtime(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]


def test_runtime_records_a_reconcile_its_writes_and_gauges_then_forgets() -> None:
    kube = MetricsCluster(md_body(namespace="team-a"))
    rt = runtime(kube)
    rt.seen("ADDED", KEY)
    asyncio.run(rt.run(*KEY))
    m = rt.metrics
    assert value(m, "reconciles_total", outcome="ok") == 1
    assert value(m, "reconcile_duration_seconds_count", outcome="ok") == 1
    # every write the cluster saw, by kind and verb (events are not writes of objects)
    sent = Counter(
        (call.split(" ")[1].split("/")[0], "apply")
        for call in kube.writes()
        if call.startswith("apply ")
    )
    sent[("ModelDeployment", "patch_status")] = 1
    counted = {
        (labels["kind"], labels["verb"]): value(m, "api_writes_total", **labels)
        for labels in series(m, "api_writes_total")
    }
    assert counted == sent
    assert counted[("Deployment", "apply")] == 1
    assert value(m, "known_model_deployments") == 1
    assert value(m, "reconciles_in_flight") == 0
    assert value(m, "model_deployment_replicas", namespace="team-a", name="iris") == 2
    assert value(m, "model_deployment_ready", namespace="team-a", name="iris") == 0  # no pods yet
    rt.seen("DELETED", KEY)
    assert m.objects() == 0
    assert value(m, "model_deployment_replicas", namespace="team-a", name="iris") is None
    assert value(m, "known_model_deployments") == 0


def test_runtime_outcomes_retry_gone_invalid_spec() -> None:
    kube = MetricsCluster(md_body(namespace="team-a"))
    rt = runtime(kube)
    rt.seen("ADDED", KEY)
    m = rt.metrics

    kube.get_error = ApiError(429, "TooManyRequests", "slow down")
    with pytest.raises(ApiError):
        asyncio.run(rt.run(*KEY))
    assert value(m, "reconciles_total", outcome="retry") == 1
    assert value(m, "errors_total", reason="TooManyRequests") == 1

    kube.get_error = ApiError(403, "Forbidden", "no")
    with pytest.raises(ApiError):
        asyncio.run(rt.run(*KEY))
    assert value(m, "reconciles_total", outcome="error") == 1
    assert value(m, "errors_total", reason="Forbidden") == 1

    kube.get_error = None
    kube.body = None
    asyncio.run(rt.run(*KEY))
    assert value(m, "reconciles_total", outcome="gone") == 1

    kube.body = md_body(namespace="team-a", replicas="many")
    with pytest.raises(InvalidSpecError):
        asyncio.run(rt.run(*KEY))
    assert value(m, "reconciles_total", outcome="invalid_spec") == 1
    assert value(m, "errors_total", reason="InvalidSpec") == 1
    assert value(
        m, "model_deployment_degraded", namespace="team-a", name="iris", reason="InvalidSpec"
    )
    assert value(m, "reconciles_total", outcome="ok") == 0


def test_a_run_finishing_after_the_delete_brings_no_series_back() -> None:
    kube = MetricsCluster(md_body(namespace="team-a"))
    rt = runtime(kube)  # never seen ADDED (or already DELETED): not in known
    asyncio.run(rt.run(*KEY))
    assert value(rt.metrics, "reconciles_total", outcome="ok") == 1
    assert rt.metrics.objects() == 0


def test_the_operator_deployment_exposes_the_metrics_port() -> None:
    """deploy/operator.yaml: the container port named metrics, the env that sets it and the
    scrape annotations name one port, the settings' default."""
    docs = yaml.safe_load_all((REPO_ROOT / "deploy" / "operator.yaml").read_text())
    (dep,) = [d for d in docs if d and d["kind"] == "Deployment"]
    template = dep["spec"]["template"]
    (c,) = template["spec"]["containers"]
    port = OperatorSettings.model_fields["metrics_port"].default
    assert {"name": "metrics", "containerPort": port} in c["ports"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MODELDEPLOY_METRICS_PORT"] == str(port)
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
