"""Session fixtures for the operator's integration tests: a real control plane, the CRD and the
operator's RBAC applied, and the real operator running as its own ServiceAccount.

The cluster is `hack/local-cluster.sh up` with its own state dir `.local-cluster/integration/`
(MODELDEPLOY_TEST_CLUSTER_DIR) (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok), or the one whose admin kubeconfig is in MODELDEPLOY_TEST_KUBECONFIG.
A cluster this session started is stopped at the end unless MODELDEPLOY_KEEP_CLUSTER=1; one that
was already running is left running.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    CRD_NAME,
    OPERATOR_NS,
    OPERATOR_SA,
    REPO_ROOT,
    Cluster,
    OperatorProcess,
    wait_established,
    wait_until,
)

LOCAL_CLUSTER = REPO_ROOT / "hack" / "local-cluster.sh"
RBAC_KINDS = {
    "Namespace",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
}


def _run(*cmd: str, timeout: float = 3600, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode})\n--- stdout\n{proc.stdout}\n"
            f"--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc.stdout


def _bin_dir() -> Path:
    out = _run("bash", str(REPO_ROOT / "hack" / "build-k8s.sh"), "core")
    return Path(out.strip().splitlines()[-1])


def _state_dir() -> Path:
    """The tests' own cluster, apart from a developer's `.local-cluster` (which may have a real
    node and an in-cluster operator from hack/demo.sh that would fight the one under test)."""
    default = REPO_ROOT / ".local-cluster" / "integration"
    return Path(os.environ.get("MODELDEPLOY_TEST_CLUSTER_DIR", default))


def _cluster_env() -> dict[str, str]:
    return {**os.environ, "MODELDEPLOY_CLUSTER_DIR": str(_state_dir())}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubectl = _bin_dir() / "kubectl"
    given = os.environ.get("MODELDEPLOY_TEST_KUBECONFIG")
    if given:
        yield Cluster(kubeconfig=Path(given), kubectl_bin=kubectl, state_dir=None)
        return
    state_dir = _state_dir()
    env = _cluster_env()
    already_up = (
        subprocess.run(
            ["bash", str(LOCAL_CLUSTER), "status"], capture_output=True, check=False, env=env
        ).returncode
        == 0
    )
    if already_up and (state_dir / "real-node").exists():
        pytest.fail(f"{state_dir} holds a --real-node cluster; these tests need kwok's node")
    out = _run("bash", str(LOCAL_CLUSTER), "up", env=env)
    kubeconfig = Path(out.strip().splitlines()[-1])
    try:
        yield Cluster(kubeconfig=kubeconfig, kubectl_bin=kubectl, state_dir=state_dir)
    finally:
        if not already_up and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1":
            subprocess.run(
                ["bash", str(LOCAL_CLUSTER), "down"], capture_output=True, check=False, env=env
            )


def _apply_crds(cluster: Cluster) -> None:
    crds = REPO_ROOT / "crds"
    if not any(crds.glob("*.yaml")):
        pytest.fail("crds/ holds no CRD yet: nothing to test the operator against")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    wait_established(cluster.kubectl, CRD_NAME)


def _operator_kubeconfig_external(cluster: Cluster, path: Path) -> Path:
    """For a cluster given by kubeconfig: the same as `local-cluster.sh operator-kubeconfig`."""
    rendered = cluster.kubectl("kustomize", str(REPO_ROOT / "deploy")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in RBAC_KINDS]
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    wait_until(
        lambda: cluster.core.read_namespaced_service_account(OPERATOR_SA, OPERATOR_NS),
        "the operator's ServiceAccount",
        30,
    )
    token = cluster.kubectl(
        "create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration=24h"
    ).stdout.strip()
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cl = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cl:
        ca = Path(cl.pop("certificate-authority")).read_bytes()
        cl["certificate-authority-data"] = base64.b64encode(ca).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cl}],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "op", "context": {"cluster": "c", "user": OPERATOR_SA}}],
        "current-context": "op",
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _apply_crds(cluster)
    override = os.environ.get("MODELDEPLOY_TEST_OPERATOR_KUBECONFIG")
    if override:  # e.g. to bisect an RBAC problem: run the operator with other credentials
        return Path(override)
    if not (REPO_ROOT / "deploy" / "kustomization.yaml").exists():
        pytest.fail("deploy/kustomization.yaml does not exist yet: no RBAC to run the operator as")
    if cluster.state_dir is not None:
        out = _run(
            "bash", str(LOCAL_CLUSTER), "operator-kubeconfig", timeout=300, env=_cluster_env()
        )
        return Path(out.strip().splitlines()[-1])
    return _operator_kubeconfig_external(
        cluster, tmp_path_factory.mktemp("operator") / "operator.kubeconfig"
    )


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_dir = (
        cluster.state_dir / "logs"
        if cluster.state_dir is not None
        else tmp_path_factory.mktemp("operator-logs")
    )
    proc = OperatorProcess(operator_kubeconfig, log_dir / "operator.log")
    if not proc.executable.exists():
        pytest.fail(f"{proc.executable} is missing: run hack/bootstrap.sh")
    proc.start()
    try:
        proc.wait_alive()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def namespace(cluster: Cluster, operator: OperatorProcess) -> Iterator[str]:
    """A fresh namespace per test (the operator is running). Deleted afterwards without waiting."""
    name = f"it-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace({"metadata": {"name": name, "labels": {"modeldeploy-test": "1"}}})
    wait_until(
        lambda: cluster.core.read_namespaced_service_account("default", name),
        f"ServiceAccount {name}/default",
        60,
    )
    yield name
    try:
        cluster.core.delete_namespace(name)
    except ApiException as e:  # pragma: no cover - best effort cleanup
        if e.status != 404:
            raise


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach what the operator logged during the test."""
    outcome: Any = yield
    rep = outcome.get_result()
    if rep.when == "setup":
        op = item.funcargs.get("operator") if hasattr(item, "funcargs") else None
        if isinstance(op, OperatorProcess):
            item.stash[_LOG_OFFSET] = op.log_size()
    if rep.when == "call" and rep.failed and hasattr(item, "funcargs"):
        op = item.funcargs.get("operator")
        if isinstance(op, OperatorProcess):
            offset = item.stash.get(_LOG_OFFSET, 0)
            rep.sections.append(
                (f"operator log ({op.log_path}, this test)", op.log_since(offset) or "(empty)")
            )


_LOG_OFFSET = pytest.StashKey[int]()
