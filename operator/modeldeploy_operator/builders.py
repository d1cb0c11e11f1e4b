"""Pure functions from a ModelDeployment to the manifests of its children, as plain dicts.

No I/O and no Kubernetes client types: the dicts are exactly what is server-side applied, so a
golden-dict test pins the whole contract of docs/architecture.md (env, port, probes, labels,
security) and a reviewer can read a change to a child as a change to a dict.

Only fields the operator means to own appear here; everything else (defaults, the HPA's writes to
spec.replicas of the ModelDeployment, other controllers' fields) is left to its owner, which is what
makes server-side apply with a single field manager safe.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modeldeploy_operator.api import (
    ANNOTATION_OWNER_UID,
    ANNOTATION_TEMPLATE_HASH,
    API_VERSION,
    COMPONENT,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_OWNER_NAME,
    LABEL_OWNER_NAMESPACE,
    LABEL_TRACK,
    MANAGED_BY,
    ModelDeployment,
    TopologySpread,
)
from modeldeploy_operator.settings import OperatorSettings
from modeldeploy_operator.tracks import (
    ALL_TRACKS,
    STABLE,
    Track,
    TrackPlan,
    deployment_name,
    plan_tracks,
    service_name,
)

Manifest = dict[str, Any]

CONTAINER_NAME = "model-server"
HTTP_PORT = 8080
SERVICE_PORT = 80
# The server's Open Inference Protocol gRPC port (its GRPC_PORT default, KServe's 8081), the same
# number on the Services: gRPC clients are pointed at host:8081 by KServe convention.
GRPC_PORT = 8081
MODEL_DIR = "/mnt/models"
PVC_ROOT = "/mnt/pvc"
GCS_DIR = "/var/secrets/gcs"
GCS_KEY = "gcloud-application-credentials.json"
TERMINATION_LOG = "/dev/termination-log"
RUN_AS = 1000


def selector_labels(name: str, track: str | None = None) -> dict[str, str]:
    """What a Service or a Deployment selects on: never changes, because selectors are immutable."""
    labels = {LABEL_NAME: name, LABEL_INSTANCE: name}
    if track:
        labels[LABEL_TRACK] = track
    return labels


def labels(name: str, track: str | None = None) -> dict[str, str]:
    out = {
        LABEL_NAME: name,
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: COMPONENT,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    if track:
        out[LABEL_TRACK] = track
    return out


def pod_selector(name: str) -> str:
    """status.selector: the pods of both tracks, as a label selector string (sorted, stable)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    # controller=true lets `kubectl get` and the GC see who owns the child; blockOwnerDeletion keeps
    # a foreground delete of the ModelDeployment waiting until its children are gone.
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.name,
        "uid": md.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(md: ModelDeployment, name: str, track: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": md.namespace,
        "labels": labels(md.name, track),
        "ownerReferences": [owner_reference(md)],
    }


def service_url(md: ModelDeployment, cluster_domain: str) -> str:
    return f"http://{md.name}.{md.namespace}.svc.{cluster_domain}"


def _pvc_claim(uri: str) -> str | None:
    if not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


def _env(md: ModelDeployment, track: Track) -> list[dict[str, Any]]:
    uri = track.storage_uri
    env = [
        {"name": "MODEL_NAME", "value": md.name},
        {"name": "STORAGE_URI", "value": uri},
        {"name": "MODEL_FORMAT", "value": track.format},
        {"name": "MODEL_SHA256", "value": track.sha256},
        {"name": "MODEL_DIR", "value": MODEL_DIR},
        {"name": "PVC_ROOT", "value": PVC_ROOT},
        {"name": "MODELDEPLOY_TRACK", "value": track.name},
        {"name": "MODEL_VERSION", "value": track.model_version},
        {"name": "TERMINATION_LOG", "value": TERMINATION_LOG},
        {"name": "MODEL_NAMESPACE", "value": md.namespace},
        {"name": "GRPC_PORT", "value": str(GRPC_PORT)},
    ]
    if track.profile_uri:
        # Before spec.server.env, so an entry there (the way before profileUri) still wins.
        env.append({"name": "PROFILE_URI", "value": track.profile_uri})
    auth = md.spec.auth
    if auth is not None and auth.enabled:
        env += [
            {"name": "AUTH_ENABLED", "value": "true"},
            {"name": "AUTH_CACHE_SECONDS", "value": str(auth.cache_seconds)},
        ]
    creds = md.spec.credentials
    if uri.startswith("gs://") and creds is not None and creds.secret_name:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_DIR}/{GCS_KEY}"})
    server = md.spec.server
    if server is not None and server.env:
        env.extend({"name": e.name, "value": e.value} for e in server.env)
    return env


