"""The only module that talks to the API server (besides kopf's own watches in ``handlers``).

Implements ``reconcile.Cluster`` as plain REST over urllib3: reads return the API's own JSON as
dicts (the camelCase shape the builders produce, so they compare directly), writes to children are
server-side applies with the field manager ``modeldeploy-operator`` and ``force=True`` (taking back
a field someone changed by hand is the point of reconciling), and every failure becomes an
``errors.ApiError`` so callers never look at HTTP to decide what to retry.

Why not the official client: the operator makes eight kinds of request, and the generated client
cost ~40 MiB of RSS (its modules, loaded whole) and about a quarter of the operator's CPU at 500
ModelDeployments (each call goes through its validators and model plumbing). Credentials come
from ``kubeauth``, the same ones kopf's watches use.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from modeldeploy_operator.api import API_VERSION, GROUP, KIND, MANAGED_BY, PLURAL, VERSION
from modeldeploy_operator.errors import ApiError
from modeldeploy_operator.kubeauth import Credentials, CredentialsError

Obj = dict[str, Any]
log = logging.getLogger(__name__)

FIELD_MANAGER = MANAGED_BY
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON = "application/json"
USER_AGENT = f"{MANAGED_BY}/0.1.0"

# kind -> (API path prefix, plural, namespaced): everything the operator reads or writes.
KINDS: dict[str, tuple[str, str, bool]] = {
    KIND: (f"apis/{GROUP}/{VERSION}", PLURAL, True),
    "Deployment": ("apis/apps/v1", "deployments", True),
    "Service": ("api/v1", "services", True),
    "HorizontalPodAutoscaler": ("apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "PodDisruptionBudget": ("apis/policy/v1", "poddisruptionbudgets", True),
    "ServiceAccount": ("api/v1", "serviceaccounts", True),
    "Secret": ("api/v1", "secrets", True),  # read only: spec.model.mlflow.secretName
    "ClusterRoleBinding": ("apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "HTTPRoute": ("apis/gateway.networking.k8s.io/v1", "httproutes", True),
    "Pod": ("api/v1", "pods", True),
    "Event": ("api/v1", "events", True),
}
# Children the reconcile may apply or delete (Secrets are only read, Pods and Events never applied).
WRITABLE = frozenset(KINDS) - {"Secret", "Pod", "Event"}


def resource_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    """``/apis/apps/v1/namespaces/ns/deployments/name``; the namespace is dropped for
    cluster-scoped kinds."""
    if kind not in KINDS:
        raise ValueError(f"not a kind the operator uses: {kind}")
    prefix, plural, namespaced = KINDS[kind]
    path = f"/{prefix}"
    if namespaced:
        if not namespace:
            raise ValueError(f"{kind} is namespaced: a namespace is needed")
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


def _status_error(status: int, data: bytes) -> ApiError:
    """The API's Status object names the reason and says what is wrong; keep both."""
    reason, message = "", data.decode("utf-8", "replace")[:2000]
    try:
        body = json.loads(data or b"{}")
        if isinstance(body, dict):
            reason = str(body.get("reason") or "")
            message = str(body.get("message") or message)
    except ValueError:
        pass
    return ApiError(status, reason, message)


class Rest:
    """JSON over one connection pool, authenticated by ``kubeauth.Credentials``."""

    def __init__(
        self, credentials: Credentials, connections: int = 8, timeout: float = 30.0
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        try:
            ssl_context = credentials.ssl_context()
        except CredentialsError as e:
            raise ApiError(0, "Unauthorized", str(e)) from e
        kwargs: dict[str, Any] = {}
        if credentials.tls_server_name:
            kwargs["server_hostname"] = credentials.tls_server_name
        self.pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=connections,
            ssl_context=ssl_context,
            # A dropped keep-alive connection is retried once. Every write the operator makes is
            # idempotent (apply, merge patch, delete with a uid precondition) but its Events,
            # and a repeated Event is harmless; so any verb may be retried.
            retries=urllib3.Retry(
                total=2, connect=2, read=1, redirect=0, status=0, other=0, allowed_methods=None
            ),
            **kwargs,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Obj | None = None,
        content_type: str = JSON,
    ) -> Obj:
        url = self.credentials.server + path + (f"?{urlencode(query)}" if query else "")
        for attempt in (1, 2):
            try:
                headers = {"Accept": JSON, "User-Agent": USER_AGENT}
                headers.update(self.credentials.headers())
                if body is not None:
                    headers["Content-Type"] = content_type
                resp = self.pool.request(
                    method,
                    url,
                    body=json.dumps(body).encode() if body is not None else None,
                    headers=headers,
                    timeout=urllib3.Timeout(total=self.timeout),
                )
            except CredentialsError as e:
                raise ApiError(0, "Unauthorized", str(e)) from e
            except (urllib3.exceptions.HTTPError, OSError) as e:
                reason = getattr(e, "reason", None) or e
                raise ApiError(0, type(reason).__name__, str(reason)) from e
            if resp.status == 401 and attempt == 1 and self.credentials.expire_if_refreshable():
                continue  # a rotated token file or an expired plugin token: read it again
            if resp.status >= 400:
                raise _status_error(resp.status, resp.data)
            out: Obj = json.loads(resp.data) if resp.data else {}
            return out
        raise AssertionError("unreachable")  # pragma: no cover


class Kube:
    """``reconcile.Cluster`` over a real API server."""

    def __init__(
        self, credentials: Credentials, *, connections: int = 8, request_timeout: float = 30.0
    ) -> None:
        self.rest = Rest(credentials, connections=connections, timeout=request_timeout)
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    # -- reconcile.Cluster
    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return self.rest.request("GET", resource_path(kind, namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def apply(self, manifest: Obj) -> Obj:
        kind, meta = manifest["kind"], manifest["metadata"]
        if kind not in WRITABLE:
            raise ValueError(f"the operator never writes a {kind}")
        return self.rest.request(
            "PATCH",
            resource_path(kind, meta.get("namespace"), meta["name"]),
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type=APPLY,
        )

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        if kind not in WRITABLE:
            raise ValueError(f"the operator never deletes a {kind}")
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            # Only the object we decided to delete: a same-named newer one survives.
            body["preconditions"] = {"uid": uid}
        try:
            self.rest.request("DELETE", resource_path(kind, namespace, name), body=body)
        except ApiError as e:
            if e.status != 404:
                raise

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        resp = self.rest.request(
            "GET", resource_path("Pod", namespace), query={"labelSelector": selector}
        )
        items: list[Obj] = resp.get("items") or []
        return items

    def patch_status(self, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patches status; returns the object as stored (the cache keeps it)."""
        return self.rest.request(
            "PATCH",
            resource_path(KIND, namespace, name) + "/status",
            body={"status": patch},
            content_type=MERGE,
        )

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
            self.rest.request("POST", resource_path("Event", meta["namespace"]), body=body)
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
        return self.rest.request(
            "PATCH",
            resource_path(KIND, namespace, name),
            body={"metadata": {"annotations": annotations}},
            content_type=MERGE,
        )
