"""An MLflow registry alias move reaches the real pods under load without one failed request.

The real tracking server (SQLite backend) and moto's S3 run on this machine, bound to the real
node's address, the way a team's MLflow and S3 usually sit outside the cluster; the operator's
pod and the model server pods reach them over the pod network. Two versions of a registered
model are logged with the real mlflow client (skops, MLflow's default), `champion` names version
1, and a ModelDeployment serves `models:/<name>@champion` with 2 replicas. Under 50 requests a
second through the Service, the alias moves to version 2 and `kubectl annotate
modeldeploy.io/refresh-model` asks the operator at once: refreshInterval is an hour, so nothing
else can have moved it. Every pod then serves version 2's run (each pod's own metadata says so),
status says version 2, and the load generator saw no failure.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow_harness import S3_ENV, MlflowServer

from .conftest import Kubectl, start_load, wait_load_running
from .test_e2e import condition, md_status, url, wait_ready

RATE = 50
LOAD_S = 120
ROWS = [{"instances": [row]} for row in ([0.3, -1.2, 0.8, 0.1], [-0.5, 0.9, -1.4, 2.0])]
# Run in a server pod: its own V2 model metadata, which names the MLflow run it loaded.
METADATA = (
    "import urllib.request;"
    "print(urllib.request.urlopen('http://127.0.0.1:8080/v2/models/iris', timeout=5)"
    ".read().decode())"
)


@pytest.fixture(scope="module")
def mlflow(host_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(Path(tmp_path_factory.mktemp("mlflow-e2e")), host=host_address)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def served_runs(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """pod name -> the run_id its server reports, for every ready pod of md/iris."""
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=iris")
    runs = {}
    for pod in filter(_pod_ready, pods["items"]):
        name = pod["metadata"]["name"]
        out = kubectl.run("exec", "-n", namespace, name, "--", "python3", "-c", METADATA).stdout
        runs[name] = json.loads(out)["parameters"]["run_id"]
    return runs


def test_an_alias_move_reaches_every_pod_without_a_failed_request(
    kubectl: Kubectl, operator: None, namespace: str, mlflow: MlflowServer
) -> None:
    model = f"iris-{uuid.uuid4().hex[:6]}"
    v1, v2 = mlflow.log_version(model, 1), mlflow.log_version(model, 2)
    mlflow.set_alias(model, "champion", v1)
    run1, run2 = mlflow.run_id(model, v1), mlflow.run_id(model, v2)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mlflow-s3"},
            "type": "Opaque",
            "stringData": {**S3_ENV, "AWS_ENDPOINT_URL": mlflow.s3_endpoint},
        },
        namespace,
    )
    reference = f"models:/{model}@champion"
    kubectl.apply(
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {
                "model": {
                    "storageUri": reference,
                    "mlflow": {"trackingUri": mlflow.tracking_uri, "refreshInterval": "1h"},
                },
                "credentials": {"secretName": "mlflow-s3"},
                "replicas": 2,
            },
        },
        namespace,
    )
    status = wait_ready(kubectl, namespace, "iris")
    assert status["registry"]["model"]["version"] == v1, status["registry"]
    assert status["stable"]["storageUri"] == mlflow.download_uri(model, v1)
    assert set(served_runs(kubectl, namespace).values()) == {run1}

    wait = start_load(
        kubectl,
        namespace,
        url(namespace, "iris", "/v1/models/iris:predict"),
        ROWS,
        "--rate",
        str(RATE),
        "--duration",
        str(LOAD_S),
        "--concurrency",
        "8",
    )
    wait_load_running(kubectl, namespace)
    mlflow.set_alias(model, "champion", v2)
    asked = str(int(time.time()))
    kubectl.run("annotate", "md", "iris", "-n", namespace, f"modeldeploy.io/refresh-model={asked}")

    def on_version_2() -> dict[str, Any] | None:
        s = md_status(kubectl, namespace, "iris")
        ready = condition(s, "Ready").get("status") == "True"
        moved = (s.get("registry") or {}).get("model", {}).get("version") == v2
        return s if ready and moved and s["readyReplicas"] == 2 else None

    status = kubectl.wait_for("version 2 rolled out to Ready", on_version_2, timeout=240)
    assert status["registry"]["refreshed"] == asked, status["registry"]
    assert status["stable"]["storageUri"] == mlflow.download_uri(model, v2)
    runs = kubectl.wait_for(
        "every ready pod to serve version 2's run",
        lambda: (r := served_runs(kubectl, namespace)) and set(r.values()) == {run2} and r,
        timeout=120,
    )
    assert len(runs) == 2, runs
    spec = kubectl.json("get", "md", "-n", namespace, "iris")["spec"]
    assert spec["model"]["storageUri"] == reference  # the operator never rewrites spec

    result = wait()
    assert result.sent == RATE * LOAD_S
    assert result.failed == 0, (result.errors, result.failed_at)
    assert result.ok == result.sent