def _volumes(
    md: ModelDeployment, track: Track, settings: OperatorSettings
) -> tuple[list[Any], list[Any]]:
    uri = track.storage_uri
    model_dir: dict[str, Any] = {}
    if settings.model_dir_size_limit:
        model_dir["sizeLimit"] = settings.model_dir_size_limit
    volumes: list[dict[str, Any]] = [
        {"name": "model-dir", "emptyDir": model_dir},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "model-dir", "mountPath": MODEL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, the only writable path
    ]
    claim = _pvc_claim(uri)
    if claim:
        volumes.append(
            {"name": "model-pvc", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": "model-pvc", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    creds = md.spec.credentials
    if uri.startswith("gs://") and creds is not None and creds.secret_name:
        volumes.append(
            {
                "name": "gcs-credentials",
                "secret": {
                    "secretName": creds.secret_name,
                    "items": [{"key": GCS_KEY, "path": GCS_KEY}],
                },
            }
        )
        mounts.append({"name": "gcs-credentials", "mountPath": GCS_DIR, "readOnly": True})
    return volumes, mounts


def _resources(md: ModelDeployment, settings: OperatorSettings) -> dict[str, Any]:
    res = md.spec.resources
    if res is None:
        # A CPU request is what HPA utilization is measured against; without one the HPA is blind.
        return {
            "requests": {
                "cpu": settings.default_cpu_request,
                "memory": settings.default_memory_request,
            }
        }
    out: dict[str, Any] = {}
    if res.requests:
        out["requests"] = dict(res.requests)
    if res.limits:
        out["limits"] = dict(res.limits)
    return out


def _probes(settings: OperatorSettings) -> dict[str, Any]:
    startup_period = 5
    return {
        # /healthz answers as soon as the process listens, also while the model downloads, so the
        # startup budget is the only clock on a slow download and liveness never kills it.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": startup_period,
            "timeoutSeconds": 2,
            "failureThreshold": max(1, settings.startup_budget_seconds // startup_period),
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # /ready is 503 until the model is in memory: no request reaches a pod that can't answer.
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
            "successThreshold": 1,
        },
    }


def deployment(md: ModelDeployment, track: Track, settings: OperatorSettings) -> Manifest:
    """Deployment ``<name>-<track>`` running the server for one track's model."""
    server = md.spec.server
    image = (server.image if server else None) or settings.server_image
    pull = (server.image_pull_policy if server else None) or settings.image_pull_policy
    volumes, mounts = _volumes(md, track, settings)
    creds = md.spec.credentials

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": pull,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": _env(md, track),
        "resources": _resources(md, settings),
        **_probes(settings),
        # Let the endpoints controller and kube-proxy remove the pod before the server stops
        # accepting connections: zero dropped requests during a rollout.
        "lifecycle": {"preStop": {"sleep": {"seconds": settings.drain_seconds}}},
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if creds is not None and creds.secret_name:
        container["envFrom"] = [{"secretRef": {"name": creds.secret_name}}]

    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # Without spec.auth the server never talks to the API server, and a mounted token would
        # only be attack surface; with it, the token is what its reviews authenticate with.
        "automountServiceAccountToken": md.spec.auth_enabled,
        # Service links inject <SVC>_PORT-style variables of every Service in the namespace into a
        # server configured purely by env: noise at best, a collision at worst.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    account = server_service_account(md)
    if account:
        pod_spec["serviceAccountName"] = account
    spread = topology_spread(md, track.name)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread

    template: Manifest = {
        "metadata": {
            "labels": labels(md.name, track.name),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(HTTP_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }
    template["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] = template_hash(template)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md, track.deployment, track.name),
        "spec": {
            "replicas": track.replicas,
            "selector": {"matchLabels": selector_labels(md.name, track.name)},
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": settings.progress_deadline_seconds,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "template": template,
        },
    }


def template_hash(template: Manifest) -> str:
    """A short digest of a pod template as built (before the hash annotation is added)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def service(md: ModelDeployment, track: str | None) -> Manifest:
    """Service ``<name>`` over both tracks (track None) or ``<name>-<track>`` over one."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, service_name(md.name, track), track),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md.name, track),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"},
                # h2c: cleartext HTTP/2, so meshes and Gateway implementations that read
                # appProtocol proxy it as gRPC. Not routed by the HTTPRoute (REST only).
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


DEFAULT_SPREAD = (
    TopologySpread(topology_key="topology.kubernetes.io/zone"),
    TopologySpread(topology_key="kubernetes.io/hostname"),
)


def topology_spread(md: ModelDeployment, track: str) -> list[Manifest]:
    """Spread each track's pods over zones and nodes, preferring (not requiring) it, so one node
    or zone going away never takes every replica; counted per rollout revision, so a rolling
    update's new pods spread among themselves too."""
    wanted = DEFAULT_SPREAD if md.spec.topology_spread is None else md.spec.topology_spread
    return [
        {
            "maxSkew": s.max_skew,
            "topologyKey": s.topology_key,
            "whenUnsatisfiable": s.when_unsatisfiable,
            "labelSelector": {"matchLabels": selector_labels(md.name, track)},
            "matchLabelKeys": ["pod-template-hash"],
        }
        for s in wanted
    ]


def pod_disruption_budget(md: ModelDeployment, track: Track) -> Manifest | None:
    """PodDisruptionBudget ``<name>-<track>``: a drain evicts one pod of a track at a time by
    default and waits while one of its pods is not ready. Pods that never became ready may always
    be evicted (a crash-looping model must not block a node drain)."""
    budget = md.spec.disruption_budget
    if budget is not None and not budget.enabled:
        return None
    if budget is not None and budget.min_available is not None:
        limit: Manifest = {"minAvailable": budget.min_available}
    else:
        limit = {"maxUnavailable": 1 if budget is None else budget.max_unavailable or 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md, track.deployment, track.name),
        "spec": {
            **limit,
            "selector": {"matchLabels": selector_labels(md.name, track.name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


GATEWAY_GROUP = "gateway.networking.k8s.io"
TRACK_HEADER = "X-Modeldeploy-Track"


def route_weights(tracks: TrackPlan, ready_tracks: frozenset[str]) -> dict[str, int]:
    """Exact weights of the default rule: the spec's percent per track, but a track without a
    ready pod gets 0 and its share goes to stable (a weight on nothing would fail requests)."""
    weights = {t.name: t.requested_percent for t in tracks.active}
    for t in tracks.active:
        if t.name != STABLE and t.name not in ready_tracks:
            weights[STABLE] += weights[t.name]
            weights[t.name] = 0
    return weights


def httproute(md: ModelDeployment, tracks: TrackPlan, ready_tracks: frozenset[str]) -> Manifest:
    """HTTPRoute ``<name>``: one rule per track pinned by the X-Modeldeploy-Track request header
    (header matches win over the plain path match), then the weighted split."""
    gateway = md.spec.traffic.gateway if md.spec.traffic else None
    if gateway is None:
        raise ValueError("no HTTPRoute without spec.traffic.gateway")
    root = {"type": "PathPrefix", "value": "/"}

    def backend(track: str, weight: int) -> Manifest:
        name = service_name(md.name, track)
        return {
            "group": "",
            "kind": "Service",
            "name": name,
            "port": SERVICE_PORT,
            "weight": weight,
        }

    pinned = [
        {
            "matches": [
                {
                    "path": root,
                    "headers": [{"type": "Exact", "name": TRACK_HEADER, "value": t.name}],
                }
            ],
            "backendRefs": [backend(t.name, 1)],
        }
        for t in reversed(tracks.active)
    ]
    weights = route_weights(tracks, ready_tracks)
    split = {
        "matches": [{"path": root}],
        "backendRefs": [backend(t.name, weights[t.name]) for t in tracks.active],
    }
    spec: Manifest = {
        "parentRefs": [
            {
                "group": GATEWAY_GROUP,
                "kind": "Gateway",
                "name": ref.name,
                "namespace": ref.namespace or md.namespace,
                **({"sectionName": ref.section_name} if ref.section_name else {}),
            }
            for ref in gateway.parent_refs
        ],
        "rules": [*pinned, split],
    }
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": _metadata(md, md.name, None),
        "spec": spec,
    }


AUTH_CLUSTER_ROLE = "modeldeploy-server-auth"  # deploy/rbac.yaml: create tokenreviews + SARs


def own_service_account_name(md_name: str) -> str:
    return f"{md_name}-server"


def server_service_account(md: ModelDeployment) -> str | None:
    """The server pods' ServiceAccount: the user's (workload identity), else the operator's own
    when spec.auth needs one, else none (the namespace's default, with no token mounted)."""
    creds = md.spec.credentials
    if creds is not None and creds.service_account_name:
        return creds.service_account_name
    return own_service_account_name(md.name) if md.spec.auth_enabled else None


def service_account(md: ModelDeployment) -> Manifest:
    """ServiceAccount ``<name>-server``, which the auth ClusterRoleBinding names."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(md, own_service_account_name(md.name), None),
    }


def auth_binding_name(namespace: str, md_name: str) -> str:
    return f"modeldeploy-auth.{namespace}.{md_name}"


def auth_binding(md: ModelDeployment) -> Manifest:
    """ClusterRoleBinding that lets the server pods' ServiceAccount create TokenReviews and
    SubjectAccessReviews (both are cluster-scoped, so a RoleBinding cannot grant them). Being
    cluster-scoped it cannot be owned by the ModelDeployment: the owner labels and uid say whose
    it is, and the operator removes it once that ModelDeployment is gone (``plan.orphan_reason``).
    """
    account = server_service_account(md)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": auth_binding_name(md.namespace, md.name),
            "labels": {
                **labels(md.name),
                LABEL_OWNER_NAMESPACE: md.namespace,
                LABEL_OWNER_NAME: md.name,
            },
            "annotations": {ANNOTATION_OWNER_UID: md.uid},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": AUTH_CLUSTER_ROLE,
        },
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": md.namespace}],
    }


def hpa(md: ModelDeployment) -> Manifest:
    """HPA ``<name>`` scaling the ModelDeployment itself through its scale subresource."""
    auto = md.spec.autoscaling
    if auto is None:
        raise ValueError("no HPA without spec.autoscaling")
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(md, md.name, None),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": md.name},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": auto.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def desired_children(
    md: ModelDeployment,
    settings: OperatorSettings,
    tracks: TrackPlan | None = None,
    ready_tracks: frozenset[str] = frozenset(),
) -> list[Manifest]:
    """Every child the ModelDeployment should have right now, in apply order. ``ready_tracks``:
    the tracks that have a ready pod (route weights go only to those)."""
    plan = tracks or plan_tracks(md)
    out: list[Manifest] = []
    for t in plan.active:
        out.append(deployment(md, t, settings))
        if t.name == STABLE:
            out.append(service(md, None))  # the Service over every track, right after stable's
        out.append(service(md, t.name))
        pdb = pod_disruption_budget(md, t)
        if pdb is not None:
            out.append(pdb)
    if md.spec.autoscaling is not None:
        out.append(hpa(md))
    if md.spec.traffic is not None and md.spec.traffic.gateway is not None:
        out.append(httproute(md, plan, ready_tracks))
    if md.spec.auth_enabled:
        creds = md.spec.credentials
        if creds is None or not creds.service_account_name:
            out.append(service_account(md))
        out.append(auth_binding(md))
    return out


def possible_children(md_name: str, namespace: str) -> list[tuple[str, str]]:
    """(kind, name) of every child the operator may ever create for a ModelDeployment: what to read
    before planning and what to delete when it is no longer desired."""
    out: list[tuple[str, str]] = []
    for t in ALL_TRACKS:
        out.append(("Deployment", deployment_name(md_name, t)))
        if t == STABLE:
            out.append(("Service", service_name(md_name, None)))
        out.append(("Service", service_name(md_name, t)))
        out.append(("PodDisruptionBudget", deployment_name(md_name, t)))
    out.append(("HorizontalPodAutoscaler", md_name))
    out.append(("HTTPRoute", md_name))
    out.append(("ServiceAccount", own_service_account_name(md_name)))
    out.append(("ClusterRoleBinding", auth_binding_name(namespace, md_name)))
    return out
