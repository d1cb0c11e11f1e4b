"""Progressive rollout on the real control plane: steps, pauses, commands, restarts.

The operator runs as its ServiceAccount against a real kube-apiserver; kwok plays the pods, so
nothing here serves traffic and the analysis is switched off (tests/e2e judges real pods). What
is checked is the step machine as users drive it: the canary appears at its weight while stable
keeps the old model, a pause waits for `kubectl modeldeploy promote` (the real plugin, as
installed), `kubectl annotate` aborts, `retry` starts again, timed pauses end by themselves, and
a killed operator resumes at the same step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    Cluster,
    OperatorProcess,
    condition,
    container,
    env_of,
    iris_spec,
    md_manifest,
    wait_md_ready,
    wait_until,
)

Obj = dict[str, Any]
V1 = "s3://models/iris/v1/"
V2 = "s3://models/iris/v2/"
PLUGIN = Path(sys.executable).parent / "kubectl-modeldeploy"


def rollout_of(cluster: Cluster, namespace: str, name: str) -> Obj:
    return (cluster.get_md(namespace, name).get("status") or {}).get("rollout") or {}


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phase: str, step: int | None = None
) -> Obj:
    def reached() -> Obj | None:
        ro = rollout_of(cluster, namespace, name)
        ok = ro.get("phase") == phase and (step is None or ro.get("step") == step)
        return ro if ok else None

    got: Obj = wait_until(
        reached, f"status.rollout.phase {phase}" + (f" at step {step}" if step is not None else "")
    )
    return got


def served(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """track -> STORAGE_URI of that track's Deployment."""
    out = {}
    for d in cluster.deployments(namespace, name):
        track = d["metadata"]["labels"]["modeldeploy.io/track"]
        out[track] = env_of(container(d))["STORAGE_URI"]
    return out


