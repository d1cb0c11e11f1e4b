"""The operator's permissions, declared once: every rule with the reason it exists.

``deploy/rbac.yaml`` and the "RBAC: why each verb" table of docs/operations.md are generated from
``RULES`` (``python -m modeldeploy_operator.generate``; a unit test fails when either is stale),
so a feature that needs a new verb adds one row here, with its reason, and the install manifest,
the docs and the tests follow. Least privilege is the rule: no wildcards, no ``update`` (every
write is a server-side apply or a merge patch), no access to Secrets.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Final

import yaml

from modeldeploy_operator.api import GROUP, MANAGED_BY, PLURAL
from modeldeploy_operator.registry import MLFLOW_SECRET

NAMESPACE: Final = "modeldeploy-system"
SERVICE_ACCOUNT: Final = MANAGED_BY
ROLE: Final = MANAGED_BY
AUTH_ROLE: Final = "modeldeploy-server-auth"  # builders.AUTH_CLUSTER_ROLE

# What a server pod with spec.auth may do: review the tokens its callers present, nothing else.
# (Kubernetes' own system:auth-delegator is the same two rules.)
SERVER_AUTH_RULES: Final = (
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["subjectaccessreviews"],
        "verbs": ["create"],
    },
)
PART_OF: Final = {"app.kubernetes.io/name": MANAGED_BY, "app.kubernetes.io/part-of": "modeldeploy"}


@dataclass(frozen=True)
class Rule:
    api_group: str
    resource: str
    verbs: tuple[str, ...]
    why: str  # the docs table's sentence
    comment: str = ""  # the comment above the rule in deploy/rbac.yaml, when it opens a group
    resource_names: tuple[str, ...] = ()  # only these objects, when set

    def as_policy_rule(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiGroups": [self.api_group], "resources": [self.resource]}
        if self.resource_names:
            out["resourceNames"] = [*self.resource_names]
        out["verbs"] = [*self.verbs]
        return out


CHILD_VERBS: Final = ("get", "list", "watch", "create", "patch", "delete")

RULES: Final = (
    Rule(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("get", "list", "watch"),
        "kopf discovers that the ModelDeployment CRD exists and notices when it is (re)installed",
        "kopf: discover which resources exist and which namespaces to watch",
    ),
    Rule(
        "",
        "namespaces",
        ("list", "watch"),
        "kopf resolves `--namespace` globs and follows namespaces appearing",
    ),
    Rule(
        "",
        "events",
        ("create",),
        "the operator's Events on ModelDeployments (Created/Updated/Deleted/Ready/Degraded) and "
        "kopf's warnings",
        "kopf's warnings and the operator's own Events on ModelDeployments",
    ),
    Rule(
        GROUP,
        PLURAL,
        ("get", "list", "watch", "patch"),
        "watch the objects; re-read one when a child changes; kopf's handler-state annotations",
        "the watched object: read, and kopf's handler-state annotations",
    ),
    Rule(GROUP, f"{PLURAL}/status", ("patch",), "the status the operator computes"),
    Rule(
        "apps",
        "deployments",
        CHILD_VERBS,
        "server-side apply (`patch`; the API server also checks `create` when the object does "
        "not exist yet), read back, watch for hand edits/deletes, delete the canary track",
        "children: server-side apply (patch; create when the object does not exist yet), read "
        "back, watched for hand edits and deletions, deleted when no longer in the spec",
    ),
    Rule("", "services", CHILD_VERBS, "same, for `<name>`, `<name>-stable`, `<name>-canary`"),
    Rule(
        "autoscaling",
        "horizontalpodautoscalers",
        ("get", "create", "patch", "delete"),
        "apply the HPA; delete it when `spec.autoscaling` is removed (not watched: the drift "
        "timer restores it)",
    ),
    Rule(
        "policy",
        "poddisruptionbudgets",
        ("get", "create", "patch", "delete"),
        "the PodDisruptionBudget per track; delete it with its track or when "
        "`spec.disruptionBudget.enabled` is false (not watched: the resync loop restores it)",
    ),
    Rule(
        "gateway.networking.k8s.io",
        "httproutes",
        CHILD_VERBS,
        "the HTTPRoute `<name>` with `spec.traffic.gateway`: apply, read back its status (the "
        "Gateway's Accepted/ResolvedRefs conditions), watch it, delete it when the block goes",
    ),
    Rule(
        "",
        "secrets",
        ("get",),
        f"only Secrets named `{MLFLOW_SECRET}`: the MLflow tracking token a "
        "`spec.model.mlflow.secretName` of that name holds; never listed, watched or written "
        "(grant other names in your own Role if you must)",
        f"spec.model.mlflow.secretName: the MLflow tracking token, in Secrets named "
        f"{MLFLOW_SECRET} only",
        resource_names=(MLFLOW_SECRET,),
    ),
    Rule(
        "",
        "serviceaccounts",
        ("get", "create", "patch", "delete"),
        "`<name>-server`, the server pods' identity with `spec.auth` (not watched: the drift "
        "timer restores it)",
        "spec.auth: the server pods' ServiceAccount, and its permission to review tokens",
    ),
    Rule(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        CHILD_VERBS,
        "`modeldeploy-auth.<namespace>.<name>` binds `modeldeploy-server-auth` to that "
        "ServiceAccount (TokenReview and SubjectAccessReview are cluster-scoped); watched so one "
        "whose ModelDeployment is gone is removed",
    ),
    Rule(
        "rbac.authorization.k8s.io",
        "clusterroles",
        ("bind",),
        "only `modeldeploy-server-auth`: binding a role needs `bind` on it (or holding its "
        "permissions, which the operator does not)",
        resource_names=(AUTH_ROLE,),
    ),
    Rule(
        "",
        "pods",
        ("list", "watch"),
        "status follows pods: termination messages, image pulls, scheduling",
        "status follows the pods: termination messages, image pulls, scheduling",
    ),
)


def manifests() -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole, ClusterRoleBinding, and the role server pods get with
    spec.auth, in apply order."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": PART_OF},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ROLE, "labels": PART_OF},
            "rules": [r.as_policy_rule() for r in RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ROLE, "labels": PART_OF},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": AUTH_ROLE, "labels": PART_OF},
            "rules": [dict(r) for r in SERVER_AUTH_RULES],
        },
    ]


def _dump(obj: Any, *, flow_lists: bool = False) -> str:
    # Rules read best with their lists inline (`verbs: [get, list]`), metadata in block style.
    style = None if flow_lists else False
    return yaml.safe_dump(obj, sort_keys=False, width=100, default_flow_style=style)


def render() -> str:
    """deploy/rbac.yaml: the manifests, each rule under the comment that explains its group."""
    sa, role, binding, server_role = manifests()
    head = {k: v for k, v in role.items() if k != "rules"}
    lines = [
        "# Generated by `python -m modeldeploy_operator.generate` from "
        "operator/modeldeploy_operator/rbac.py.",
        "# Least privilege: exactly the verbs the operator uses (docs/operations.md says why).",
        _dump(sa).rstrip(),
        "---",
        _dump(head).rstrip(),
        "rules:",
    ]
    for rule in RULES:
        if rule.comment:
            lines += textwrap.wrap(
                rule.comment, 100, initial_indent="  # ", subsequent_indent="  # "
            )
        item = _dump([rule.as_policy_rule()], flow_lists=True).rstrip()
        lines += [f"  {line}" for line in item.splitlines()]
    lines += ["---", _dump(binding).rstrip()]
    lines += [
        "---",
        "# Bound per ModelDeployment with spec.auth to its server pods' ServiceAccount: they may",
        "# review the tokens their callers present, nothing else.",
        _dump(server_role).rstrip(),
    ]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The "RBAC: why each verb" table of docs/operations.md."""
    rows = ["| API group | resource | verbs | why |", "| --- | --- | --- | --- |"]
    for r in RULES:
        group = r.api_group or '""'
        rows.append(f"| {group} | `{r.resource}` | {', '.join(r.verbs)} | {r.why} |")
    return "\n".join(rows) + "\n"
