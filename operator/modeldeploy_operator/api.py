"""The ModelDeployment API as typed pydantic models: the single source of the CRD schema.

The CRD in ``crds/`` is generated from these classes (``crdgen``), the API reference in
``docs/api.md`` from that CRD (``docgen``), and the operator parses every object it reconciles with
them. Keeping one definition means the admission schema, the docs and the code that acts on a field
can never disagree about its name, range or meaning.

Cross-field rules that the API server can enforce at admission are attached as CEL rules
(``x-kubernetes-validations``) through ``json_schema_extra``; each names the field it is about and
what is expected, because a rejection is the first documentation a user reads.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md",)

# The label contract of docs/architecture.md.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TRACK = f"{GROUP}/track"
# On each pod template: a digest of the rest of the template, so status can tell the pods of the
# current template from old ones still crash-looping on a model that was already replaced.
ANNOTATION_TEMPLATE_HASH = f"{GROUP}/template-hash"
# Cluster-scoped children (the auth ClusterRoleBinding) cannot carry an ownerReference to a
# namespaced ModelDeployment; these say whose they are, so the operator can tell its own from a
# stranger's and remove one whose ModelDeployment is gone.
ANNOTATION_OWNER_UID = f"{GROUP}/owner-uid"
LABEL_OWNER_NAMESPACE = f"{GROUP}/owner-namespace"
LABEL_OWNER_NAME = f"{GROUP}/owner-name"
MANAGED_BY = "modeldeploy-operator"
COMPONENT = "predictor"

# Env names the operator sets on the server container; spec.server.env may not override them
# (the CEL rule below), because a silently overridden STORAGE_URI would make status lie.
RESERVED_ENV = (
    "MODEL_NAME",
    "STORAGE_URI",
    "MODEL_FORMAT",
    "MODEL_SHA256",
    "MODEL_DIR",
    "PVC_ROOT",
    "MODELDEPLOY_TRACK",
    "MODEL_VERSION",
    "TERMINATION_LOG",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "MODEL_NAMESPACE",
    # the container port named grpc must be where the server listens
    "GRPC_PORT",
    "AUTH_ENABLED",
    "AUTH_CACHE_SECONDS",
    # where the reviews go and with which identity: overriding them would let a spec.server.env
    # entry point spec.auth at another endpoint
    "AUTH_API_SERVER",
    "AUTH_TOKEN_FILE",
    "AUTH_CA_FILE",
)

# storageUri schemes the server can read (docs/architecture.md). pvc:// needs a claim and a path.
# models:/ is an MLflow Model Registry reference the operator resolves (spec.model.mlflow).
REGISTRY_URI_PATTERN = r"models:/[^/@\s]+(/([0-9]+|latest)|@[A-Za-z0-9_-]+)"
STORAGE_URI_PATTERN = (
    r"^((s3|gs)://[^/]+(/.*)?|https?://[^/]+/.*|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+|"
    r"file:///.+|" + REGISTRY_URI_PATTERN + ")$"
)
# A drift reference profile is a file the server downloads itself: no registry reference.
PROFILE_URI_PATTERN = (
    r"^((s3|gs)://[^/]+/.+|https?://[^/]+/.+|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+|file:///.+)$"
)
REGISTRY_PREFIX = "models:/"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A resource.Quantity, as Kubernetes' own CRDs declare it: `cpu: 1` and `cpu: "500m"` both work.
QUANTITY_SCHEMA: JsonDict = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "x-kubernetes-int-or-string": True,
}
IMAGE_PATTERN = r"^[^\s]+$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

URI_HELP = (
    "s3://<bucket>/<key>, gs://<bucket>/<object>, http(s)://<host>/<file>, "
    "pvc://<claim>/<path>, an MLflow Model Registry reference models:/<name>/<version>, "
    "models:/<name>/latest or models:/<name>@<alias> (needs spec.model.mlflow), "
    "or file:///<path> (local development only)"
)


# Go-style durations as Argo Rollouts and Flagger take them: 30s, 2m, 1h30m, 500ms.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration matching DURATION_PATTERN (the schema has checked the form)."""
    seconds = 0.0
    for number, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text):
        seconds += float(number) * _DURATION_UNITS[unit]
    return seconds


def _validations(*rules: JsonDict) -> JsonDict:
    items: list[JsonValue] = [*rules]
    return {"x-kubernetes-validations": items}


def _cel(
    rule: str,
    message: str,
    field_path: str | None = None,
    reason: str = "FieldValueInvalid",
) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message, "reason": reason}
    if field_path:
        out["fieldPath"] = field_path
    return out


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are rejected in code too."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True
    )


