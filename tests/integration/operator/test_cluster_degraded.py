"""A server that can't load its model shows up as Degraded with the server's own reason.

On hack/local-cluster.sh's cluster kwok drives it: a pod whose STORAGE_URI contains /kwok-crash/
gets its container terminated (exit code 1, termination message "could not load the model from
<uri>: ...") and then sits in CrashLoopBackOff with that lastState, exactly what a kubelet
reports when the real server writes /dev/termination-log and exits."""

from __future__ import annotations

import pytest
from operator_harness import (
    Cluster,
    condition,
    iris_spec,
    md_manifest,
    wait_md_ready,
    wait_until,
)

BROKEN_URI = "s3://models/kwok-crash/iris/v9/"
MESSAGE = f"could not load the model from {BROKEN_URI}"


@pytest.fixture
def crash_capable(cluster: Cluster) -> Cluster:
    if not cluster.simulates_crashes:
        pytest.skip("needs hack/local-cluster.sh's kwok crash stage")
    return cluster


def test_terminated_container_message_becomes_degraded(
    crash_capable: Cluster, namespace: str
) -> None:
    cluster = crash_capable
    spec = iris_spec(replicas=2)
    spec["model"]["storageUri"] = BROKEN_URI
    cluster.create_md(namespace, md_manifest("broken", spec))

    def degraded() -> dict[str, str] | None:
        md = cluster.get_md(namespace, "broken")
        c = condition(md, "Degraded")
        if c and c["status"] == "True" and MESSAGE in str(c.get("message", "")):
            return {str(k): str(v) for k, v in c.items()}
        return None

    cond = wait_until(degraded, f"Degraded=True carrying {MESSAGE!r}")
    assert cond.get("reason"), cond
    md = cluster.get_md(namespace, "broken")
    ready = condition(md, "Ready")
    assert ready is not None, md["status"]
    assert ready["status"] != "True", ready
    assert md["status"].get("readyReplicas", 0) == 0, md["status"]

    # the pods really are in the state the operator read the message from
    pods = cluster.pods(namespace, "broken")
    crashed = [
        cs
        for p in pods
        for cs in p["status"].get("containerStatuses") or []
        if MESSAGE in str(cs.get("lastState") or cs.get("state"))
    ]
    assert crashed, [p["status"] for p in pods]

    described = cluster.kubectl("describe", "md", "broken", "-n", namespace).stdout
    assert "Degraded" in described, described
    assert MESSAGE in described, described


def test_degraded_clears_when_the_model_is_fixed(crash_capable: Cluster, namespace: str) -> None:
    cluster = crash_capable
    cluster.create_md(namespace, md_manifest("fixme", iris_spec(replicas=1)))
    cluster.patch_md(namespace, "fixme", {"spec": {"model": {"storageUri": BROKEN_URI}}})
    wait_until(
        lambda: (
            (c := condition(cluster.get_md(namespace, "fixme"), "Degraded"))
            and c["status"] == "True"
        ),
        "Degraded=True",
    )
    cluster.patch_md(
        namespace, "fixme", {"spec": {"model": {"storageUri": "s3://models/iris/v1/"}}}
    )
    md = wait_md_ready(cluster, namespace, "fixme")
    c = condition(md, "Degraded")
    assert c is None or c["status"] == "False", c
