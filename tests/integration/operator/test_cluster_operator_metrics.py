"""The operator's /metrics as Prometheus scrapes it from the real operator process: a new
ModelDeployment's reconciles and writes are counted by outcome and kind, its gauges say Ready and
its replicas, and once it is deleted none of its series is left."""

from __future__ import annotations

import httpx
from operator_harness import (
    Cluster,
    OperatorProcess,
    eventually,
    iris_spec,
    md_manifest,
    wait_md_ready,
)
from prometheus_client.parser import text_string_to_metric_families

P = "modeldeploy_operator_"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(operator: OperatorProcess) -> Samples:
    response = httpx.get(operator.metrics_url, timeout=5)
    response.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((P + metric, frozenset(labels.items())))


def of_object(samples: Samples, namespace: str, name: str) -> list[str]:
    """Every series that names this ModelDeployment."""
    return sorted(
        f"{n}{dict(labels)}"
        for (n, labels), _ in samples.items()
        if ("namespace", namespace) in labels and ("name", name) in labels
    )


def test_operator_metrics_follow_a_model_deployment(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    before = scrape(operator)
    ok_before = sample(before, "reconciles_total", outcome="ok") or 0.0
    deployments_before = sample(before, "api_writes_total", kind="Deployment", verb="apply") or 0.0
    services_before = sample(before, "api_writes_total", kind="Service", verb="apply") or 0.0
    status_before = (
        sample(before, "api_writes_total", kind="ModelDeployment", verb="patch_status") or 0.0
    )

    cluster.create_md(namespace, md_manifest("watched", iris_spec(replicas=2)))
    wait_md_ready(cluster, namespace, "watched")

    def counted() -> None:
        now = scrape(operator)
        assert (sample(now, "reconciles_total", outcome="ok") or 0.0) > ok_before
        # the stable Deployment at least; the Services over all tracks and of the stable track
        assert (
            sample(now, "api_writes_total", kind="Deployment", verb="apply") or 0.0
        ) >= deployments_before + 1
        assert (
            sample(now, "api_writes_total", kind="Service", verb="apply") or 0.0
        ) >= services_before + 2
        assert (
            sample(now, "api_writes_total", kind="ModelDeployment", verb="patch_status") or 0.0
        ) > status_before
        assert (sample(now, "reconcile_duration_seconds_count", outcome="ok") or 0.0) > 0
        assert (sample(now, "known_model_deployments") or 0.0) >= 1
        assert sample(now, "reconciles_in_flight") is not None
        assert sample(now, "queue_depth") is not None
        obj = {"namespace": namespace, "name": "watched"}
        assert sample(now, "model_deployment_ready", **obj) == 1
        assert sample(now, "model_deployment_replicas", **obj) == 2
        assert sample(now, "model_deployment_ready_replicas", **obj) == 2
        assert sample(now, "model_deployment_degraded", **obj, reason="AsExpected") == 0
        degraded = [s for s in of_object(now, namespace, "watched") if "degraded" in s]
        assert len(degraded) == 1, degraded  # one series, the current reason

    eventually(counted, "the operator's metrics to count the new ModelDeployment")

    cluster.delete_md(namespace, "watched")

    def forgotten() -> None:
        left = of_object(scrape(operator), namespace, "watched")
        assert left == [], left

    eventually(forgotten, "the deleted ModelDeployment's series to go")