class ModelFormat(StrEnum):
    """How the server loads the artifact."""

    SKLEARN = "sklearn"
    SKOPS = "skops"
    MLFLOW = "mlflow"


def _uri_rules(field: str) -> list[JsonDict]:
    """The rules every storageUri field shares: a sentence naming the schemes (the pattern's own
    rejection only quotes a regular expression), and what a registry reference needs."""
    return [
        _cel(
            "!has(self.storageUri) || self.storageUri.matches('"
            + STORAGE_URI_PATTERN.replace("\\", "\\\\")
            + "')",
            f"{field}.storageUri must be one of " + URI_HELP,
            ".storageUri",
        ),
        _cel(
            "!has(self.storageUri) || !self.storageUri.startsWith('models:/') || "
            "!has(self.format) || self.format != 'skops'",
            f"{field}.format skops can't load an MLflow registry model: leave format unset "
            "(or mlflow) for a models:/ storageUri",
            ".format",
        ),
        _cel(
            "!has(self.storageUri) || !self.storageUri.startsWith('models:/') || "
            "!has(self.sha256) || self.storageUri.matches('^models:/[^/@]+/[0-9]+$')",
            f"{field}.sha256 pins one artifact, but {field}.storageUri names a reference that "
            "moves (@alias or /latest): pin a version (models:/<name>/<version>) or drop sha256",
            ".sha256",
        ),
    ]


class MlflowSpec(_Model):
    """The MLflow tracking server whose Model Registry resolves a models:/ storageUri."""

    tracking_uri: str = Field(
        description=(
            "Base URL of the MLflow tracking server, e.g. http://mlflow.mlops:5000. The "
            "operator asks its REST API which version a models:/ reference names and where "
            "that version's artifacts are; the pods then download the artifacts directly "
            "(run the server with an s3:// or gs:// artifact root and --no-serve-artifacts)."
        ),
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        max_length=2048,
    )
    secret_name: str | None = Field(
        None,
        description=(
            "A Secret in the ModelDeployment's namespace with MLFLOW_TRACKING_TOKEN (sent as a "
            "bearer token) or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (basic "
            "auth), read by the operator only. Omit for a tracking server without auth."
        ),
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
    )
    refresh_interval: str = Field(
        "1m",
        description=(
            "How often the operator asks the registry again what an @alias or /latest "
            "reference names; a new version is rolled out (through spec.rollout when set). "
            "The annotation modeldeploy.io/refresh-model=<any new value> asks at once."
        ),
        pattern=DURATION_PATTERN,
        max_length=32,
    )


class ModelSpec(_Model):
    """The model version the stable track serves."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            *_uri_rules("spec.model"),
            _cel(
                "!has(self.storageUri) || !self.storageUri.startsWith('models:/') || "
                "has(self.mlflow)",
                "spec.model.storageUri is an MLflow registry reference: set "
                "spec.model.mlflow.trackingUri to the tracking server that resolves it",
                ".mlflow",
            ),
        )
    )

    storage_uri: str = Field(
        description=(
            "Where the server downloads the model artifact from when a pod starts: "
            + URI_HELP
            + "."
            " Changing it rolls the stable track out to the new version (pods become ready only "
            "once the new model is loaded)."
        ),
        pattern=STORAGE_URI_PATTERN,
        max_length=2048,
    )
    format: ModelFormat = Field(
        ModelFormat.SKLEARN,
        description=(
            "Serialization of the artifact: `sklearn` (joblib/pickle; only load artifacts you "
            "trust), `skops` (safe format with an allow-list of types) or `mlflow` (a "
            "directory mlflow.sklearn.log_model wrote, read through its MLmodel file; a "
            "directory with an MLmodel file is read that way under `sklearn` too, and a "
            "models:/ storageUri always is)."
        ),
    )
    sha256: str | None = Field(
        None,
        description=(
            "Expected lower-case hex SHA-256 of the artifact. When set, the server refuses an "
            "artifact with another digest and the ModelDeployment reports Degraded with reason "
            "ModelLoadFailed. Its first 12 characters are the served model_version."
        ),
        pattern=SHA256_PATTERN,
    )
    mlflow: MlflowSpec | None = Field(
        None,
        description=(
            "The MLflow tracking server that resolves a models:/ storageUri (this one and "
            "spec.canary's); required with one."
        ),
    )
    profile_uri: str | None = Field(
        None,
        description=(
            "The drift reference profile (a profile.json `modeldeploy-profile` wrote) for this "
            "model: s3://, gs://, http(s)://, pvc:// or file:// URI of the file. Unset: the "
            "server looks for one beside the model. Changing it is a change of what the track "
            "serves (a rolling update, or a progressive rollout with spec.rollout). "
            "docs/monitoring.md."
        ),
        pattern=PROFILE_URI_PATTERN,
        max_length=2048,
    )


class CredentialsSpec(_Model):
    """How the server authenticates to the model store."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "has(self.secretName) || has(self.serviceAccountName)",
                "spec.credentials needs secretName (a Secret with AWS_* or GCS keys) "
                "or serviceAccountName (workload identity); remove spec.credentials "
                "for a public store",
            )
        )
    )

    secret_name: str | None = Field(
        None,
        description=(
            "A Secret in the ModelDeployment's namespace attached to the server with envFrom: "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN, "
            "AWS_DEFAULT_REGION, AWS_ENDPOINT_URL (or S3_ENDPOINT_URL), S3_USE_HTTPS, "
            "S3_VERIFY_SSL. For gs:// URIs its key `gcloud-application-credentials.json` is "
            "mounted at /var/secrets/gcs/ and GOOGLE_APPLICATION_CREDENTIALS points at it."
        ),
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
    )
    service_account_name: str | None = Field(
        None,
        description=(
            "A ServiceAccount the server pods run as, for workload identity (IRSA, GKE Workload "
            "Identity). Without it the pods run as `default` with no API token mounted."
        ),
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
    )


