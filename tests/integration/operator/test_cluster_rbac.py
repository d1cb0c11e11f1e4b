"""The operator runs as its ServiceAccount with deploy/'s least-privilege RBAC, asked through the
real API server (SelfSubjectAccessReview with the operator's own token): it may do what
reconciling needs and nothing that would let a compromised operator read secrets or take over
the cluster."""

from __future__ import annotations

import subprocess

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
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
    ("create", "serviceaccounts"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("watch", "clusterrolebindings.rbac.authorization.k8s.io"),
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
    ("bind", "clusterroles.rbac.authorization.k8s.io"),  # only modeldeploy-server-auth
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
]


def _can_i(
    cluster: Cluster, operator: OperatorProcess, verb: str, resource: str, name: str = ""
) -> bool:
    """A SelfSubjectAccessReview with the operator's own token, cluster-wide. (Not `kubectl auth
    can-i`: it resolves the resource through discovery and says "no" for a CRD that is not
    installed, such as the Gateway API's, whatever RBAC grants.)"""
    kind, _, sub = resource.partition("/")
    plural, _, group = kind.partition(".")
    api = k8s_config.new_client_from_config(config_file=str(operator.kubeconfig))
    review = k8s.AuthorizationV1Api(api).create_self_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": plural,
                    "subresource": sub,
                    "name": name,
                }
            },
        }
    )
    return bool(review.status.allowed)


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


def test_the_operator_may_bind_only_the_server_review_role(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """spec.auth needs a ClusterRoleBinding to modeldeploy-server-auth; `bind` is granted on that
    role by name, so the operator cannot hand out any other role (cluster-admin least of all)."""
    role = "clusterroles.rbac.authorization.k8s.io"
    assert _can_i(cluster, operator, "bind", role, name="modeldeploy-server-auth")
    assert not _can_i(cluster, operator, "bind", role, name="cluster-admin")
