"""The whole product on a cluster with real nodes: real pods pull a real model and answer.

Integration tests prove the objects; only these prove that a ModelDeployment serves correct
predictions through its Service, splits traffic, rolls out without dropping a request, reports a
broken model honestly and scales. Traffic always comes from a pod inside the cluster (see
loadgen.py), so it goes through kube-proxy like a real client's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .conftest import OPERATOR_NS, REPO, Kubectl, start_load, wait_load_running

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
V1_BODY = {"instances": [SETOSA, VIRGINICA]}
V2_BODY = {
    "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": SETOSA + VIRGINICA}]
}


def example(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "examples" / name).read_text()) if d]


def model_deployment(name: str) -> dict[str, Any]:
    docs = [d for d in example(name) if d["kind"] == "ModelDeployment"]
    assert len(docs) == 1, f"examples/{name} should hold one ModelDeployment"
    # The examples name `default`; each test applies them in its own namespace instead.
    docs[0]["metadata"].pop("namespace", None)
    return docs[0]


def md_status(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl.json("get", "md", "-n", ns, name).get("status", {})
    return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def patch_md(kubectl: Kubectl, ns: str, name: str, patch: Any, kind: str = "merge") -> int:
    """Patches md/<name> (merge or json patch) and returns the generation it produced."""
    kubectl.run("patch", "md", name, "-n", ns, f"--type={kind}", "-p", json.dumps(patch))
    generation: int = kubectl.json("get", "md", "-n", ns, name)["metadata"]["generation"]
    return generation


def wait_ready(kubectl: Kubectl, ns: str, name: str, timeout: int = 300) -> dict[str, Any]:
    kubectl.run(
        "wait",
        "-n",
        ns,
        f"md/{name}",
        "--for=condition=Ready",
        f"--timeout={timeout}s",
        timeout=timeout + 20,
    )
    return md_status(kubectl, ns, name)


def url(ns: str, name: str, path: str) -> str:
    return f"http://{name}.{ns}.svc.cluster.local{path}"


def test_iris_serves_correct_v1_and_v2_predictions(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    kubectl.apply(model_deployment("iris.yaml"), namespace)
    status = wait_ready(kubectl, namespace, "iris")
    assert status["url"] == f"http://iris.{namespace}.svc.cluster.local"

    v1 = start_load(
        kubectl,
        namespace,
        url(namespace, "iris", "/v1/models/iris:predict"),
        V1_BODY,
        "--count",
        "20",
        "--concurrency",
        "2",
    )()
    assert v1.failed == 0, v1.errors
    assert {json.loads(a)["predictions"][0] for a in v1.answers} == {0}
    assert all(json.loads(a)["predictions"][1] == 2 for a in v1.answers)

    v2 = start_load(
        kubectl,
        namespace,
        url(namespace, "iris", "/v2/models/iris/infer"),
        V2_BODY,
        "--count",
        "20",
        "--concurrency",
        "2",
    )()
    assert v2.failed == 0, v2.errors
    for answer in v2.answers:
        body = json.loads(answer) if answer.endswith("}") else None
        if body is not None:
            assert body["model_name"] == "iris"
            assert body["outputs"][0]["name"] == "output-0"
            assert body["outputs"][0]["data"] == [0, 2]


def test_canary_share_matches_status_and_removal_returns_traffic_to_stable(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    md = model_deployment("iris-canary.yaml")
    md["spec"]["replicas"] = 3
    md["spec"]["canary"]["trafficPercent"] = 30
    kubectl.apply(md, namespace)
    name = md["metadata"]["name"]
    status = wait_ready(kubectl, namespace, name)
    kubectl.wait_for(
        "both tracks ready",
        lambda: (
            (s := md_status(kubectl, namespace, name)).get("canary", {}).get("readyReplicas")
            and s["readyReplicas"] == 3
            and s
        ),
    )
    status = md_status(kubectl, namespace, name)
    effective = status["canary"]["trafficPercent"]
    assert 0 < effective < 100

    result = start_load(
        kubectl,
        namespace,
        url(namespace, name, f"/v1/models/{name}:predict"),
        V1_BODY,
        "--count",
        "1000",
        "--concurrency",
        "8",
    )()
    assert result.failed == 0, result.errors
    share = 100 * result.tracks.get("canary", 0) / result.ok
    assert abs(share - effective) <= 10, (share, effective, result.tracks)

    patch_md(kubectl, namespace, name, [{"op": "remove", "path": "/spec/canary"}], kind="json")
    kubectl.wait_for(
        "canary Deployment gone",
        lambda: (
            kubectl.run("get", "deploy", f"{name}-canary", "-n", namespace, check=False).returncode
            != 0
        ),
    )
    kubectl.wait_for(
        "no canary pods left",
        lambda: (
            not kubectl.json("get", "pods", "-n", namespace, "-l", "modeldeploy.io/track=canary")[
                "items"
            ]
        ),
    )
    after = start_load(
        kubectl,
        namespace,
        url(namespace, name, f"/v1/models/{name}:predict"),
        V1_BODY,
        "--count",
        "200",
        "--concurrency",
        "4",
    )()
    assert after.failed == 0, after.errors
    assert set(after.tracks) == {"stable"}, after.tracks


def test_model_rollout_and_pod_deletion_under_load_drop_no_request(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    md = model_deployment("iris.yaml")
    md["spec"]["replicas"] = 2
    kubectl.apply(md, namespace)
    wait_ready(kubectl, namespace, "iris")
    v2 = model_deployment("iris-canary.yaml")["spec"]["canary"]

    wait = start_load(
        kubectl,
        namespace,
        url(namespace, "iris", "/v1/models/iris:predict"),
        V1_BODY,
        "--rate",
        "50",
        "--duration",
        "90",
        "--concurrency",
        "8",
    )
    wait_load_running(kubectl, namespace)
    patch = {"spec": {"model": {"storageUri": v2["storageUri"]}}}
    if "sha256" in v2:
        patch["spec"]["model"]["sha256"] = v2["sha256"]
    patch_md(kubectl, namespace, "iris", patch)
    kubectl.wait_for(
        "the new model rolled out",
        lambda: (
            (s := md_status(kubectl, namespace, "iris")).get("stable", {}).get("storageUri")
            == v2["storageUri"]
            and condition(s, "Ready").get("status") == "True"
            and s.get("observedGeneration")
            == kubectl.json("get", "md", "-n", namespace, "iris")["metadata"]["generation"]
        ),
        timeout=240,
    )
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=iris")[
        "items"
    ]
    kubectl.run("delete", "pod", "-n", namespace, pods[0]["metadata"]["name"], "--wait=false")
    result = wait()
    assert result.sent == 50 * 90
    assert result.failed == 0, result.errors
    assert result.ok == result.sent


def test_broken_model_is_degraded_with_reason_and_old_pods_keep_serving(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    md = model_deployment("iris.yaml")
    kubectl.apply(md, namespace)
    wait_ready(kubectl, namespace, "iris")
    good_uri = md["spec"]["model"]["storageUri"]
    cases = [
        ({"storageUri": f"{model_store}/no-such-model.joblib"}, ["404", "not found"]),
        ({"storageUri": good_uri, "sha256": "0" * 64}, ["sha256"]),
    ]
    for model_patch, words in cases:
        generation = patch_md(kubectl, namespace, "iris", {"spec": {"model": model_patch}})
        # The previous case's Degraded stays until the operator has looked at this generation,
        # and until this generation's pod has failed: wait for this case's own reason.
        degraded = kubectl.wait_for(
            f"Degraded at generation {generation} naming one of {words} after {model_patch}",
            lambda gen=generation, words=words: (
                (c := condition(md_status(kubectl, namespace, "iris"), "Degraded")).get("status")
                == "True"
                and c.get("observedGeneration") == gen
                and any(w in c.get("message", "").lower() for w in words)
                and c
            ),
            timeout=240,
        )
        assert degraded["reason"] == "ModelLoadFailed", degraded
        described = kubectl.run("describe", "md", "-n", namespace, "iris").stdout.lower()
        assert any(w in described for w in words), described
        result = start_load(
            kubectl,
            namespace,
            url(namespace, "iris", "/v1/models/iris:predict"),
            V1_BODY,
            "--count",
            "50",
            "--concurrency",
            "4",
        )()
        assert result.failed == 0, result.errors
    patch_md(
        kubectl,
        namespace,
        "iris",
        [{"op": "replace", "path": "/spec/model", "value": md["spec"]["model"]}],
        kind="json",
    )
    wait_ready(kubectl, namespace, "iris")


def test_operator_restart_mid_rollout_still_completes(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    md = model_deployment("iris.yaml")
    kubectl.apply(md, namespace)
    wait_ready(kubectl, namespace, "iris")
    v2 = model_deployment("iris-canary.yaml")["spec"]["canary"]
    generation = patch_md(
        kubectl,
        namespace,
        "iris",
        {
            "spec": {
                "replicas": 2,
                "model": {"storageUri": v2["storageUri"], "sha256": v2.get("sha256")},
            }
        },
    )
    kubectl.run(
        "delete",
        "pod",
        "-n",
        OPERATOR_NS,
        "-l",
        "app.kubernetes.io/name=modeldeploy-operator",
        "--wait=false",
    )
    kubectl.wait_for(
        "rollout finished after the operator restarted",
        lambda: (
            (s := md_status(kubectl, namespace, "iris")).get("observedGeneration") == generation
            and condition(s, "Ready").get("status") == "True"
            and s.get("readyReplicas") == 2
            and s.get("stable", {}).get("storageUri") == v2["storageUri"]
        ),
        timeout=300,
    )


def test_autoscaling_adds_replicas_under_cpu_load_and_scales_back(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    md = model_deployment("iris-autoscale.yaml")
    md["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCPUUtilizationPercentage": 20,
    }
    md["spec"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    name = md["metadata"]["name"]
    kubectl.apply(md, namespace)
    wait_ready(kubectl, namespace, name)
    rows = [SETOSA] * 100
    wait = start_load(
        kubectl,
        namespace,
        url(namespace, name, f"/v1/models/{name}:predict"),
        {"instances": rows},
        "--rate",
        "40",
        "--duration",
        "150",
        "--concurrency",
        "8",
    )
    kubectl.wait_for(
        "the HPA to add replicas",
        lambda: (kubectl.json("get", "md", "-n", namespace, name)["spec"].get("replicas") or 0) > 1,
        timeout=240,
        interval=5,
    )
    result = wait()
    assert result.ok > 0
    kubectl.wait_for(
        "the HPA to scale back down after the load",
        lambda: kubectl.json("get", "md", "-n", namespace, name)["spec"].get("replicas") == 1,
        timeout=420,
        interval=10,
    )


def test_examples_exist() -> None:
    for name in ("iris.yaml", "iris-canary.yaml", "iris-autoscale.yaml", "model-store.yaml"):
        assert (Path(REPO) / "examples" / name).exists(), name