class AutoscalingSpec(_Model):
    """A HorizontalPodAutoscaler that scales the ModelDeployment through its scale subresource."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "self.minReplicas <= self.maxReplicas",
                "spec.autoscaling.minReplicas must be less than or equal to "
                "spec.autoscaling.maxReplicas",
                ".minReplicas",
            )
        )
    )

    min_replicas: int = Field(
        1,
        ge=1,
        le=1000,
        description="Lowest total replica count (both tracks) the autoscaler may set.",
    )
    max_replicas: int = Field(
        ge=1,
        le=1000,
        description="Highest total replica count (both tracks) the autoscaler may set.",
    )
    target_cpu_utilization_percentage: int = Field(
        80,
        alias="targetCPUUtilizationPercentage",  # the autoscaling/v1 spelling users know
        ge=1,
        le=1000,
        description=(
            "Average CPU utilization, in percent of the pods' CPU request, that the autoscaler "
            "keeps. Needs a CPU request (spec.resources.requests.cpu, defaulted by the operator) "
            "and a metrics server in the cluster."
        ),
    )


class CanarySpec(_Model):
    """A second model version served beside the stable one."""

    model_config = ConfigDict(json_schema_extra=_validations(*_uri_rules("spec.canary")))

    storage_uri: str = Field(
        description=(
            "Where the canary's model artifact is: " + URI_HELP + ". Must differ from "
            "spec.model.storageUri. To promote the canary, copy this value (and sha256) into "
            "spec.model and remove spec.canary."
        ),
        pattern=STORAGE_URI_PATTERN,
        max_length=2048,
    )
    format: ModelFormat | None = Field(
        None, description="Serialization of the canary artifact; defaults to spec.model.format."
    )
    sha256: str | None = Field(
        None,
        description="Expected lower-case hex SHA-256 of the canary artifact.",
        pattern=SHA256_PATTERN,
    )
    profile_uri: str | None = Field(
        None,
        description=(
            "The canary model's drift reference profile (as spec.model.profileUri); unset: "
            "the server looks for one beside the canary's model."
        ),
        pattern=PROFILE_URI_PATTERN,
        max_length=2048,
    )
    traffic_percent: int = Field(
        ge=0,
        le=100,
        description=(
            "Share of spec.replicas, in percent, that run the canary. Without a service mesh the "
            "traffic split follows the replica split: replicas are divided proportionally "
            "(nearest whole pod), with at least one canary pod while the percent is above 0 and "
            "one stable pod while it is below 100 (when spec.replicas is at least 2). "
            "status.canary.trafficPercent reports the effective share of ready pods."
        ),
    )


class ResourcesSpec(_Model):
    """Compute resources of each server container."""

    requests: dict[str, str | int] | None = Field(
        None,
        description=(
            "Minimum resources per pod, e.g. {cpu: 250m, memory: 512Mi}. "
            "When spec.resources is omitted the operator requests cpu 250m and memory 512Mi."
        ),
        json_schema_extra={"additionalProperties": QUANTITY_SCHEMA},
    )
    limits: dict[str, str | int] | None = Field(
        None,
        description="Maximum resources per pod, e.g. {cpu: '1', memory: 1Gi}.",
        json_schema_extra={"additionalProperties": QUANTITY_SCHEMA},
    )


class EnvVar(_Model):
    """An extra environment variable for the server (a serving knob such as MAX_BATCH_SIZE)."""

    name: str = Field(
        description="Variable name; may not be one the operator sets (see spec.server.env).",
        pattern=ENV_NAME_PATTERN,
        max_length=256,
    )
    value: str = Field("", description="Literal value.", max_length=32768)


class ServerSpec(_Model):
    """Overrides for the generic model server container."""

    image: str | None = Field(
        None,
        description=(
            "Server image; defaults to the operator's MODELDEPLOY_SERVER_IMAGE. Pin a tag or "
            "digest: `:latest` is rejected so a rollout is always reproducible."
        ),
        pattern=IMAGE_PATTERN,
        max_length=512,
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None,
        description="Image pull policy; defaults to the operator's MODELDEPLOY_IMAGE_PULL_POLICY.",
    )
    env: list[EnvVar] | None = Field(
        None,
        description=(
            "Extra environment variables (server knobs: MAX_BATCH_SIZE, MAX_BATCH_WAIT_MS, "
            "PREDICT_PROBA, LOG_LEVEL, ...). The contract variables ("
            + ", ".join(RESERVED_ENV)
            + ") "
            "are set by the operator and may not be overridden."
        ),
        max_length=64,
        # A map keyed by name: the API server rejects a duplicate name, naming the entry.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!has(self.image) || !self.image.endsWith(':latest')",
                "spec.server.image must pin a version (a tag other than :latest, or a "
                "digest) so every pod of a rollout runs the same server",
                ".image",
            ),
            _cel(
                "!has(self.env) || self.env.all(e, !(e.name in "
                + "["
                + ", ".join(f"'{n}'" for n in RESERVED_ENV)
                + "]))",
                "spec.server.env may not set "
                + ", ".join(RESERVED_ENV)
                + ": the operator sets them from spec.model and spec.canary",
                ".env",
            ),
        )
    )


# Gateway API names (RFC 1123 subdomain / label) and hostnames, as the Gateway API CRDs declare
# them, so a typo is refused at admission rather than by the Gateway later.
SECTION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PERCENT_OR_COUNT_PATTERN = r"^([0-9]+|[0-9]+%)$"
INT_OR_PERCENT_SCHEMA: JsonDict = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": PERCENT_OR_COUNT_PATTERN,
    "x-kubernetes-int-or-string": True,
}


class GatewayParentRef(_Model):
    """A Gateway (and optionally one of its listeners) the HTTPRoute attaches to."""

    name: str = Field(
        description="Name of the Gateway.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253
    )
    namespace: str | None = Field(
        None,
        description="Namespace of the Gateway; defaults to the ModelDeployment's namespace.",
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=63,
    )
    section_name: str | None = Field(
        None,
        description="Listener of the Gateway to attach to; all listeners when omitted.",
        pattern=SECTION_NAME_PATTERN,
        max_length=253,
    )


class GatewayTrafficSpec(_Model):
    """External access and exact weights through a Gateway API implementation."""

    parent_refs: list[GatewayParentRef] = Field(
        description=(
            "Gateways the HTTPRoute <name> attaches to (Gateway API parentRefs). The route's "
            "weights follow spec.canary.trafficPercent exactly; the request header "
            "X-Modeldeploy-Track: stable|canary pins one track."
        ),
        min_length=1,
        max_length=8,
    )
    hostnames: list[str] | None = Field(
        None,
        description=(
            "Host names the route answers for; the first becomes status.url. Omit to match "
            "every host the listener accepts."
        ),
        max_length=16,
        json_schema_extra={
            "items": {
                "type": "string",
                "pattern": HOSTNAME_PATTERN,
                "maxLength": 253,
                "description": "A host name, e.g. iris.example.com or *.models.example.com.",
            }
        },
    )


class TrafficSpec(_Model):
    """How traffic reaches the tracks beyond the in-cluster Service."""

    gateway: GatewayTrafficSpec | None = Field(
        None,
        description=(
            "Route external traffic through a Gateway API Gateway with an HTTPRoute named like "
            "the ModelDeployment (needs the Gateway API CRDs and an implementation in the "
            "cluster). Without it the Service <name> splits traffic by ready pods."
        ),
    )


class DisruptionBudgetSpec(_Model):
    """The PodDisruptionBudget of each track (node drains, cluster upgrades)."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!(has(self.minAvailable) && has(self.maxUnavailable))",
                "spec.disruptionBudget takes minAvailable or maxUnavailable, not both",
            )
        )
    )

    enabled: bool = Field(
        True, description="false: no PodDisruptionBudget for this ModelDeployment."
    )
    max_unavailable: int | str | None = Field(
        None,
        description=(
            "Pods of a track a voluntary disruption may take at once (count or percent). "
            "Default when neither field is set: 1."
        ),
        json_schema_extra=INT_OR_PERCENT_SCHEMA,
    )
    min_available: int | str | None = Field(
        None,
        description=(
            "Pods of a track that must stay available during a voluntary disruption (count or "
            "percent); instead of maxUnavailable. A value equal to the track's replicas blocks "
            "node drains."
        ),
        json_schema_extra=INT_OR_PERCENT_SCHEMA,
    )


