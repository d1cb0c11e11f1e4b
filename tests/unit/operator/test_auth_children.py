"""spec.auth: the server pods' ServiceAccount, its review permission (a cluster-scoped binding the
operator owns by labels and uid) and the clean-up of a binding whose ModelDeployment is gone."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import UID, make_md, md_body
from modeldeploy_operator import builders
from modeldeploy_operator.handlers import Runtime
from modeldeploy_operator.plan import controlled_by, orphan_reason
from modeldeploy_operator.settings import OperatorSettings
from modeldeploy_operator.tracks import plan_tracks


def pod_spec(md_spec: dict[str, Any]) -> dict[str, Any]:
    md = make_md(**md_spec)
    spec: dict[str, Any] = builders.deployment(md, plan_tracks(md).stable, OperatorSettings())[
        "spec"
    ]["template"]["spec"]
    return spec


def test_without_auth_the_pods_have_no_identity_and_no_token() -> None:
    spec = pod_spec({})
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec
    env = {e["name"] for e in spec["containers"][0]["env"]}
    assert "AUTH_ENABLED" not in env


def test_with_auth_the_pods_run_as_their_own_account_with_a_token() -> None:
    spec = pod_spec({"auth": {"cacheSeconds": 30}})
    assert spec["automountServiceAccountToken"] is True
    assert spec["serviceAccountName"] == "iris-server"
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["AUTH_ENABLED"] == "true"
    assert env["AUTH_CACHE_SECONDS"] == "30"
    assert env["MODEL_NAMESPACE"] == "default"
    assert env["MODEL_NAME"] == "iris"


def test_a_user_service_account_is_kept_and_bound_instead_of_ours() -> None:
    md = make_md(auth={}, credentials={"serviceAccountName": "model-reader"})
    kinds = [m["kind"] for m in builders.desired_children(md, OperatorSettings())]
    assert "ServiceAccount" not in kinds
    assert builders.auth_binding(md)["subjects"] == [
        {"kind": "ServiceAccount", "name": "model-reader", "namespace": "default"}
    ]


def test_auth_binding_golden() -> None:
    assert builders.auth_binding(make_md(auth={})) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": "modeldeploy-auth.default.iris",
            "labels": {
                "app.kubernetes.io/name": "iris",
                "app.kubernetes.io/instance": "iris",
                "app.kubernetes.io/component": "predictor",
                "app.kubernetes.io/managed-by": "modeldeploy-operator",
                "modeldeploy.io/owner-namespace": "default",
                "modeldeploy.io/owner-name": "iris",
            },
            "annotations": {"modeldeploy.io/owner-uid": UID},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "modeldeploy-server-auth",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "iris-server", "namespace": "default"}],
    }


def test_disabled_auth_is_no_auth() -> None:
    md = make_md(auth={"enabled": False})
    kinds = [m["kind"] for m in builders.desired_children(md, OperatorSettings())]
    assert "ClusterRoleBinding" not in kinds
    assert pod_spec({"auth": {"enabled": False}})["automountServiceAccountToken"] is False


def test_orphan_reasons() -> None:
    binding = builders.auth_binding(make_md(auth={}))
    assert controlled_by(binding, UID)
    assert orphan_reason(binding, md_body(auth={})) is None
    assert orphan_reason(binding, None) == "ModelDeployment default/iris is gone"
    gone = md_body(auth={})
    gone["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    assert orphan_reason(binding, gone) == "ModelDeployment default/iris is gone"
    other = md_body(auth={})
    other["metadata"]["uid"] = "another"
    assert "re-created" in str(orphan_reason(binding, other))
    assert "no longer has spec.auth" in str(orphan_reason(binding, md_body()))
    assert "no longer has spec.auth" in str(
        orphan_reason(binding, md_body(auth={"enabled": False}))
    )


class SweepKube:
    def __init__(self, owner: dict[str, Any] | None) -> None:
        self.owner = owner
        self.deleted: list[tuple[str, str, str | None]] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind == "ModelDeployment"
        return self.owner

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        self.deleted.append((kind, name, uid))


def test_sweep_deletes_only_an_orphan_with_its_uid_as_precondition() -> None:
    binding = builders.auth_binding(make_md(auth={}))
    binding["metadata"]["uid"] = "crb-1"
    kube = SweepKube(owner=md_body(auth={}))
    rt = Runtime(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]
    assert asyncio.run(rt.sweep("default", "iris", binding)) is False
    assert kube.deleted == []
    kube.owner = None
    assert asyncio.run(rt.sweep("default", "iris", binding)) is True
    assert kube.deleted == [("ClusterRoleBinding", "modeldeploy-auth.default.iris", "crb-1")]
