"""Fixtures for the end-to-end suite: a cluster with real nodes, given by a kubeconfig.

The suite runs only when `MODELDEPLOY_E2E_KUBECONFIG` names a cluster that has the locally built
images (hack/local-cluster.sh up --real-node and hack/e2e-kind.sh set it up); anywhere else every
test is skipped with that reason, so a developer's stray KUBECONFIG is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER_IMAGE = os.environ.get("MODELDEPLOY_SERVER_IMAGE", "modeldeploy-server:0.1.0")
OPERATOR_NS = "modeldeploy-system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Kubectl:
    """kubectl against the e2e cluster; every call is real and its failure shows stderr."""

    kubeconfig: str
    binary: str

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, "--kubeconfig", self.kubeconfig, *args]
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str | dict[str, Any], namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        ns = ["-n", namespace] if namespace else []
        self.run("apply", *ns, "-f", "-", stdin=text)

    def wait_for(
        self, what: str, check: Callable[[], Any], timeout: float = 180, interval: float = 2
    ) -> Any:
        """Polls `check` until it returns something truthy; fails naming `what` and the last."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except AssertionError as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def _kubectl_binary() -> str:
    cached = Path.home() / ".cache/modeldeploy/k8s-v1.34.4/bin/kubectl"
    if cached.exists():
        return str(cached)
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("no kubectl: run hack/build-k8s.sh core")
    return found


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    kubeconfig = os.environ.get("MODELDEPLOY_E2E_KUBECONFIG")
    if not kubeconfig:
        pytest.skip(
            "e2e needs a cluster with real nodes and the local images: "
            "set MODELDEPLOY_E2E_KUBECONFIG "
            "(hack/local-cluster.sh up --real-node, hack/e2e-kind.sh)"
        )
    k = Kubectl(kubeconfig, _kubectl_binary())
    nodes = k.json("get", "nodes")["items"]
    real = [n for n in nodes if n["metadata"].get("labels", {}).get("type") != "kwok"]
    if not real:
        pytest.skip("the e2e cluster has no real node (only kwok nodes)")
    return k


@pytest.fixture(scope="session")
def host_address(kubectl: Kubectl) -> str:
    """An address of this machine that the cluster's pods reach, for services the tests run
    outside the cluster (as a team's MLflow and S3 usually are): MODELDEPLOY_E2E_HOST_ADDRESS,
    else the real node's InternalIP when the node is this machine (hack/real-node.sh)."""
    given = os.environ.get("MODELDEPLOY_E2E_HOST_ADDRESS")
    if given:
        return given
    nodes = kubectl.json("get", "nodes")["items"]
    for node in nodes:
        if node["metadata"].get("labels", {}).get("type") == "kwok":
            continue
        for address in node.get("status", {}).get("addresses", []):
            if address["type"] != "InternalIP":
                continue
            with socket.socket() as s:
                try:
                    s.bind((address["address"], 0))
                except OSError:
                    continue
            return str(address["address"])
    pytest.skip(
        "no real node of this cluster runs on this machine (kind?): set "
        "MODELDEPLOY_E2E_HOST_ADDRESS to an address of this machine that pods can reach"
    )


@pytest.fixture(scope="session")
def operator(kubectl: Kubectl) -> None:
    """Installs the operator in-cluster from deploy/ with the locally built image."""
    kubectl.run("apply", "-k", str(REPO / "deploy"))
    kubectl.run(
        "rollout",
        "status",
        "-n",
        OPERATOR_NS,
        "deployment/modeldeploy-operator",
        "--timeout=180s",
        timeout=200,
    )


@pytest.fixture(scope="session")
def model_store(kubectl: Kubectl, operator: None) -> str:
    """The examples' in-cluster HTTP model store, in `default` as the examples expect."""
    kubectl.run("apply", "-f", str(REPO / "examples/model-store.yaml"))
    kubectl.run("rollout", "status", "deployment/model-store", "--timeout=180s", timeout=200)
    return "http://model-store.default.svc.cluster.local"


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def wait_load_running(kubectl: Kubectl, namespace: str) -> None:
    """Until a load generator pod of the namespace runs (its traffic has begun)."""
    kubectl.wait_for(
        "the load generator running",
        lambda: any(
            p["status"].get("phase") == "Running"
            for p in kubectl.json("get", "pods", "-n", namespace)["items"]
            if p["metadata"]["name"].startswith("loadgen-")
        ),
    )


@dataclass
class LoadResult:
    sent: int
    ok: int
    failed: int
    errors: dict[str, int]
    tracks: dict[str, int]
    answers: dict[str, int]
    failed_at: list[str]  # UTC times of the first transport failures


def start_load(
    kubectl: Kubectl, namespace: str, url: str, body: dict[str, Any] | list[Any], *extra: str
) -> Callable[[], LoadResult]:
    """Starts tests/e2e/loadgen.py in a pod of the server image; returns a function that waits
    for it to finish and gives its result."""
    name = f"loadgen-{uuid.uuid4().hex[:6]}"
    script = (Path(__file__).parent / "loadgen.py").read_text()
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"loadgen.py": script},
        }
    )
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "loadgen",
                        "image": SERVER_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            "python3",
                            "/loadgen/loadgen.py",
                            url,
                            json.dumps(body),
                            *extra,
                        ],
                        "volumeMounts": [{"name": "script", "mountPath": "/loadgen"}],
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                    }
                ],
                "volumes": [{"name": "script", "configMap": {"name": name}}],
            },
        }
    )

    def wait(timeout: float = 600) -> LoadResult:
        def finished() -> str | None:
            phase = kubectl.json("get", "pod", "-n", namespace, name)["status"].get("phase")
            return phase if phase in ("Succeeded", "Failed") else None

        kubectl.wait_for(f"load generator {name}", finished, timeout=timeout)
        logs = kubectl.run("logs", "-n", namespace, name).stdout
        line = next((x for x in logs.splitlines() if x.startswith("LOADGEN ")), None)
        assert line, f"load generator printed no result:\n{logs}"
        data = json.loads(line.removeprefix("LOADGEN "))
        return LoadResult(**{k: data[k] for k in LoadResult.__dataclass_fields__})

    return wait