class TopologySpread(_Model):
    """One topology spread constraint; the operator adds the track's own label selector."""

    topology_key: str = Field(
        description="Node label to spread over, e.g. topology.kubernetes.io/zone.",
        pattern=r"^[^\s]+$",
        max_length=317,
    )
    max_skew: int = Field(1, ge=1, le=1000, description="Largest allowed difference in pods.")
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        "ScheduleAnyway",
        description="ScheduleAnyway prefers spreading; DoNotSchedule requires it.",
    )


class AuthSpec(_Model):
    """Who may call the model: Kubernetes identities and RBAC, checked by the server."""

    enabled: bool = Field(
        True,
        description=(
            "Require a bearer token on every inference and metadata request. The server has the "
            "API server validate it (TokenReview) and authorize it (SubjectAccessReview for verb "
            "`create` on `modeldeployments/predict` of this ModelDeployment); a Role granting "
            "that is what lets a ServiceAccount or user call the model. 401 without a valid "
            "token, 403 when not allowed. /healthz, /ready, /v2/health/* and /metrics stay open."
        ),
    )
    cache_seconds: int = Field(
        10,
        ge=0,
        le=300,
        description=(
            "How long the server remembers a token's review (allowed or denied), so the hot path "
            "makes no API call; a revoked permission takes effect within this time."
        ),
    )


