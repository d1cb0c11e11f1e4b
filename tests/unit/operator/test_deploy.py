"""The install manifests: least-privilege RBAC (exactly the verbs the operator uses), the operator
Deployment's safety settings, and a kustomization that includes the CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from conftest import REPO_ROOT
from modeldeploy_operator import rbac, registry

DEPLOY = REPO_ROOT / "deploy"


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for p in sorted(DEPLOY.glob("*.yaml"))
        for d in load(p.name)
        if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    assert len(found) == 1, (kind, found)
    return found[0]


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return rules


def test_cluster_role_is_the_rbac_table() -> None:
    """deploy/rbac.yaml is generated from rbac.RULES (its drift is checked in
    test_crd_and_docs); here: what is installed is exactly the table, rule by rule."""
    expected = {(r.api_group, r.resource): set(r.verbs) for r in rbac.RULES}
    assert len(expected) == len(rbac.RULES)  # one row per (group, resource)
    assert rules_of(by_kind("ClusterRole", rbac.ROLE)) == expected


def test_server_pods_may_only_review_tokens() -> None:
    role = by_kind("ClusterRole", rbac.AUTH_ROLE)
    assert rules_of(role) == {
        ("authentication.k8s.io", "tokenreviews"): {"create"},
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    }


def test_rbac_table_is_least_privilege() -> None:
    """The policy the table must keep, whatever a feature adds: no wildcards, no update (writes
    are server-side applies or merge patches), nothing on Secrets but get on the one name
    spec.model.mlflow.secretName is documented to use, nothing on RBAC or pod exec, and every
    rule has its reason for the docs."""
    for r in rbac.RULES:
        assert "*" not in r.verbs, r
        assert "*" not in (r.resource, r.api_group), r
        assert "update" not in r.verbs, r
        assert r.resource not in {"pods/exec", "serviceaccounts/token"}, r
        if r.resource == "secrets":
            assert r.verbs == ("get",), r
            assert r.resource_names == (registry.MLFLOW_SECRET,), r
        if r.api_group == "rbac.authorization.k8s.io":
            # only the auth bindings it owns, and bind on exactly the server's review role
            assert r.resource in {"clusterrolebindings", "clusterroles"}, r
            if r.resource == "clusterroles":
                assert r.verbs == ("bind",), r
                assert r.resource_names == (rbac.AUTH_ROLE,), r
        assert len(r.why) > 20, r
    pods = next(r for r in rbac.RULES if r.resource == "pods")
    assert set(pods.verbs) == {"list", "watch"}  # status reads pods; it never changes them


def test_operations_doc_explains_every_rbac_rule() -> None:
    doc = (REPO_ROOT / "docs" / "operations.md").read_text()
    for r in rbac.RULES:
        assert f"`{r.resource}`" in doc, r.resource
        assert r.why in doc, r.resource


def test_binding_ties_the_role_to_the_service_account() -> None:
    binding = by_kind("ClusterRoleBinding", rbac.ROLE)
    sa = by_kind("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": rbac.ROLE,
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
