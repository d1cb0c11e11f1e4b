"""Status computed from recorded child objects (fixtures/): honest Ready, actionable Degraded,
effective canary traffic, and transition times that move only when a condition flips."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import load_fixture, make_md
from modeldeploy_operator.status import Observed, compute_status, status_patch

NOW = "2026-11-23T11:00:00Z"
CANARY = {"storageUri": "s3://models/iris/v2/model.joblib", "trafficPercent": 25}


def cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == ctype)
    return found


def test_rolled_out_stable_and_canary_is_ready_with_effective_percent() -> None:
    md = make_md(replicas=4, canary=CANARY, generation=2)
    obs = Observed(
        deployments={
            "stable": load_fixture("deployment-stable-available.json"),
            "canary": load_fixture("deployment-canary-available.json"),
        },
        pods=[load_fixture("pod-stable-ready.json")],
    )
    st = compute_status(md, obs, {}, NOW)
    assert st["observedGeneration"] == 2
    assert st["url"] == "http://iris.default.svc.cluster.local"
    assert st["replicas"] == 4
    assert st["readyReplicas"] == 4
    assert st["replicaCounts"] == "4/4"
    assert st["selector"] == "app.kubernetes.io/instance=iris,app.kubernetes.io/name=iris"
    assert st["stable"] == {
        "storageUri": "s3://models/iris/v1/model.joblib",
        "replicas": 3,
        "readyReplicas": 3,
        "trafficPercent": 75.0,
    }
    assert st["canary"] == {
        "storageUri": CANARY["storageUri"],
        "replicas": 1,
        "readyReplicas": 1,
        "trafficPercent": 25.0,
    }
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Serving", 2)
    assert ready["lastTransitionTime"] == NOW
    assert cond(st, "Progressing")["status"] == "False"
    assert cond(st, "Degraded")["status"] == "False"


def test_deployment_not_yet_observed_is_not_ready() -> None:
    md = make_md(replicas=3, generation=5)
    obs = Observed(deployments={"stable": load_fixture("deployment-stable-unobserved.json")})
    st = compute_status(md, obs, {}, NOW)
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RollingOut")
    assert "not observed its latest spec" in ready["message"]
    assert cond(st, "Progressing")["status"] == "True"


def test_rolling_update_reports_progress_and_is_not_ready() -> None:
    md = make_md(replicas=3)
    obs = Observed(deployments={"stable": load_fixture("deployment-stable-rolling.json")})
    st = compute_status(md, obs, {}, NOW)
    assert cond(st, "Ready")["status"] == "False"
    progressing = cond(st, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RollingOut")
    assert progressing["message"] == "1 of 3 stable pods run the current version"


def test_missing_deployment_is_not_ready() -> None:
    st = compute_status(make_md(), Observed(deployments={"stable": None}), {}, NOW)
    assert cond(st, "Ready")["status"] == "False"
    assert st["replicas"] == 0
    assert st["replicaCounts"] == "0/0"


def test_the_servers_termination_message_becomes_the_degraded_message() -> None:
    md = make_md(replicas=3)
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-rolling.json")},
        pods=[
            load_fixture("pod-stable-ready.json"),
            load_fixture("pod-stable-model-load-failed.json"),
        ],
    )
    st = compute_status(md, obs, {}, NOW)
    degraded = cond(st, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelLoadFailed")
    assert (
        "stable pod iris-stable-7d9f8c6b5-fghij exited with code 3 (4 restarts)"
        in degraded["message"]
    )
    assert "check spec.model.storageUri" in degraded["message"]
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelLoadFailed")


def test_a_crash_without_a_message_points_at_the_logs() -> None:
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-rolling.json")},
        pods=[load_fixture("pod-stable-crash-no-message.json")],
    )
    degraded = cond(compute_status(make_md(replicas=3), obs, {}, NOW), "Degraded")
    assert degraded["reason"] == "ServerCrashing"
    assert "OOMKilled" in degraded["message"]
    assert "kubectl logs --previous" in degraded["message"]


def test_image_pull_failure_names_the_image() -> None:
    md = make_md(replicas=4, canary=CANARY)
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-available.json"), "canary": None},
        pods=[load_fixture("pod-canary-image-pull-backoff.json")],
    )
    degraded = cond(compute_status(md, obs, {}, NOW), "Degraded")
    assert degraded["reason"] == "ImagePullFailed"
    assert (
        "canary pod iris-canary-5c4b3a2f1-pqrst cannot pull image modeldeploy-server:0.9.9"
        in (degraded["message"])
    )
    assert "spec.server.image" in degraded["message"]


def test_unschedulable_pod_carries_the_schedulers_reason() -> None:
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-rolling.json")},
        pods=[load_fixture("pod-stable-unschedulable.json")],
    )
    degraded = cond(compute_status(make_md(replicas=3), obs, {}, NOW), "Degraded")
    assert degraded["reason"] == "Unschedulable"
    assert "1 Insufficient cpu" in degraded["message"]


def test_progress_deadline_exceeded_stops_progressing() -> None:
    obs = Observed(deployments={"stable": load_fixture("deployment-stable-deadline.json")})
    st = compute_status(make_md(replicas=3), obs, {}, NOW)
    assert cond(st, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    progressing = cond(st, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert "timed out progressing" in progressing["message"]


def test_most_actionable_problem_wins_and_the_rest_are_counted() -> None:
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-deadline.json")},
        pods=[
            load_fixture("pod-stable-unschedulable.json"),
            load_fixture("pod-stable-model-load-failed.json"),
        ],
    )
    degraded = cond(compute_status(make_md(replicas=3), obs, {}, NOW), "Degraded")
    assert degraded["reason"] == "ModelLoadFailed"
    assert degraded["message"].endswith("(and 2 more problems)")


def test_terminating_pods_are_not_blamed() -> None:
    pod = load_fixture("pod-stable-model-load-failed.json")
    pod["metadata"]["deletionTimestamp"] = "2026-11-23T10:59:00Z"
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-available.json")}, pods=[pod]
    )
    assert cond(compute_status(make_md(replicas=3), obs, {}, NOW), "Degraded")["status"] == "False"


def test_pods_of_an_older_template_are_not_blamed() -> None:
    # The uri was fixed: the new template's pod has not failed yet, an old one still crash-loops.
    dep = load_fixture("deployment-stable-rolling.json")
    dep["spec"]["template"]["metadata"].setdefault("annotations", {})[
        "modeldeploy.io/template-hash"
    ] = "new"
    old = load_fixture("pod-stable-model-load-failed.json")
    old["metadata"].setdefault("annotations", {})["modeldeploy.io/template-hash"] = "old"
    obs = Observed(deployments={"stable": dep}, pods=[old])
    st = compute_status(make_md(replicas=3), obs, {}, NOW)
    assert cond(st, "Degraded")["status"] == "False"
    assert cond(st, "Progressing")["status"] == "True"

    current = load_fixture("pod-stable-model-load-failed.json")
    current["metadata"].setdefault("annotations", {})["modeldeploy.io/template-hash"] = "new"
    obs = Observed(deployments={"stable": dep}, pods=[old, current])
    degraded = cond(compute_status(make_md(replicas=3), obs, {}, NOW), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelLoadFailed")


def test_write_errors_and_conflicts_block_readiness() -> None:
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-available.json")},
        conflicts=["Service iris already exists and is not controlled by this ModelDeployment"],
    )
    st = compute_status(make_md(replicas=3), obs, {}, NOW)
    assert cond(st, "Ready")["status"] == "False"
    assert cond(st, "Degraded")["reason"] == "ChildConflict"
    assert cond(st, "Progressing")["reason"] == "ChildConflict"


def test_scaled_to_zero_is_not_ready() -> None:
    dep = load_fixture("deployment-stable-available.json")
    dep["spec"]["replicas"] = 0
    dep["status"] = {"observedGeneration": 2}
    st = compute_status(make_md(replicas=0), Observed(deployments={"stable": dep}), {}, NOW)
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ScaledToZero")
    assert st["stable"]["trafficPercent"] == 0.0


def test_single_replica_with_canary_says_why_there_is_no_canary_pod() -> None:
    dep = load_fixture("deployment-stable-available.json")
    dep["spec"]["replicas"] = 1
    dep["status"].update(replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1)
    canary = load_fixture("deployment-canary-available.json")
    canary["spec"]["replicas"] = 0
    canary["status"] = {"observedGeneration": 1}
    md = make_md(replicas=1, canary={**CANARY, "trafficPercent": 10})
    st = compute_status(md, Observed(deployments={"stable": dep, "canary": canary}), {}, NOW)
    ready = cond(st, "Ready")
    assert ready["status"] == "True"
    assert "1 replica cannot run both tracks" in ready["message"]
    assert st["canary"]["trafficPercent"] == 0.0


def test_leftover_canary_keeps_progressing_until_deleted() -> None:
    obs = Observed(
        deployments={"stable": load_fixture("deployment-stable-available.json")},
        leftover_tracks=["canary"],
    )
    st = compute_status(make_md(replicas=3), obs, {}, NOW)
    assert cond(st, "Ready")["status"] == "False"
    assert (
        "canary track (Deployment iris-canary) is being removed"
        in cond(st, "Progressing")["message"]
    )
    assert "canary" not in st


def test_transition_time_moves_only_when_the_status_flips() -> None:
    md = make_md(replicas=3)
    ok = Observed(deployments={"stable": load_fixture("deployment-stable-available.json")})
    first = compute_status(md, ok, {}, "2026-11-23T10:00:00Z")
    again = compute_status(md, ok, first, NOW)
    assert cond(again, "Ready")["lastTransitionTime"] == "2026-11-23T10:00:00Z"
    assert status_patch(first, again) is None  # nothing changed: no write
    rolling = Observed(deployments={"stable": load_fixture("deployment-stable-rolling.json")})
    flipped = compute_status(md, rolling, again, NOW)
    assert cond(flipped, "Ready")["lastTransitionTime"] == NOW


@pytest.mark.parametrize(
    ("live", "desired", "patch"),
    [
        ({"url": "a"}, {"url": "a"}, None),
        ({"url": "a"}, {"url": "b"}, {"url": "b"}),
        ({"url": "a", "canary": {"replicas": 1}}, {"url": "a"}, {"canary": None}),
        ({}, {"replicas": 2}, {"replicas": 2}),
    ],
)
def test_status_patch_is_minimal(
    live: dict[str, Any], desired: dict[str, Any], patch: dict[str, Any] | None
) -> None:
    assert status_patch(live, desired) == patch