class PauseSpec(_Model):
    """Wait at the current weight: for a while, or until a person promotes."""

    duration: str | None = Field(
        None,
        description=(
            "How long to stay at the current weight (e.g. 30s, 2m, 1h); the analysis keeps "
            "judging meanwhile. Omitted: wait until `kubectl modeldeploy promote <name>` (or the "
            "annotation modeldeploy.io/promote)."
        ),
        pattern=DURATION_PATTERN,
        max_length=32,
    )


class RolloutStep(_Model):
    """One step of a progressive rollout: set the canary's weight, or pause."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "has(self.setWeight) != has(self.pause)",
                "each spec.rollout.steps entry is exactly one of setWeight or pause",
            )
        )
    )

    set_weight: int | None = Field(
        None,
        ge=0,
        le=100,
        description=(
            "Percent of traffic the new model gets from this step on: exact route weights with "
            "spec.traffic.gateway, else the share of spec.replicas running it."
        ),
    )
    pause: PauseSpec | None = Field(None, description="Stay at the current weight.")


class AnalysisSpec(_Model):
    """How the new model is judged against the one serving before, from the pods' own metrics."""

    enabled: bool = Field(
        True,
        description=(
            "false: steps advance on time and commands only, nothing is measured. The operator "
            "scrapes every serving pod's /metrics itself (no Prometheus needed)."
        ),
    )
    interval: str = Field(
        "30s",
        description=(
            "How often the canary is judged: each check is computed over the requests of the "
            "last interval (counter deltas between two scrapes)."
        ),
        pattern=DURATION_PATTERN,
        max_length=32,
    )
    failure_limit: int = Field(
        1,
        ge=0,
        le=100,
        description=(
            "Failed intervals tolerated before the rollout aborts: the rollout aborts on failed "
            "interval number failureLimit+1 (default 1: the second failed interval). An "
            "inconclusive interval (too few requests) is not a failure."
        ),
    )
    min_requests: int = Field(
        20,
        ge=0,
        le=1_000_000,
        description=(
            "Inference requests the canary (and, for the relative checks, stable) must have "
            "served in an interval for its checks to count; fewer makes the interval "
            "inconclusive."
        ),
    )
    max_error_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest share of the canary's inference requests answered with a 5xx.",
    )
    max_latency_p99_seconds: float | None = Field(
        None,
        gt=0,
        description="Largest p99 latency of the canary's inference requests, in seconds.",
    )
    max_latency_p99_ratio: float | None = Field(
        2.0,
        gt=0,
        description=(
            "Largest canary p99 latency as a multiple of stable's over the same interval "
            "(from the servers' latency histograms)."
        ),
    )
    max_prediction_shift: float | None = Field(
        0.1,
        ge=0,
        le=1,
        description=(
            "Largest Jensen-Shannon divergence (base 2: 0 same, 1 disjoint) between the "
            "canary's and stable's predicted-class distributions (regressors: predicted-value "
            "histograms) over the interval, on the live traffic each received."
        ),
    )


