"""Children belong to their ModelDeployment: one deleted or edited by hand is put back, and
deleting the ModelDeployment removes every child through ownerReference garbage collection
(kube-controller-manager's garbage collector, not the operator)."""

from __future__ import annotations

import json

from cluster_contract import assert_children
from operator_harness import (
    LABEL_INSTANCE,
    LABEL_TRACK,
    Cluster,
    container,
    eventually,
    iris_spec,
    md_manifest,
    ready_md,
    wait_md_ready,
    wait_until,
)


def _setup(cluster: Cluster, namespace: str, name: str = "heal") -> None:
    spec = iris_spec(
        replicas=3,
        canary={"storageUri": "s3://models/iris/v2/", "trafficPercent": 34},
        autoscaling={"minReplicas": 3, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
    )
    cluster.create_md(namespace, md_manifest(name, spec))
    wait_md_ready(cluster, namespace, name)
    eventually(
        lambda: assert_children(cluster, namespace, ready_md(cluster, namespace, name)),
        "the initial children",
    )


def _converged(cluster: Cluster, namespace: str, name: str, what: str) -> None:
    eventually(
        lambda: assert_children(cluster, namespace, ready_md(cluster, namespace, name)),
        what,
    )


def test_deleted_children_are_recreated(cluster: Cluster, namespace: str) -> None:
    _setup(cluster, namespace)
    before = {
        "deployment": cluster.deployment(namespace, "heal-stable")["metadata"]["uid"],
        "service": cluster.service(namespace, "heal")["metadata"]["uid"],
        "hpa": cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(
            "heal", namespace
        ).metadata.uid,
    }
    cluster.kubectl("delete", "-n", namespace, "deployment/heal-stable", "--wait=false")
    cluster.kubectl("delete", "-n", namespace, "service/heal", "--wait=false")
    cluster.kubectl("delete", "-n", namespace, "hpa/heal", "--wait=false")

    def recreated() -> bool:
        now = {
            "deployment": cluster.deployment(namespace, "heal-stable")["metadata"]["uid"],
            "service": cluster.service(namespace, "heal")["metadata"]["uid"],
            "hpa": cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(
                "heal", namespace
            ).metadata.uid,
        }
        return all(now[k] != before[k] for k in before)

    wait_until(recreated, "the deleted Deployment, Service and HPA to be recreated")
    _converged(cluster, namespace, "heal", "the recreated children to match the contract")


def test_edited_children_are_restored(cluster: Cluster, namespace: str) -> None:
    _setup(cluster, namespace)
    # a person "fixes" things by hand: replicas, the image, a probe, the service selector, a label
    cluster.kubectl("scale", "-n", namespace, "deployment/heal-stable", "--replicas=7")
    d = cluster.deployment(namespace, "heal-canary")
    cname = container(d)["name"]
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": cname, "image": "busybox:1.36", "readinessProbe": None}]
                }
            }
        }
    }
    patched = cluster.kubectl(
        "patch",
        "-n",
        namespace,
        "deployment/heal-canary",
        "--type=strategic",
        "-p",
        json.dumps(patch),
        "-o",
        "json",
    ).stdout
    assert container(json.loads(patched))["image"] == "busybox:1.36"  # the edit did land
    cluster.kubectl(
        "patch",
        "-n",
        namespace,
        "service/heal-stable",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"selector": {LABEL_TRACK: "canary"}}}),
    )
    cluster.kubectl("label", "-n", namespace, "service/heal", f"{LABEL_INSTANCE}-", "--overwrite")
    cluster.kubectl(
        "patch",
        "-n",
        namespace,
        "hpa/heal",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"maxReplicas": 50}}),
    )

    def restored() -> None:
        md = ready_md(cluster, namespace, "heal")
        assert_children(cluster, namespace, md)
        stable = cluster.deployment(namespace, "heal-stable")
        canary = cluster.deployment(namespace, "heal-canary")
        assert stable["spec"]["replicas"] + canary["spec"]["replicas"] == 3

    _converged(cluster, namespace, "heal", "hand edits to be reverted")
    eventually(restored, "hand edits to be reverted")


def test_deleting_the_modeldeployment_garbage_collects_every_child(
    cluster: Cluster, namespace: str
) -> None:
    _setup(cluster, namespace, "gone")
    assert cluster.pods(namespace, "gone"), "no pods to collect"
    assert cluster.replicasets(namespace, "gone"), "no ReplicaSets to collect"
    cluster.delete_md(namespace, "gone")

    def all_gone() -> bool:
        left = {
            "deployments": [d["metadata"]["name"] for d in cluster.deployments(namespace, "gone")],
            "replicasets": [r["metadata"]["name"] for r in cluster.replicasets(namespace, "gone")],
            "pods": [p["metadata"]["name"] for p in cluster.pods(namespace, "gone")],
            "services": [s["metadata"]["name"] for s in cluster.services(namespace, "gone")],
            "hpas": [h["metadata"]["name"] for h in cluster.hpas(namespace)],
            "mds": [
                m["metadata"]["name"]
                for m in cluster.custom.list_namespaced_custom_object(
                    "modeldeploy.io", "v1alpha1", namespace, "modeldeployments"
                )["items"]
            ],
        }
        assert not any(left.values()), left
        return True

    wait_until(all_gone, "every child to be garbage-collected")
