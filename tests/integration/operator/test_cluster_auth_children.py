"""spec.auth against the real API server: the server pods get their own ServiceAccount, the
ClusterRoleBinding lets exactly that account review tokens, and the binding goes when spec.auth
goes or the ModelDeployment is deleted (it is cluster-scoped, so no ownerReference can do that)."""

from __future__ import annotations

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from operator_harness import Cluster, eventually, iris_spec, md_manifest, wait_md_ready

ROLE = "modeldeploy-server-auth"


def _binding(cluster: Cluster, name: str) -> dict[str, object] | None:
    rbac = k8s.RbacAuthorizationV1Api(cluster.api_client)
    try:
        obj = rbac.read_cluster_role_binding(name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    out: dict[str, object] = cluster.api_client.sanitize_for_serialization(obj)
    return out


def _may(cluster: Cluster, user: str, verb: str, group: str, resource: str) -> bool:
    review = k8s.AuthorizationV1Api(cluster.api_client).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": {"verb": verb, "group": group, "resource": resource},
            },
        }
    )
    return bool(review.status.allowed)


def test_auth_gives_the_server_pods_exactly_the_review_permission(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create_md(namespace, md_manifest("guarded", iris_spec(replicas=1, auth={})))
    wait_md_ready(cluster, namespace, "guarded")
    binding_name = f"modeldeploy-auth.{namespace}.guarded"
    binding = _binding(cluster, binding_name)
    assert binding is not None
    assert binding["roleRef"] == {  # type: ignore[comparison-overlap]
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": ROLE,
    }
    account = cluster.core.read_namespaced_service_account("guarded-server", namespace)
    assert account.metadata.owner_references[0].name == "guarded"
    (pod, *_) = cluster.pods(namespace, "guarded")
    assert pod["spec"]["serviceAccountName"] == "guarded-server"
    assert pod["spec"]["automountServiceAccountToken"] is True

    user = f"system:serviceaccount:{namespace}:guarded-server"
    assert _may(cluster, user, "create", "authentication.k8s.io", "tokenreviews")
    assert _may(cluster, user, "create", "authorization.k8s.io", "subjectaccessreviews")
    assert not _may(cluster, user, "get", "", "secrets")
    assert not _may(cluster, user, "create", "", "pods")

    # spec.auth off: the operator deletes the binding it owns (by uid annotation)
    cluster.patch_md(namespace, "guarded", {"spec": {"auth": {"enabled": False}}})

    def unbound() -> None:
        assert _binding(cluster, binding_name) is None

    eventually(unbound, "the binding to go with spec.auth")
    assert not _may(cluster, user, "create", "authentication.k8s.io", "tokenreviews")


def test_a_binding_whose_model_deployment_is_deleted_is_swept(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create_md(namespace, md_manifest("swept", iris_spec(replicas=1, auth={})))
    wait_md_ready(cluster, namespace, "swept")
    binding_name = f"modeldeploy-auth.{namespace}.swept"
    assert _binding(cluster, binding_name) is not None
    cluster.delete_md(namespace, "swept")

    def swept() -> None:
        assert _binding(cluster, binding_name) is None

    eventually(swept, "the orphaned binding to be swept by the operator's timer")