def _default_steps() -> list[RolloutStep]:
    return [
        RolloutStep(set_weight=10),
        RolloutStep(pause=PauseSpec(duration="1m")),
        RolloutStep(set_weight=50),
        RolloutStep(pause=PauseSpec(duration="1m")),
    ]


class RolloutSpec(_Model):
    """How a change of spec.model reaches production: steps of weight, judged by analysis."""

    steps: list[RolloutStep] = Field(
        default_factory=_default_steps,
        description=(
            "What to do, in order, with the new model running as a canary beside the one that "
            "served before. After the last step the new model is promoted: the stable track "
            "moves to it (maxUnavailable 0), then the canary track goes away. Default: "
            "setWeight 10, pause 1m, setWeight 50, pause 1m."
        ),
        max_length=32,
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec,
        description=(
            "Checks per interval of the canary against stable; a failed check past failureLimit "
            "aborts the rollout (weight 0 at once, Degraded names the check)."
        ),
    )


class ModelDeploymentSpec(_Model):
    """The desired state: one model served by a Deployment per track, a Service and an HPA."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!has(self.canary) || self.canary.storageUri != self.model.storageUri",
                "spec.canary.storageUri must differ from spec.model.storageUri: a canary "
                "serves another model version (to promote it, move its storageUri into "
                "spec.model and remove spec.canary)",
                ".canary.storageUri",
            ),
            _cel(
                "!has(self.canary) || !self.canary.storageUri.startsWith('models:/') || "
                "has(self.model.mlflow)",
                "spec.canary.storageUri is an MLflow registry reference: set "
                "spec.model.mlflow.trackingUri to the tracking server that resolves it",
                ".canary.storageUri",
            ),
            _cel(
                "!(has(self.rollout) && has(self.canary))",
                "spec.rollout and spec.canary can't be combined: spec.rollout runs a changed "
                "spec.model as its own canary; use spec.canary for a fixed A/B split without "
                "spec.rollout",
                ".rollout",
            ),
        )
    )

    model: ModelSpec = Field(description="The model version the stable track serves.")
    credentials: CredentialsSpec | None = Field(
        None,
        description="How the server authenticates to the model store; omit for a public store.",
    )
    replicas: int = Field(
        1,
        ge=0,
        le=1000,
        description=(
            "Total server pods across both tracks, divided between stable and canary by "
            "spec.canary.trafficPercent. Served by the scale subresource (`kubectl scale md/x "
            "--replicas=N`); when spec.autoscaling is set the HPA owns this field. 0 stops "
            "serving (the ModelDeployment reports Ready=False, reason ScaledToZero)."
        ),
    )
    autoscaling: AutoscalingSpec | None = Field(
        None,
        description=(
            "Scale spec.replicas on CPU with an autoscaling/v2 HPA named like the "
            "ModelDeployment; removing this block removes the HPA."
        ),
    )
    canary: CanarySpec | None = Field(
        None,
        description=(
            "A second model version served beside spec.model by its own Deployment "
            "<name>-canary and Service <name>-canary; removing the block removes both."
        ),
    )
    resources: ResourcesSpec | None = Field(
        None, description="Compute resources of each server container."
    )
    server: ServerSpec | None = Field(
        None, description="Overrides for the model server container (image, pull policy, env)."
    )
    auth: AuthSpec | None = Field(
        None,
        description=(
            "Access control on predictions (off when omitted). The operator gives the server "
            "pods a ServiceAccount allowed to create exactly TokenReviews and "
            "SubjectAccessReviews."
        ),
    )
    traffic: TrafficSpec | None = Field(
        None,
        description="External access and exact traffic weights (Gateway API); optional.",
    )
    disruption_budget: DisruptionBudgetSpec | None = Field(
        None,
        description=(
            "The PodDisruptionBudget the operator keeps per track (default: maxUnavailable 1, "
            "so a node drain takes one pod of a track at a time and waits while one is not "
            "ready)."
        ),
    )
    rollout: RolloutSpec | None = Field(
        None,
        description=(
            "Progressive rollout of a changed spec.model: the new model runs as a canary beside "
            "the one that served before, goes through spec.rollout.steps judged by analysis, "
            "and is promoted or aborted. Without it a changed spec.model is a rolling update."
        ),
    )
    topology_spread: list[TopologySpread] | None = Field(
        None,
        description=(
            "Topology spread constraints of each track's pods. Default: spread over "
            "topology.kubernetes.io/zone and kubernetes.io/hostname with maxSkew 1 and "
            "ScheduleAnyway. Setting the list replaces the default; an empty list turns "
            "spreading off."
        ),
        max_length=8,
    )

    @property
    def auth_enabled(self) -> bool:
        """spec.auth present and not switched off: the one rule builders and the orphan sweep
        share."""
        return self.auth is not None and self.auth.enabled


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    """One observation about the ModelDeployment, in the Kubernetes condition convention."""

    type: Literal["Ready", "Progressing", "Degraded", "Promoted", "DataDrift"] = Field(
        description=(
            "Ready: every pod of the current generation is rolled out and serving. "
            "Progressing: a rollout is under way. Degraded: something needs a person; "
            "the message says what. Promoted (with spec.rollout only): spec.model has gone "
            "through its progressive rollout and the stable track serves it "
            "(`kubectl wait --for=condition=Promoted md/<name>`). DataDrift: the served "
            "inputs (or predictions) drift from the model's reference profile; never makes the "
            "ModelDeployment Degraded."
        )
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="A CamelCase code for the last transition (see docs/operations.md).",
        max_length=1024,
    )
    message: str = Field(
        description="What is going on, in a sentence a person can act on.", max_length=32768
    )
    last_transition_time: str = Field(
        description="When the condition last changed status (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int = Field(
        ge=0, description="metadata.generation of the spec this condition was computed from."
    )


class TrackStatus(_Model):
    """What one track (stable or canary) is running."""

    storage_uri: str = Field(description="The model artifact this track serves.")
    replicas: int = Field(ge=0, description="Pods this track's Deployment is asked to run.")
    ready_replicas: int = Field(ge=0, description="Pods of this track that pass readiness.")
    traffic_percent: float = Field(
        ge=0,
        le=100,
        description=(
            "Effective share of traffic, in percent: this track's ready pods over all ready pods "
            "(the Service balances per pod). 0 when no pod is ready."
        ),
    )


class ModelRefStatus(_Model):
    """A model version as a track serves it."""

    storage_uri: str = Field(description="The model artifact.")
    format: str = Field(description="Its serialization.")
    sha256: str | None = Field(None, description="Its pinned digest, when spec pinned one.")


class AnalysisCheckStatus(_Model):
    """One check of the last conclusive analysis interval."""

    name: Literal["errorRate", "latencyP99", "latencyP99Ratio", "predictionShift"] = Field(
        description="The check: spec.rollout.analysis.maxErrorRate, maxLatencyP99Seconds, "
        "maxLatencyP99Ratio or maxPredictionShift."
    )
    result: Literal["Passed", "Failed", "Inconclusive"] = Field(description="Its outcome.")
    value: float | None = Field(None, description="The measured value, when there was one.")
    threshold: float = Field(description="The limit it was held to.")
    message: str = Field(description="What was measured, in a sentence.", max_length=1024)


class RolloutCommandsStatus(_Model):
    """The command annotations already acted on (their values), so each acts once."""

    promote: str | None = Field(None, description="modeldeploy.io/promote")
    abort: str | None = Field(None, description="modeldeploy.io/abort")
    retry: str | None = Field(None, description="modeldeploy.io/retry")


class RolloutStatus(_Model):
    """Where the progressive rollout of spec.model stands; what a restarted operator resumes."""

    revision: str = Field(description="The spec.model version this rollout is about.")
    phase: Literal["Progressing", "Paused", "Promoting", "Healthy", "Aborted"] = Field(
        description=(
            "Progressing: steps under way. Paused: waiting for `kubectl modeldeploy promote`. "
            "Promoting: the stable track moves to the new model. Healthy: done, stable serves "
            "spec.model. Aborted: the canary was removed; stable serves previous (a new "
            "spec.model or `kubectl modeldeploy retry` starts again)."
        )
    )
    summary: str = Field(description="Phase and step, for the ROLLOUT printer column.")
    step: int = Field(ge=0, description="Steps done (index of the step being carried out).")
    steps: int = Field(ge=0, description="Steps in spec.rollout.steps.")
    weight: int = Field(ge=0, le=100, description="Canary weight asked for, in percent.")
    failed_intervals: int = Field(ge=0, description="Analysis intervals that failed so far.")
    message: str = Field(description="What the rollout is doing, in a sentence.", max_length=4096)
    previous: ModelRefStatus | None = Field(
        None, description="The model that served before the rollout (stable until promotion)."
    )
    step_started_at: str | None = Field(
        None, description="When the current step began.", json_schema_extra={"format": "date-time"}
    )
    last_analysis_at: str | None = Field(
        None,
        description="When the canary was last scraped and judged.",
        json_schema_extra={"format": "date-time"},
    )
    analysis: list[AnalysisCheckStatus] | None = Field(
        None, description="The checks of the last conclusive interval.", max_length=8
    )
    commands: RolloutCommandsStatus | None = Field(
        None, description="Command annotations already acted on."
    )


class RegistryResolutionStatus(_Model):
    """What a models:/ reference resolved to, the last time the registry answered."""

    uri: str = Field(description="The reference as spec has it, e.g. models:/iris@champion.")
    version: str = Field(description="The registered model version it names.", max_length=64)
    artifact_uri: str = Field(
        description="Where that version's artifacts are: the storageUri the pods load."
    )
    run_id: str | None = Field(None, description="The MLflow run that logged the version.")
    resolved_at: str = Field(
        description="When the reference was first seen naming this version.",
        json_schema_extra={"format": "date-time"},
    )


class RegistryStatus(_Model):
    """The MLflow Model Registry references of spec.model and spec.canary, resolved."""

    model: RegistryResolutionStatus | None = Field(
        None, description="spec.model.storageUri's reference."
    )
    canary: RegistryResolutionStatus | None = Field(
        None, description="spec.canary.storageUri's reference."
    )
    refreshed: str | None = Field(
        None,
        description="The value of the annotation modeldeploy.io/refresh-model last acted on.",
    )


class DriftStatus(_Model):
    """The worst drift the serving pods measured against the model's reference profile."""

    summary: str | None = Field(
        None,
        description="`<feature> <PSI>` of the worst feature (the DRIFT printer column); "
        "`predictions <PSI>` when the predictions drift more than any feature.",
    )
    feature: str | None = Field(None, description="The feature with the highest PSI.")
    psi: float | None = Field(None, description="That feature's PSI (0.1 moderate, 0.25 high).")
    track: str | None = Field(None, description="The track whose pods measured it.")
    prediction_psi: float | None = Field(
        None, description="The highest PSI of the predictions against the profile's."
    )


