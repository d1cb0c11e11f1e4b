"""Killing the operator with SIGKILL in the middle of a reconcile and starting it again converges
to exactly the desired children: nothing duplicated, nothing left behind, no extra rollout."""

from __future__ import annotations

from cluster_contract import assert_children, assert_split
from operator_harness import (
    Cluster,
    OperatorProcess,
    eventually,
    iris_spec,
    md_manifest,
    ready_md,
    wait_md_ready,
    wait_until,
)


def _inventory(cluster: Cluster, namespace: str, name: str) -> dict[str, list[str]]:
    return {
        "deployments": sorted(d["metadata"]["name"] for d in cluster.deployments(namespace, name)),
        "services": sorted(s["metadata"]["name"] for s in cluster.services(namespace, name)),
        "hpas": sorted(h["metadata"]["name"] for h in cluster.hpas(namespace)),
    }


def test_sigkill_mid_reconcile_then_restart_converges_without_duplicates(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name = "crashy"
    spec = iris_spec(
        replicas=4,
        canary={"storageUri": "s3://models/iris/v2/", "trafficPercent": 25},
        autoscaling={"minReplicas": 4, "maxReplicas": 8, "targetCPUUtilizationPercentage": 60},
    )
    try:
        cluster.create_md(namespace, md_manifest(name, spec))
        # kill as soon as the operator has written its first child, i.e. while reconciling
        wait_until(
            lambda: cluster.deployments(namespace, name) or cluster.services(namespace, name),
            "the operator's first write",
            interval=0.05,
        )
        operator.kill()
        partial = _inventory(cluster, namespace, name)

        # a spec change lands while no operator runs
        cluster.patch_md(namespace, name, {"spec": {"canary": {"trafficPercent": 50}}})
        operator.start()

        wait_md_ready(cluster, namespace, name)
        eventually(
            lambda: assert_children(cluster, namespace, ready_md(cluster, namespace, name)),
            "children after the restart",
        )

        # a second kill right after a change, before it can be reconciled
        operator.kill()
        cluster.patch_md(namespace, name, {"spec": {"canary": {"trafficPercent": 25}}})
        operator.start()
    finally:
        if not operator.running():
            operator.start()

    def final() -> None:
        md = ready_md(cluster, namespace, name)
        assert_children(cluster, namespace, md)
        assert_split(cluster, namespace, md, total=4, percent=25)

    eventually(final, "convergence after two SIGKILLs")
    inv = _inventory(cluster, namespace, name)
    assert inv == {
        "deployments": [f"{name}-canary", f"{name}-stable"],
        "services": [name, f"{name}-canary", f"{name}-stable"],
        "hpas": [name],
    }, f"after restart: {inv} (when killed: {partial})"

    # no duplicate pods and no extra rollout: each Deployment has one ReplicaSet with pods
    def pods_settled() -> bool:
        pods = [
            p for p in cluster.pods(namespace, name) if not p["metadata"].get("deletionTimestamp")
        ]
        return len(pods) == 4

    wait_until(pods_settled, "exactly 4 pods")
    for track in ("stable", "canary"):
        rs = [
            r
            for r in cluster.replicasets(namespace, name)
            if r["metadata"]["labels"].get("modeldeploy.io/track") == track
        ]
        assert len(rs) == 1, f"{track}: {len(rs)} ReplicaSets: a rollout nobody asked for"
