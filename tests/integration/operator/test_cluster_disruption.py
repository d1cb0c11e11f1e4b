"""Node drains and spreading, against the real API server: the operator's PodDisruptionBudget per
track is what the eviction API enforces, it follows spec.disruptionBudget (and goes when disabled),
and every pod carries the topology spread the API server accepted."""

from __future__ import annotations

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    Cluster,
    Obj,
    eventually,
    iris_spec,
    md_manifest,
    wait_md_ready,
)

CANARY = {"storageUri": "s3://models/iris/v2/", "trafficPercent": 50}


def _pdbs(cluster: Cluster, namespace: str) -> dict[str, Obj]:
    policy = k8s.PolicyV1Api(cluster.api_client)
    items = policy.list_namespaced_pod_disruption_budget(namespace).items
    return {p.metadata.name: cluster.api_client.sanitize_for_serialization(p) for p in items}


def _evict(cluster: Cluster, namespace: str, pod: str) -> int:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}}
    try:
        cluster.core.create_namespaced_pod_eviction(pod, namespace, body)
    except ApiException as e:
        return int(e.status)
    return 201


def test_each_track_has_a_budget_that_follows_the_spec(cluster: Cluster, namespace: str) -> None:
    cluster.create_md(namespace, md_manifest("drain", iris_spec(replicas=4, canary=CANARY)))
    wait_md_ready(cluster, namespace, "drain")
    pdbs = _pdbs(cluster, namespace)
    assert set(pdbs) == {"drain-stable", "drain-canary"}
    for track in ("stable", "canary"):
        spec = pdbs[f"drain-{track}"]["spec"]
        assert spec["maxUnavailable"] == 1
        assert spec["selector"]["matchLabels"]["modeldeploy.io/track"] == track
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"

    cluster.patch_md(namespace, "drain", {"spec": {"disruptionBudget": {"minAvailable": "100%"}}})

    def follows() -> None:
        spec = _pdbs(cluster, namespace)["drain-stable"]["spec"]
        assert spec.get("minAvailable") == "100%", spec
        assert "maxUnavailable" not in spec, spec

    eventually(follows, "the budget to follow spec.disruptionBudget")

    # The API server itself refuses to evict a pod the budget protects (429 TooManyRequests).
    def refused() -> None:
        pdb = _pdbs(cluster, namespace)["drain-stable"]
        assert pdb["status"].get("observedGeneration") == pdb["metadata"]["generation"], pdb
        assert pdb["status"].get("currentHealthy") == 2, pdb["status"]

    eventually(refused, "the disruption controller to count the healthy stable pods")
    pods = [
        p["metadata"]["name"]
        for p in cluster.pods(namespace, "drain")
        if p["metadata"]["labels"].get("modeldeploy.io/track") == "stable"
    ]
    assert _evict(cluster, namespace, pods[0]) == 429

    cluster.patch_md(namespace, "drain", {"spec": {"disruptionBudget": {"enabled": False}}})

    def deleted() -> None:
        assert _pdbs(cluster, namespace) == {}

    eventually(deleted, "the budgets to be deleted")
    assert _evict(cluster, namespace, pods[0]) == 201  # nothing protects the pod now


def test_pods_spread_over_zones_and_nodes_unless_told_otherwise(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create_md(namespace, md_manifest("spread", iris_spec(replicas=2)))
    wait_md_ready(cluster, namespace, "spread")
    (pod, *_) = cluster.pods(namespace, "spread")
    spread = pod["spec"]["topologySpreadConstraints"]
    assert [(s["topologyKey"], s["whenUnsatisfiable"]) for s in spread] == [
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ("kubernetes.io/hostname", "ScheduleAnyway"),
    ]
    assert spread[0]["matchLabelKeys"] == ["pod-template-hash"]

    cluster.patch_md(namespace, "spread", {"spec": {"topologySpread": []}})

    def no_spread() -> None:
        wait_md_ready(cluster, namespace, "spread")
        pods = cluster.pods(namespace, "spread")
        assert pods
        assert all(not p["spec"].get("topologySpreadConstraints") for p in pods), pods

    eventually(no_spread, "the pods to roll without spread constraints")
