"""Every ModelDeployment in examples/ works as written against a real API server and the real
operator: it becomes Ready, its children follow the contract, and kubectl tells the truth."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_contract import assert_children
from operator_harness import (
    KIND,
    REPO_ROOT,
    Cluster,
    Obj,
    eventually,
    iris_spec,
    is_ready,
    load_yaml_docs,
    md_manifest,
    wait_md_ready,
    wait_until,
)

EXAMPLES = REPO_ROOT / "examples"
REQUIRED = ("iris", "iris-canary", "iris-autoscale", "s3-credentials")


def _needs_registry(doc: Obj) -> bool:
    return str(doc.get("spec", {}).get("model", {}).get("storageUri", "")).startswith("models:/")


def _example_files() -> list[Path]:
    """The examples that work on their own; one naming an MLflow registry needs a tracking
    server and is applied by test_cluster_mlflow_registry, against a real one."""
    files = sorted(p for p in EXAMPLES.rglob("*.y*ml") if p.suffix in {".yaml", ".yml"})
    return [
        p
        for p in files
        if any(d.get("kind") == KIND and not _needs_registry(d) for d in load_yaml_docs(p))
    ]


def _id(p: Path) -> str:
    return str(p.relative_to(EXAMPLES))


def _namespaced(docs: list[Obj]) -> list[Obj]:
    """The example's objects with any hard-coded namespace removed, so each test gets its own."""
    for d in docs:
        d.get("metadata", {}).pop("namespace", None)
    return [d for d in docs if d.get("kind") != "Namespace"]


def test_required_examples_exist() -> None:
    names = {p.stem for p in _example_files()} | {
        d["metadata"]["name"] for p in _example_files() for d in load_yaml_docs(p)
    }
    missing = [r for r in REQUIRED if not any(r in n for n in names)]
    assert not missing, f"examples/ has no ModelDeployment for {missing} (found {sorted(names)})"


@pytest.mark.parametrize("path", _example_files() or [EXAMPLES / "missing.yaml"], ids=_id)
def test_example_becomes_ready_with_contract_children(
    cluster: Cluster, namespace: str, path: Path
) -> None:
    assert path.exists(), f"no ModelDeployment example in {EXAMPLES}"
    docs = _namespaced(load_yaml_docs(path))
    cluster.apply_yaml(namespace, docs)
    mds = [d for d in docs if d.get("kind") == KIND]
    for doc in mds:
        name = doc["metadata"]["name"]
        # the user's way to wait: must return once the operator reports Ready
        proc = cluster.kubectl(
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            f"md/{name}",
            "--timeout=150s",
            check=False,
            timeout=200,
        )
        assert proc.returncode == 0, f"kubectl wait md/{name}: {proc.stdout}{proc.stderr}"
        wait_md_ready(cluster, namespace, name)
        eventually(
            lambda name=name: assert_children(cluster, namespace, cluster.get_md(namespace, name)),
            f"{name}'s children to match the contract",
        )

    out = cluster.kubectl("get", "md", "-n", namespace).stdout
    for doc in mds:
        md = cluster.get_md(namespace, doc["metadata"]["name"])
        row = next(r for r in out.splitlines()[1:] if r.split()[0] == md["metadata"]["name"])
        assert md["status"]["url"] in row.split(), row
        n = md["status"]["replicas"]
        assert f"{n}/{n}" in row.split(), row
        assert "True" in row.split(), row


def test_kubectl_get_md_shows_the_design_columns(cluster: Cluster, namespace: str) -> None:
    """DESIGN.md: NAME, MODEL (uri), READY, REPLICAS (ready/desired), CANARY (effective %), URL,
    AGE (and ROLLOUT, with spec.rollout; VERSION, with a models:/ storageUri; DRIFT, once the
    pods' drift gauges were read), in `kubectl get md` without -o wide."""
    spec = iris_spec(
        replicas=4, canary={"storageUri": "s3://models/iris/v2/", "trafficPercent": 25}
    )
    cluster.create_md(namespace, md_manifest("cols", spec))
    md = wait_md_ready(cluster, namespace, "cols")
    out = cluster.kubectl("get", "md", "-n", namespace).stdout
    lines = out.splitlines()
    header = lines[0].split()
    assert header == [
        "NAME",
        "MODEL",
        "VERSION",
        "READY",
        "REPLICAS",
        "CANARY",
        "ROLLOUT",
        "DRIFT",
        "URL",
        "AGE",
    ], out
    # Cut the row at the header's column starts: ROLLOUT is empty without spec.rollout.
    starts = [lines[0].index(h) for h in header] + [None]
    cells = {h: lines[1][a:b].strip() for h, a, b in zip(header, starts, starts[1:], strict=False)}
    assert cells["ROLLOUT"] == "", out
    assert cells["DRIFT"] == "", out  # no pod's drift gauges are readable from here (kwok)
    assert cells["VERSION"] == "", out  # a registry version, with a models:/ storageUri only
    assert cells["MODEL"] == spec["model"]["storageUri"], out
    assert cells["READY"] == "True", out
    assert cells["REPLICAS"] == "4/4", out
    assert float(cells["CANARY"].rstrip("%")) == 25.0, out
    assert cells["URL"] == md["status"]["url"], out


def test_hpa_drives_the_scale_subresource(cluster: Cluster, namespace: str) -> None:
    """The HPA controller (kube-controller-manager) reads the ModelDeployment's scale subresource;
    without metrics it still enforces minReplicas through it, and the operator follows."""
    name = "auto"
    floor = 3
    spec = iris_spec(
        replicas=floor,
        autoscaling={"minReplicas": floor, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70},
    )
    cluster.create_md(namespace, md_manifest(name, spec))
    wait_md_ready(cluster, namespace, name)

    def able_to_scale() -> bool:
        hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, namespace)
        conds = {c.type: c for c in (hpa.status.conditions or [])}
        c = conds.get("AbleToScale")
        return c is not None and bool(c.status == "True")

    wait_until(able_to_scale, f"HPA {name} to read the ModelDeployment's scale subresource")

    # below the floor: the HPA controller raises spec.replicas through /scale
    cluster.kubectl("scale", "-n", namespace, f"md/{name}", f"--replicas={floor - 1}")

    def back_to_floor() -> bool:
        md = cluster.get_md(namespace, name)
        return bool(md["spec"]["replicas"] == floor) and is_ready(md)

    wait_until(back_to_floor, f"the HPA to restore {name} to minReplicas={floor}")
    eventually(
        lambda: assert_children(cluster, namespace, cluster.get_md(namespace, name)),
        f"{name}'s children at {floor} replicas",
    )
