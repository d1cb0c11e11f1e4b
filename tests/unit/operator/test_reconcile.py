"""The one reconcile path against an in-memory cluster: create, no-op, hand edits, scale, canary
removal, conflicts and API errors. Also the plan's drift detection on its own."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FakeCluster, md_body
from modeldeploy_operator import builders, plan
from modeldeploy_operator.errors import ApiError, ObjectGoneError
from modeldeploy_operator.reconcile import InvalidSpecError, children_to_read, reconcile
from modeldeploy_operator.settings import OperatorSettings

CANARY = {"storageUri": "s3://models/iris/v2/model.joblib", "trafficPercent": 34}


def run(cluster: FakeCluster, body: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    out = reconcile(cluster, body, settings, now="2026-11-23T11:00:00Z")
    body["status"] = out.status  # what the API server holds after our status patch
    return body


def test_first_run_creates_every_child_then_an_unchanged_object_costs_zero_writes(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = md_body(replicas=3, canary=CANARY, autoscaling={"minReplicas": 3, "maxReplicas": 5})
    run(cluster, body, settings)
    assert sorted(c for c in cluster.writes() if c.startswith("apply")) == [
        "apply Deployment/iris-canary",
        "apply Deployment/iris-stable",
        "apply HorizontalPodAutoscaler/iris",
        "apply PodDisruptionBudget/iris-canary",
        "apply PodDisruptionBudget/iris-stable",
        "apply Service/iris",
        "apply Service/iris-canary",
        "apply Service/iris-stable",
    ]
    # one Event for every child the run created, not one API call per child
    (created,) = [e for e in cluster.events if e[1] == "Created"]
    assert created[0] == "Normal"
    assert created[2].startswith("Created Deployment iris-stable: created; Service iris: created")
    assert created[2].count(": created") == 8
    cluster.roll_out()
    run(cluster, body, settings)  # status catches up with the rollout
    assert body["status"]["conditions"][0]["status"] == "True"
    cluster.calls.clear()
    cluster.events.clear()
    run(cluster, body, settings)
    assert cluster.writes() == []
    assert cluster.events == []


def test_scale_resplits_the_tracks(cluster: FakeCluster, settings: OperatorSettings) -> None:
    body = md_body(replicas=3, canary=CANARY)
    run(cluster, body, settings)
    body["spec"]["replicas"] = 10
    body["metadata"]["generation"] = 2
    run(cluster, body, settings)
    reps = {
        n: o["spec"]["replicas"] for (k, _, n), o in cluster.objects.items() if k == "Deployment"
    }
    assert reps == {"iris-stable": 7, "iris-canary": 3}
    assert body["status"]["replicas"] == 10


def test_hand_edits_are_restored(cluster: FakeCluster, settings: OperatorSettings) -> None:
    body = md_body(replicas=3)
    run(cluster, body, settings)
    dep = cluster.objects[("Deployment", "default", "iris-stable")]
    dep["spec"]["replicas"] = 7  # kubectl scale deployment
    del dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    svc = cluster.objects[("Service", "default", "iris")]
    del svc["metadata"]["labels"]["app.kubernetes.io/instance"]
    cluster.calls.clear()
    run(cluster, body, settings)
    assert sorted(c for c in cluster.writes() if c.startswith("apply")) == [
        "apply Deployment/iris-stable",
        "apply Service/iris",
    ]
    restored = cluster.objects[("Deployment", "default", "iris-stable")]
    assert restored["spec"]["replicas"] == 3
    assert "readinessProbe" in restored["spec"]["template"]["spec"]["containers"][0]
    assert any("restored spec.replicas" in e[2] for e in cluster.events)


def test_deleted_child_is_recreated(cluster: FakeCluster, settings: OperatorSettings) -> None:
    body = md_body()
    run(cluster, body, settings)
    del cluster.objects[("Service", "default", "iris-stable")]
    cluster.calls.clear()
    run(cluster, body, settings)
    assert [c for c in cluster.writes() if c.startswith("apply")] == ["apply Service/iris-stable"]


def test_removing_canary_and_autoscaling_deletes_their_children(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = md_body(replicas=4, canary=CANARY, autoscaling={"maxReplicas": 6})
    run(cluster, body, settings)
    assert "canary" in body["status"]
    del body["spec"]["canary"]
    del body["spec"]["autoscaling"]
    body["metadata"]["generation"] = 2
    cluster.calls.clear()
    run(cluster, body, settings)
    assert sorted(c for c in cluster.writes() if c.startswith("delete")) == [
        "delete Deployment/iris-canary",
        "delete HorizontalPodAutoscaler/iris",
        "delete PodDisruptionBudget/iris-canary",
        "delete Service/iris-canary",
    ]
    assert cluster.objects[("Deployment", "default", "iris-stable")]["spec"]["replicas"] == 4
    assert cluster.status_patches[-1]["canary"] is None


def test_a_foreign_child_is_never_taken_over(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    cluster.objects[("Service", "default", "iris")] = {
        "kind": "Service",
        "metadata": {"name": "iris", "namespace": "default", "uid": "x"},
    }
    body = run(cluster, md_body(), settings)
    assert "apply Service/iris" not in cluster.writes()
    degraded = body["status"]["conditions"][2]
    assert (degraded["status"], degraded["reason"]) == ("True", "ChildConflict")
    assert "Service iris already exists" in degraded["message"]


@pytest.mark.parametrize(
    "error",
    [
        ApiError(
            422,
            "Invalid",
            'Deployment.apps "iris-stable" is invalid: spec.template...: Invalid value',
        ),
        # A 403 that is not a namespace being deleted is a rejection like any other.
        ApiError(
            403, "Forbidden", 'deployments.apps "iris-stable" is forbidden: exceeded quota: compute'
        ),
    ],
    ids=["invalid", "forbidden-by-quota"],
)
def test_a_rejected_apply_is_degraded_not_retried_forever(
    cluster: FakeCluster, settings: OperatorSettings, error: ApiError
) -> None:
    cluster.fail[("apply", "iris-stable")] = error
    out = reconcile(cluster, md_body(), settings)
    assert out.retry is None
    degraded = out.status["conditions"][2]
    assert degraded["reason"] == "ApplyFailed"
    assert "apply Deployment iris-stable was rejected" in degraded["message"]
    assert error.message in degraded["message"]
    assert ("Warning", "ApplyFailed", degraded["message"]) in cluster.events


def test_a_conflict_is_returned_for_retry(cluster: FakeCluster, settings: OperatorSettings) -> None:
    cluster.fail[("apply", "iris")] = ApiError(409, "Conflict", "the object has been modified")
    out = reconcile(cluster, md_body(), settings)
    assert out.retry is not None
    assert out.retry.status == 409
    assert "apply Deployment/iris-stable" in cluster.writes()  # the others still went through


def test_an_unparsable_spec_is_reported_and_raised(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = md_body(replicas=-1)
    with pytest.raises(InvalidSpecError, match=r"spec\.replicas"):
        reconcile(cluster, body, settings)
    assert cluster.status_patches[-1]["conditions"][0]["reason"] == "InvalidSpec"
    assert not [c for c in cluster.writes() if c.startswith("apply")]


# -- plan on its own
def _live(manifest: dict[str, Any], uid: str) -> dict[str, Any]:
    live = plan.with_hash(manifest)
    live["metadata"]["ownerReferences"] = [{"controller": True, "uid": uid}]
    return live


def test_server_side_defaults_and_canonical_quantities_are_not_drift() -> None:
    desired = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "env": [{"name": "MODEL_SHA256", "value": ""}],
                            "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}},
                        }
                    ]
                }
            }
        },
    }
    live = _live(desired, "u")
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "MODEL_SHA256"}]  # omitempty dropped the empty value
    container["resources"]["requests"] = {"cpu": "1", "memory": "1Gi"}
    container["imagePullPolicy"] = "IfNotPresent"  # defaulted by the API server
    assert plan.plan([desired], {("Deployment", "d"): live}, "u").actions == []


def test_drift_and_spec_changes_are_detected() -> None:
    desired = {"kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"a": "b"}}}
    live = _live(desired, "u")
    live["spec"]["selector"] = {"a": "c"}
    (action,) = plan.plan([desired], {("Service", "s"): live}, "u").actions
    assert (action.verb, action.reason) == ("apply", "restored spec.selector.a")
    changed = {**desired, "spec": {"selector": {"a": "z"}}}
    (action,) = plan.plan([changed], {("Service", "s"): _live(desired, "u")}, "u").actions
    assert action.reason == "spec changed"


def test_quantities_are_compared_by_value_only_under_resources() -> None:
    assert plan.differences({"resources": {"cpu": "500m"}}, {"resources": {"cpu": "0.5"}}) == []
    assert plan.differences({"env": "1000m"}, {"env": "1"}) == [".env"]
    assert plan.quantity_value("2Ki") == 2048
    assert plan.quantity_value("banana") is None


def test_hash_ignores_key_order() -> None:
    a = {"kind": "K", "metadata": {"name": "n"}, "spec": {"x": 1, "y": 2}}
    b = {"spec": {"y": 2, "x": 1}, "metadata": {"name": "n"}, "kind": "K"}
    assert plan.manifest_hash(a) == plan.manifest_hash(b)
    assert plan.manifest_hash(a) != plan.manifest_hash({**a, "spec": {"x": 2, "y": 2}})


def test_a_namespace_being_deleted_ends_the_reconcile_quietly(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    cluster.fail[("apply", "iris-stable")] = ApiError(
        403,
        "Forbidden",
        'deployments.apps "iris-stable" is forbidden: unable to create new content in namespace '
        "default because it is being terminated",
    )
    with pytest.raises(ObjectGoneError, match="namespace default is being deleted"):
        reconcile(cluster, md_body(), settings)
    assert cluster.status_patches == []  # no Degraded for a namespace on its way out
    assert cluster.events == []


def test_a_model_deployment_deleted_mid_reconcile_is_gone_not_failed(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    cluster.fail[("patch_status", "iris")] = ApiError(
        404, "NotFound", 'modeldeployments.modeldeploy.io "iris" not found'
    )
    with pytest.raises(ObjectGoneError, match="default/iris was deleted"):
        reconcile(cluster, md_body(), settings)


def _reads(cluster: FakeCluster) -> list[str]:
    return sorted(c.removeprefix("get ") for c in cluster.calls if c.startswith("get "))


def test_status_records_the_children_and_later_runs_read_only_those_and_the_wanted(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = md_body(replicas=4, canary=CANARY)
    run(cluster, body, settings)  # thorough: reads every possible child
    assert len(_reads(cluster)) == len(builders.possible_children("iris", "default"))
    assert body["status"]["children"] == [
        "Deployment/iris-stable",
        "Service/iris",
        "Service/iris-stable",
        "PodDisruptionBudget/iris-stable",
        "Deployment/iris-canary",
        "Service/iris-canary",
        "PodDisruptionBudget/iris-canary",
    ]
    cluster.calls.clear()
    reconcile(cluster, body, settings, now="2026-11-23T11:00:00Z", thorough=False)
    assert _reads(cluster) == sorted(body["status"]["children"])  # no HPA, route, SA, binding

    # the canary leaves the spec: it was recorded, so an event-driven run still finds and
    # deletes its children
    del body["spec"]["canary"]
    body["metadata"]["generation"] = 2
    cluster.calls.clear()
    out = reconcile(cluster, body, settings, now="2026-11-23T11:00:00Z", thorough=False)
    body["status"] = out.status
    assert sorted(c for c in cluster.writes() if c.startswith("delete")) == [
        "delete Deployment/iris-canary",
        "delete PodDisruptionBudget/iris-canary",
        "delete Service/iris-canary",
    ]
    assert "Deployment/iris-canary" not in body["status"]["children"]


def test_a_new_objects_event_driven_run_reads_only_the_children_it_wants(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    """No status yet: nothing was created, so the seven children this spec does not want
    (canary, HPA, route, ServiceAccount, binding) are not asked for, 500 times over."""
    body = md_body(replicas=1)
    out = reconcile(cluster, body, settings, now="2026-11-23T11:00:00Z", thorough=False)
    wanted = ["Deployment/iris-stable", "PodDisruptionBudget/iris-stable", "Service/iris"]
    assert _reads(cluster) == sorted([*wanted, "Service/iris-stable"])
    assert sorted(out.status["children"]) == sorted([*wanted, "Service/iris-stable"])


def test_a_child_status_does_not_record_is_found_by_a_thorough_run(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = md_body(autoscaling={"maxReplicas": 4})
    run(cluster, body, settings)
    # a run that created the HPA died before its status write, then autoscaling left the spec
    body["status"]["children"].remove("HorizontalPodAutoscaler/iris")
    del body["spec"]["autoscaling"]
    cluster.calls.clear()
    reconcile(cluster, body, settings, now="2026-11-23T11:00:00Z", thorough=False)
    assert "delete HorizontalPodAutoscaler/iris" not in cluster.writes()
    out = reconcile(cluster, body, settings, now="2026-11-23T11:00:00Z", thorough=True)
    assert "delete HorizontalPodAutoscaler/iris" in cluster.writes()
    assert "HorizontalPodAutoscaler/iris" not in out.status["children"]


def test_without_a_record_every_child_is_read() -> None:
    possible = [("Deployment", "a"), ("HTTPRoute", "a"), ("HorizontalPodAutoscaler", "a")]
    wanted = {("Deployment", "a")}
    written = {"observedGeneration": 1}  # a status without the record (an older CRD)
    assert children_to_read(possible, wanted, written, thorough=False) == possible
    assert children_to_read(possible, wanted, {**written, "children": None}, False) == possible
    # no reconcile has written status yet: it created nothing this run would not want
    assert children_to_read(possible, wanted, {}, thorough=False) == possible[:1]
    assert children_to_read(possible, wanted, {}, thorough=True) == possible
    recorded = {"children": ["HTTPRoute/a"]}
    assert children_to_read(possible, wanted, recorded, thorough=False) == possible[:2]
    assert children_to_read(possible, wanted, recorded, thorough=True) == possible
