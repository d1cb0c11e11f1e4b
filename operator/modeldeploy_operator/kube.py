"""The only module that talks to the API server (besides kopf's own watches in ``handlers``).

Implements ``reconcile.Cluster`` with the official Kubernetes client: reads return plain dicts in
the API's own camelCase shape (raw JSON, not the client's snake_case models, so they compare
directly with what the builders produce), writes to children are server-side applies with the
field manager ``modeldeploy-operator`` and ``force=True`` (taking back a field someone changed by
hand is the point of reconciling), and every failure becomes an ``errors.ApiError`` so callers never
import the client to decide what to retry.

Configuration: KUBECONFIG (or ~/.kube/config) when set, otherwise the in-cluster ServiceAccount.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from modeldeploy_operator.api import API_VERSION, GROUP, KIND, MANAGED_BY, PLURAL, VERSION
from modeldeploy_operator.errors import ApiError

Obj = dict[str, Any]
log = logging.getLogger(__name__)

FIELD_MANAGER = MANAGED_BY
# Children served by CRDs (the Gateway API's): (group, version, plural), through CustomObjectsApi.
CUSTOM_KINDS = {"HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes")}
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


def load_api_client(
    connections: int | None = None, *, kubeconfig: str | None = None, context: str | None = None
) -> k8s.ApiClient:
    """KUBECONFIG (or ~/.kube/config) when present, else the in-cluster ServiceAccount.
    ``connections``: the HTTP connection pool size (the client's default is 5 per core);
    ``kubeconfig``/``context``: as kubectl's flags (the kubectl plugin passes them on)."""
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    default = os.path.expanduser("~/.kube/config")
    cfg = k8s.Configuration()
    if kubeconfig or (not os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(default)):
        # KUBECONFIG may list several files, as kubectl allows; the client takes the first.
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=(kubeconfig or "").split(os.pathsep)[0] or None,
            context=context,
            client_configuration=cfg,
            persist_config=False,
        )
    else:
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    if connections:
        cfg.connection_pool_maxsize = connections
    return k8s.ApiClient(cfg)


