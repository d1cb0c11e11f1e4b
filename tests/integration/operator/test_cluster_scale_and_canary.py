"""The scale subresource and the canary split: `kubectl scale md/x` and canary percent changes
re-divide the replicas between the tracks, and status reports the effective percentage."""

from __future__ import annotations

from cluster_contract import assert_children, assert_split
from operator_harness import (
    Cluster,
    Obj,
    eventually,
    iris_spec,
    md_manifest,
    ready_md,
    wait_md_ready,
    wait_until,
)

CANARY_URI = "s3://models/iris/v2/"


def _canary_md(replicas: int, percent: int) -> Obj:
    return md_manifest(
        "split",
        iris_spec(replicas=replicas, canary={"storageUri": CANARY_URI, "trafficPercent": percent}),
    )


def test_kubectl_scale_resplits_replicas(cluster: Cluster, namespace: str) -> None:
    cluster.create_md(namespace, _canary_md(replicas=5, percent=20))
    md = wait_md_ready(cluster, namespace, "split")
    assert_split(cluster, namespace, md, total=5, percent=20)

    for total in (10, 3):
        cluster.kubectl("scale", "-n", namespace, "md/split", f"--replicas={total}")

        def check(total: int = total) -> None:
            md = ready_md(cluster, namespace, "split")
            assert md["spec"]["replicas"] == total
            assert md["status"]["replicas"] == total, md["status"]
            assert md["status"]["readyReplicas"] == total, md["status"]
            assert_split(cluster, namespace, md, total=total, percent=20)

        eventually(check, f"split to re-divide {total} replicas")

    # the scale subresource reports what kubectl scale wrote, with the selector HPAs use
    scale = cluster.custom.get_namespaced_custom_object_scale(
        "modeldeploy.io", "v1alpha1", namespace, "modeldeployments", "split"
    )
    assert scale["spec"]["replicas"] == 3, scale
    assert scale["status"]["replicas"] == 3, scale
    assert scale["status"].get("selector"), scale


def test_canary_percent_changes_resplit_and_removal_deletes_the_track(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create_md(namespace, _canary_md(replicas=10, percent=10))
    md = wait_md_ready(cluster, namespace, "split")
    assert_split(cluster, namespace, md, total=10, percent=10)

    for percent in (50, 1, 90):
        cluster.patch_md(namespace, "split", {"spec": {"canary": {"trafficPercent": percent}}})

        def check(percent: int = percent) -> None:
            md = ready_md(cluster, namespace, "split")
            assert_split(cluster, namespace, md, total=10, percent=percent)

        eventually(check, f"the split at {percent}%")

    # "at least one canary pod while it is above 0": 1% of 10 replicas is still one pod (10%)
    md = cluster.get_md(namespace, "split")
    assert md["status"]["canary"]["replicas"] >= 1
    out = cluster.kubectl("get", "md", "split", "-n", namespace).stdout
    # Cut the row at the header's column starts: VERSION and ROLLOUT are empty here.
    header, row = out.splitlines()[:2]
    start = header.index("CANARY")
    canary_col = row[start:].split()[0]
    assert float(canary_col.rstrip("%")) == float(md["status"]["canary"]["trafficPercent"]), out

    # removing the canary removes its Deployment and Service; stable takes every replica
    cluster.kubectl(
        "patch",
        "md",
        "split",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/canary"}]',
    )

    def canary_gone() -> bool:
        names = {d["metadata"]["name"] for d in cluster.deployments(namespace, "split")}
        svcs = {s["metadata"]["name"] for s in cluster.services(namespace, "split")}
        return names == {"split-stable"} and "split-canary" not in svcs

    wait_until(canary_gone, "the canary Deployment and Service to be deleted")
    eventually(
        lambda: assert_children(cluster, namespace, ready_md(cluster, namespace, "split")),
        "the stable track to serve all 10 replicas",
    )
    assert cluster.deployment(namespace, "split-stable")["spec"]["replicas"] == 10