def plugin(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run(
        [str(PLUGIN), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    items = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    ).items
    return [e.reason for e in items]


def manual_rollout(**analysis: Any) -> Obj:
    return {
        "steps": [{"setWeight": 50}, {"pause": {}}],
        "analysis": {"enabled": False, **analysis},
    }


def test_pause_waits_for_the_plugin_then_promotes(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name = "roll"
    cluster.create_md(namespace, md_manifest(name, iris_spec(rollout=manual_rollout())))
    md = wait_md_ready(cluster, namespace, name)
    assert md["status"]["rollout"]["phase"] == "Healthy"  # nothing served before: no rollout
    assert condition(md, "Promoted")["status"] == "True"

    cluster.patch_md(namespace, name, {"spec": {"model": {"storageUri": V2}}})
    ro = wait_phase(cluster, namespace, name, "Paused", step=1)
    assert ro["weight"] == 50
    assert ro["previous"]["storageUri"] == V1
    assert ro["summary"] == "Paused 1/2"
    assert served(cluster, namespace, name) == {"stable": V1, "canary": V2}
    md = cluster.get_md(namespace, name)
    assert condition(md, "Promoted")["reason"] == "RolloutPaused"
    assert condition(md, "Progressing")["status"] == "True"
    table = cluster.kubectl("get", "md", name, "-n", namespace).stdout
    assert "Paused 1/2" in table

    status = plugin(cluster, "status", name, "-n", namespace)
    assert status.returncode == 0, status.stderr
    assert "Paused 1/2" in status.stdout
    assert f"previous {V1}" in status.stdout

    promoted = plugin(cluster, "promote", name, "-n", namespace, "--wait", "60")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr

    wait_phase(cluster, namespace, name, "Healthy")
    wait_until(lambda: served(cluster, namespace, name) == {"stable": V2}, "canary removed")
    cluster.kubectl(
        "wait", "--for=condition=Promoted", f"md/{name}", "-n", namespace, "--timeout=60s"
    )
    seen = events(cluster, namespace, name)
    for reason in ("RolloutStarted", "RolloutPaused", "RolloutPromoting", "RolloutPromoted"):
        assert reason in seen, seen


def test_abort_by_annotation_then_retry_with_the_plugin(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name = "abort"
    cluster.create_md(namespace, md_manifest(name, iris_spec(rollout=manual_rollout())))
    wait_md_ready(cluster, namespace, name)
    cluster.patch_md(namespace, name, {"spec": {"model": {"storageUri": V2}}})
    wait_phase(cluster, namespace, name, "Paused")

    cluster.kubectl("annotate", "md", name, "-n", namespace, "modeldeploy.io/abort=first")
    ro = wait_phase(cluster, namespace, name, "Aborted")
    assert ro["weight"] == 0
    assert ro["commands"]["abort"] == "first"
    wait_until(lambda: served(cluster, namespace, name) == {"stable": V1}, "canary removed")
    md = cluster.get_md(namespace, name)
    assert md["status"]["stable"]["readyReplicas"] >= 1  # stable serves throughout
    # Stable scales back from its share of the split to spec.replicas, so Ready can be False
    # (RollingOut) for a moment here; what matters is that the abort does not hold it False.
    md = wait_md_ready(cluster, namespace, name)
    degraded = condition(md, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutAborted")
    assert "aborted by a person" in degraded["message"]
    assert md["status"]["stable"]["storageUri"] == V1
    assert md["spec"]["model"]["storageUri"] == V2  # the operator never rewrites spec

    retried = plugin(cluster, "retry", name, "-n", namespace, "--wait", "60")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    wait_phase(cluster, namespace, name, "Paused")
    assert served(cluster, namespace, name) == {"stable": V1, "canary": V2}

    # Reverting spec.model is the GitOps rollback: the rollout ends, stable never moved.
    cluster.patch_md(namespace, name, {"spec": {"model": {"storageUri": V1}}})
    wait_phase(cluster, namespace, name, "Healthy")
    wait_until(lambda: served(cluster, namespace, name) == {"stable": V1}, "canary removed")


def test_timed_pauses_end_by_themselves_and_a_restart_resumes_the_step(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name = "timed"
    steps = [
        {"setWeight": 25},
        {"pause": {"duration": "4s"}},
        {"setWeight": 50},
        {"pause": {"duration": "1h"}},
        {"setWeight": 75},
        {"pause": {"duration": "3s"}},
    ]
    spec = iris_spec(replicas=4, rollout={"steps": steps, "analysis": {"enabled": False}})
    cluster.create_md(namespace, md_manifest(name, spec))
    wait_md_ready(cluster, namespace, name)
    cluster.patch_md(namespace, name, {"spec": {"model": {"storageUri": V2}}})
    # Through the 4 s pause without anyone's help, to the hour-long one.
    before = wait_phase(cluster, namespace, name, "Progressing", step=3)
    assert before["weight"] == 50

    operator.kill()
    try:
        operator.start()
        # Resumed where it was: same step, same start of the pause (from status, not memory).
        wait_until(
            lambda: (
                rollout_of(cluster, namespace, name).get("stepStartedAt") == before["stepStartedAt"]
            ),
            "the same step after the restart",
        )
    finally:
        if not operator.running():
            operator.start()
    after = rollout_of(cluster, namespace, name)
    assert (after["step"], after["weight"], after["phase"]) == (3, 50, "Progressing")
    assert events(cluster, namespace, name).count("RolloutStarted") == 1

    # Skip the hour: promote via the annotation as plain kubectl users would.
    cluster.kubectl("annotate", "md", name, "-n", namespace, "modeldeploy.io/promote=now")
    wait_phase(cluster, namespace, name, "Healthy")
    wait_until(lambda: served(cluster, namespace, name) == {"stable": V2}, "canary removed")


def test_rollout_and_a_fixed_canary_cannot_be_combined(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    spec = iris_spec(
        rollout={},
        canary={"storageUri": V2, "trafficPercent": 10},
    )
    with pytest.raises(ApiException) as info:
        cluster.create_md(namespace, md_manifest("both", spec))
    assert "spec.rollout and spec.canary can't be combined" in str(info.value.body)
    bad_step = iris_spec(rollout={"steps": [{"setWeight": 10, "pause": {}}]})
    with pytest.raises(ApiException) as info:
        cluster.create_md(namespace, md_manifest("bad-step", bad_step))
    assert "exactly one of setWeight or pause" in str(info.value.body)