def context_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's current (or named) context, as kubectl picks it;
    "default" without a kubeconfig or a namespace in it."""
    path = kubeconfig or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or None
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except Exception:  # no kubeconfig at all (in a pod): kubectl's default too
        return "default"
    if context:
        active = next((c for c in contexts or [] if c.get("name") == context), active)
    return str(((active or {}).get("context") or {}).get("namespace") or "default")


def _to_error(e: Exception) -> ApiError:
    if isinstance(e, ApiException):
        reason, message = str(e.reason or ""), str(e.body or e.reason or "")
        try:
            body = json.loads(e.body or "{}")
            reason = body.get("reason") or reason
            message = body.get("message") or message
        except (ValueError, TypeError):
            pass
        return ApiError(int(e.status or 0), reason, message)
    return ApiError(0, type(e).__name__, str(e))


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        resp = fn(*args, _preload_content=False, **kwargs)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise _to_error(e) from e
    data = resp.data
    return json.loads(data) if data else {}


class Kube:
    """``reconcile.Cluster`` over a real API server."""

    def __init__(self, api_client: k8s.ApiClient, request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.timeout = request_timeout
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.policy = k8s.PolicyV1Api(api_client)
        self.rbac = k8s.RbacAuthorizationV1Api(api_client)
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    def _ops(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """(read, patch, delete) for a child kind, each called as (name, namespace, ...)."""
        if kind == "Deployment":
            return (
                self.apps.read_namespaced_deployment,
                self.apps.patch_namespaced_deployment,
                self.apps.delete_namespaced_deployment,
            )
        if kind == "Service":
            return (
                self.core.read_namespaced_service,
                self.core.patch_namespaced_service,
                self.core.delete_namespaced_service,
            )
        if kind == "HorizontalPodAutoscaler":
            return (
                self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            )
        if kind == "PodDisruptionBudget":
            return (
                self.policy.read_namespaced_pod_disruption_budget,
                self.policy.patch_namespaced_pod_disruption_budget,
                self.policy.delete_namespaced_pod_disruption_budget,
            )
        if kind == "ServiceAccount":
            return (
                self.core.read_namespaced_service_account,
                self.core.patch_namespaced_service_account,
                self.core.delete_namespaced_service_account,
            )
        if kind == "Secret":  # read only: spec.model.mlflow.secretName, never written

            def not_written(*_: Any, **__: Any) -> Any:
                raise ValueError("the operator never writes or deletes Secrets")

            return self.core.read_namespaced_secret, not_written, not_written
        if kind == "ClusterRoleBinding":  # cluster-scoped: the namespace argument is dropped

            def read_crb(name: str, _namespace: str, **kw: Any) -> Any:
                return self.rbac.read_cluster_role_binding(name, **kw)

            def patch_crb(name: str, _namespace: str | None, body: Obj, **kw: Any) -> Any:
                return self.rbac.patch_cluster_role_binding(name, body, **kw)

            def delete_crb(name: str, _namespace: str, **kw: Any) -> Any:
                return self.rbac.delete_cluster_role_binding(name, **kw)

            return read_crb, patch_crb, delete_crb
        if kind in CUSTOM_KINDS:
            group, version, plural = CUSTOM_KINDS[kind]

            def read(name: str, namespace: str, **kw: Any) -> Any:
                return self.custom.get_namespaced_custom_object(
                    group, version, namespace, plural, name, **kw
                )

            def patch(name: str, namespace: str, body: Obj, **kw: Any) -> Any:
                return self.custom.patch_namespaced_custom_object(
                    group, version, namespace, plural, name, body, **kw
                )

            def delete(name: str, namespace: str, **kw: Any) -> Any:
                return self.custom.delete_namespaced_custom_object(
                    group, version, namespace, plural, name, **kw
                )

            return read, patch, delete
        raise ValueError(f"not a child kind: {kind}")

    # -- reconcile.Cluster
    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        read, _, _ = self._ops(kind)
        try:
            obj: Obj = _call(read, name, namespace, _request_timeout=self.timeout)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return obj

    def apply(self, manifest: Obj) -> Obj:
        _, patch, _ = self._ops(manifest["kind"])
        meta = manifest["metadata"]
        obj: Obj = _call(
            patch,
            meta["name"],
            meta.get("namespace"),
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _request_timeout=self.timeout,
        )
        return obj

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        _, _, delete = self._ops(kind)
        body: Obj = {"propagationPolicy": "Background"}
        if uid:
            # Only the object we decided to delete: a same-named newer one survives.
            body["preconditions"] = {"uid": uid}
        try:
            _call(delete, name, namespace, body=body, _request_timeout=self.timeout)
        except ApiError as e:
            if e.status != 404:
                raise

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        resp = _call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
            _request_timeout=self.timeout,
        )
        items: list[Obj] = resp.get("items") or []
        return items

    def patch_status(self, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patches status; returns the object as stored (the cache keeps it)."""
        obj: Obj = _call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": patch},
            _content_type=MERGE,
            _request_timeout=self.timeout,
        )
        return obj

    def event(self, md: Obj, type_: str, reason: str, message: str) -> None:
        """Best effort: an Event that cannot be posted must not fail the reconcile."""
        meta = md["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGED_BY},
            "reportingComponent": MANAGED_BY,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            _call(
                self.core.create_namespaced_event,
                meta["namespace"],
                body,
                _request_timeout=self.timeout,
            )
        except ApiError as e:
            # In a namespace being deleted nobody will read it; anything else is worth a look.
            level = logging.DEBUG if e.namespace_terminating else logging.WARNING
            log.log(
                level,
                "could not post Event %s on %s/%s: %s",
                reason,
                meta["namespace"],
                meta["name"],
                e,
            )

    def annotate_model_deployment(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> Obj:
        """Sets annotations (a merge patch of metadata only: spec stays the GitOps tool's)."""
        obj: Obj = _call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
            _content_type=MERGE,
            _request_timeout=self.timeout,
        )
        return obj

    # -- used by the child watches
    def get_model_deployment(self, namespace: str, name: str) -> Obj | None:
        try:
            obj: Obj = _call(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                _request_timeout=self.timeout,
            )
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return obj
