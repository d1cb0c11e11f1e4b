"""The install manifests: least-privilege RBAC (exactly the verbs the operator uses), the operator
Deployment's safety settings, and a kustomization that includes the CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"

# (apiGroup, resource) -> verbs, each justified in docs/operations.md.
EXPECTED_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("", "events"): {"create"},
    ("modeldeploy.io", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("modeldeploy.io", "modeldeployments/status"): {"patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
}


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def by_kind(kind: str) -> dict[str, Any]:
    found = [d for p in sorted(DEPLOY.glob("*.yaml")) for d in load(p.name) if d["kind"] == kind]
    assert len(found) == 1, (kind, found)
    return found[0]


def test_cluster_role_is_exactly_the_verbs_used() -> None:
    role = by_kind("ClusterRole")
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    assert rules == EXPECTED_RULES


def test_operations_doc_explains_every_rbac_rule() -> None:
    doc = (REPO_ROOT / "docs" / "operations.md").read_text()
    for _, resource in EXPECTED_RULES:
        assert f"`{resource}`" in doc, resource


def test_binding_ties_the_role_to_the_service_account() -> None:
    binding = by_kind("ClusterRoleBinding")
    sa = by_kind("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": by_kind("ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "modeldeploy-operator",
            "namespace": "modeldeploy-system",
        }
    ]
    assert sa["metadata"] == {
        **sa["metadata"],
        "name": "modeldeploy-operator",
        "namespace": "modeldeploy-system",
    }


def test_operator_deployment_is_single_active_non_root_and_probed() -> None:
    dep = by_kind("Deployment")
    spec = dep["spec"]
    assert dep["metadata"]["namespace"] == "modeldeploy-system"
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "modeldeploy-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == "modeldeploy-operator:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]


def test_kustomization_includes_the_crd_directory() -> None:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kust["resources"][0] == "../crds"
    for res in kust["resources"][1:]:
        assert (DEPLOY / res).is_file(), res
    assert sorted(p.name for p in DEPLOY.glob("*.yaml")) == sorted(
        ["kustomization.yaml", *kust["resources"][1:]]
    )


def test_dockerfile_builds_the_operator_as_uid_1000() -> None:
    text = Path(REPO_ROOT / "Dockerfile.operator").read_text()
    assert "ARG BASE_IMAGE=python:3.12-slim" in text
    assert "python3 -m venv /opt/venv" in text
    assert "pip install '.[operator]'" in text
    assert "USER 1000:1000" in text
    assert 'ENTRYPOINT ["modeldeploy-operator"]' in text
