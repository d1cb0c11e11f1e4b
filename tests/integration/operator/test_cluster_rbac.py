"""The operator runs as its ServiceAccount with deploy/'s least-privilege RBAC, asked through the
real API server (SelfSubjectAccessReview with the operator's own token): it may do what
reconciling needs and nothing that would let a compromised operator read secrets or take over
the cluster."""

from __future__ import annotations

import subprocess

import pytest
from operator_harness import OPERATOR_USER, Cluster, OperatorProcess

ALLOWED = [
    ("patch", "modeldeployments.modeldeploy.io"),
    ("patch", "modeldeployments.modeldeploy.io/status"),
    ("watch", "modeldeployments.modeldeploy.io"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("create", "services"),
    ("create", "horizontalpodautoscalers.autoscaling"),
    ("patch", "poddisruptionbudgets.policy"),
    ("patch", "httproutes.gateway.networking.k8s.io"),
    ("watch", "httproutes.gateway.networking.k8s.io"),
    ("watch", "pods"),
    ("create", "events"),
]

DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("delete", "pods"),
    ("update", "deployments.apps/scale"),
    ("delete", "namespaces"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("patch", "nodes"),
    ("delete", "modeldeployments.modeldeploy.io"),
    ("patch", "gateways.gateway.networking.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
]


def _can_i(cluster: Cluster, operator: OperatorProcess, verb: str, resource: str) -> bool:
    proc = subprocess.run(
        [
            str(cluster.kubectl_bin),
            "--kubeconfig",
            str(operator.kubeconfig),
            "auth",
            "can-i",
            verb,
            resource,
            "--all-namespaces",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.strip() in {"yes", "no"}, proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


def test_the_operator_authenticates_as_its_service_account(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    who = subprocess.run(
        [
            str(cluster.kubectl_bin),
            "--kubeconfig",
            str(operator.kubeconfig),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert who == OPERATOR_USER


@pytest.mark.parametrize(("verb", "resource"), ALLOWED, ids=[f"{v}-{r}" for v, r in ALLOWED])
def test_rbac_allows_what_reconciling_needs(
    cluster: Cluster, operator: OperatorProcess, verb: str, resource: str
) -> None:
    assert _can_i(cluster, operator, verb, resource), f"the operator may not {verb} {resource}"


@pytest.mark.parametrize(("verb", "resource"), DENIED, ids=[f"{v}-{r}" for v, r in DENIED])
def test_rbac_denies_everything_else(
    cluster: Cluster, operator: OperatorProcess, verb: str, resource: str
) -> None:
    assert not _can_i(cluster, operator, verb, resource), f"the operator may {verb} {resource}"
