"""Progressive rollout on real pods under constant load: promoted, or aborted by the analysis.

Each test serves iris-v1 (examples/iris.yaml), starts 50 requests a second from a pod in the
cluster (one iris class per request, in turn, so both tracks see the same mix), and applies one
of the rollout examples. The operator scrapes the real pods' /metrics every 10 s:

* iris-v2 (a good DecisionTree) goes through every step and is promoted with zero failed
  requests;
* iris-v3-broken fails its virginica requests with a 500: aborted on errorRate within two
  intervals, and traffic is back on stable;
* iris-v3-constant answers every request fast and without error but always says setosa: aborted
  on predictionShift while errorRate passes.
"""

from __future__ import annotations

from typing import Any

from .conftest import Kubectl, start_load, wait_load_running
from .test_e2e import condition, md_status, model_deployment, url, wait_ready

SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [6.4, 3.2, 4.5, 1.5]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
MIXED = [{"instances": [row]} for row in (SETOSA, VERSICOLOR, VIRGINICA)]
RATE = 50
ABORT_LOAD_S = 90


def rollout(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    ro: dict[str, Any] = md_status(kubectl, ns, "iris").get("rollout") or {}
    return ro


def serve_v1_under_load(kubectl: Kubectl, ns: str, seconds: int) -> Any:
    md = model_deployment("iris.yaml")
    kubectl.apply(md, ns)
    wait_ready(kubectl, ns, "iris")
    wait = start_load(
        kubectl,
        ns,
        url(ns, "iris", "/v1/models/iris:predict"),
        MIXED,
        "--rate",
        str(RATE),
        "--duration",
        str(seconds),
        "--concurrency",
        "8",
    )
    wait_load_running(kubectl, ns)
    return wait


def check_of(ro: dict[str, Any], name: str) -> dict[str, Any]:
    return next((c for c in ro.get("analysis") or [] if c["name"] == name), {})


def test_a_good_model_goes_through_every_step_and_is_promoted_without_a_failed_request(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    wait = serve_v1_under_load(kubectl, namespace, 150)
    new = model_deployment("iris-rollout.yaml")
    kubectl.apply(new, namespace)
    seen_steps: set[int] = set()

    def promoted() -> bool:
        ro = rollout(kubectl, namespace)
        if ro.get("phase") in ("Progressing", "Paused"):
            seen_steps.add(int(ro.get("step", 0)))
        assert ro.get("phase") != "Aborted", ro
        return ro.get("phase") == "Healthy"

    kubectl.wait_for("the rollout promoted", promoted, timeout=300)
    status = md_status(kubectl, namespace, "iris")
    assert status["stable"]["storageUri"] == new["spec"]["model"]["storageUri"]
    assert "canary" not in status
    assert condition(status, "Promoted")["status"] == "True"
    ro = status["rollout"]
    # Promoted means no more than failureLimit (1) intervals failed; the last one judged passed.
    assert ro["failedIntervals"] <= 1, ro
    # The analysis judged real traffic on the way: every check it produced passed.
    assert {c["name"] for c in ro.get("analysis", [])} >= {"errorRate", "predictionShift"}, ro
    assert all(c["result"] == "Passed" for c in ro["analysis"]), ro["analysis"]
    assert len(seen_steps) >= 2, seen_steps  # it was seen at more than one step
    result = wait()
    assert result.failed == 0, (result.errors, result.failed_at)
    assert result.ok == result.sent == RATE * 150
    assert set(result.tracks) == {"stable", "canary"}  # both served during the rollout


def _aborted_on(kubectl: Kubectl, namespace: str, example: str, check: str) -> dict[str, Any]:
    wait = serve_v1_under_load(kubectl, namespace, ABORT_LOAD_S)
    kubectl.apply(model_deployment(example), namespace)

    aborted = kubectl.wait_for(
        "the rollout aborted",
        lambda: (ro := rollout(kubectl, namespace)).get("phase") == "Aborted" and ro,
        timeout=240,
    )
    # failureLimit 1 at a 10 s interval: the second failed interval aborts.
    assert aborted["failedIntervals"] == 2, aborted
    assert check_of(aborted, check)["result"] == "Failed", aborted
    status = md_status(kubectl, namespace, "iris")
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutAborted")
    assert check in degraded["message"] or "analysis failed" in degraded["message"]
    assert "canary" not in status
    assert status["stable"]["storageUri"].endswith("/iris-v1.joblib")
    # Stable grows back to spec.replicas (it ran one pod beside the canary): Ready again once
    # it has, while Degraded keeps saying why the rollout stopped.
    status = wait_ready(kubectl, namespace, "iris", timeout=120)
    assert condition(status, "Degraded")["reason"] == "RolloutAborted"
    # Traffic is back on stable: a fresh burst gets only stable answers, and none fails.
    result = wait()
    assert result.sent == RATE * ABORT_LOAD_S
    after = start_load(
        kubectl,
        namespace,
        url(namespace, "iris", "/v1/models/iris:predict"),
        MIXED,
        "--count",
        "150",
        "--concurrency",
        "4",
    )()
    assert after.failed == 0, after.errors
    assert set(after.tracks) == {"stable"}, after.tracks
    return {"aborted": aborted, "load": result}


def test_a_model_that_fails_part_of_its_requests_is_aborted_on_its_error_rate(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    seen = _aborted_on(kubectl, namespace, "iris-rollout-errors.yaml", "errorRate")
    error_rate = check_of(seen["aborted"], "errorRate")
    assert error_rate["value"] > 0.2, error_rate  # a third of the canary's requests
    # The failures the load saw were the canary's 500s, nothing else.
    load = seen["load"]
    assert all(k.startswith("http 500") for k in load.errors), (load.errors, load.failed_at)


def test_a_model_that_predicts_differently_is_aborted_on_prediction_shift(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    seen = _aborted_on(kubectl, namespace, "iris-rollout-shift.yaml", "predictionShift")
    checks = {c["name"]: c for c in seen["aborted"]["analysis"]}
    assert checks["errorRate"]["result"] == "Passed", checks
    assert checks["predictionShift"]["value"] > 0.3, checks
    assert seen["load"].failed == 0, (
        seen["load"].errors,
        seen["load"].failed_at,
    )  # it never failed a request