class ModelDeploymentStatus(_Model):
    """What the operator observed, written by the operator only."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the operator last reconciled."
    )
    url: str | None = Field(
        None,
        description=(
            "Where clients reach the model: the external URL (http://<first hostname>) with "
            "spec.traffic.gateway, else the in-cluster URL of the Service over both tracks."
        ),
    )
    address: str | None = Field(
        None, description="In-cluster URL of the Service over both tracks (port 80)."
    )
    replicas: int | None = Field(
        None,
        ge=0,
        description="Pods both tracks' Deployments are asked to run (scale subresource).",
    )
    ready_replicas: int | None = Field(None, ge=0, description="Ready pods over both tracks.")
    replica_counts: str | None = Field(
        None, description="`readyReplicas/replicas`, for the REPLICAS printer column."
    )
    selector: str | None = Field(
        None,
        description=(
            "Label selector of the pods of both tracks, for the scale subresource (HPA metrics)."
        ),
    )
    stable: TrackStatus | None = Field(None, description="The stable track.")
    canary: TrackStatus | None = Field(
        None, description="The canary track, while spec.canary is set."
    )
    children: list[str] | None = Field(
        None,
        description=(
            "The children that existed after the last reconcile (`Kind/name`). A reconcile reads "
            "these and the ones the spec asks for, instead of every child the operator could "
            "ever create; the periodic resync still reads them all."
        ),
        max_length=64,
        json_schema_extra={
            "items": {
                "type": "string",
                "maxLength": 320,
                "description": "A child as Kind/name, e.g. Deployment/iris-stable.",
            }
        },
    )
    rollout: RolloutStatus | None = Field(
        None, description="The progressive rollout of spec.model, with spec.rollout."
    )
    registry: RegistryStatus | None = Field(
        None,
        description=(
            "With a models:/ storageUri: the registry version each reference names and the "
            "artifact URI the pods load (the VERSION printer column)."
        ),
    )
    drift: DriftStatus | None = Field(
        None,
        description=(
            "What the serving pods' drift gauges said at the last check (the DataDrift "
            "condition says what it means); absent until one measured something."
        ),
    )
    conditions: list[Condition] | None = Field(
        None,
        description=(
            "Ready, Progressing and Degraded (and Promoted with spec.rollout), each with a "
            "reason and an actionable message"
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def parse_spec(spec: dict[str, Any]) -> ModelDeploymentSpec:
    """Parses a spec as the API server stored it (camelCase)."""
    return ModelDeploymentSpec.model_validate(spec)


def dump(model: BaseModel) -> dict[str, Any]:
    """The wire form: camelCase keys, unset optional fields left out."""
    out: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return out


class ModelDeployment(BaseModel):
    """A parsed ModelDeployment: the identity the children refer to plus its typed spec."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelDeploymentSpec

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ModelDeployment:
        meta = body.get("metadata") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            spec=parse_spec(body.get("spec") or {}),
        )
