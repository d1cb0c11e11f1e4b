"""The condition types and every reason the operator writes, as one table.

A reason is an API: pipelines match on it (``kubectl wait``, alerts), and people look it up in
docs/operations.md. So each reason is declared once, here, with what the status logic needs to
know about it — its rank (when several problems exist, the lowest rank names the Degraded
condition) and whether it blocks a rollout (the operator's own writes did not happen, so waiting
will not help) — and with the sentence the troubleshooting table shows. ``status`` uses the
constants, never string literals, and the docs table is generated from ``REASONS``.

Kubebuilder projects keep their condition reasons as named constants for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
CONDITION_TYPES: Final = (READY, PROGRESSING, DEGRADED)
# With spec.rollout only: whether spec.model has made it through its progressive rollout.
PROMOTED: Final = "Promoted"
# Whether the inputs the pods serve drift from the model's reference profile (drift.py). Not a
# problem of the ModelDeployment's own: it never makes it Degraded or blocks a rollout.
DATA_DRIFT: Final = "DataDrift"
# Every condition type the operator writes; the CRD's enum of condition types must allow each.
WRITTEN_TYPES: Final = (*CONDITION_TYPES, PROMOTED, DATA_DRIFT)


@dataclass(frozen=True)
class Reason:
    """One reason code, and what it means for status and for the person reading it."""

    name: str
    shown_on: str  # which condition(s) carry it, as the docs table says it
    meaning: str
    action: str
    rank: int | None = None  # a problem's priority for Degraded (lower wins); None: not a problem
    blocks_rollout: bool = False  # the desired children were not written: no rollout can proceed

    def __str__(self) -> str:
        return self.name

    @property
    def is_problem(self) -> bool:
        return self.rank is not None


def _problem(
    name: str, rank: int, meaning: str, action: str, *, blocks: bool = False, on: str = ""
) -> Reason:
    return Reason(name, on or f"Degraded `{name}`", meaning, action, rank, blocks)


FEATURE_DRIFT: Final = Reason(
    "FeatureDrift",
    "DataDrift True `FeatureDrift`",
    "a feature's served values drift from the reference profile: its PSI is at or above "
    "`MODELDEPLOY_DRIFT_THRESHOLD` (0.25)",
    "compare the feature's bins on the dashboard (`modeldeploy_feature_bin`); retrain, or "
    "fix the upstream data",
)
PREDICTION_DRIFT: Final = Reason(
    "PredictionDrift",
    "DataDrift True `PredictionDrift`",
    "the predictions' distribution drifts from the profile's while no single feature does",
    "look at the prediction distribution per track; a joint shift of several features",
)
NO_DRIFT: Final = Reason(
    "NoDrift",
    "DataDrift False `NoDrift`",
    "every feature's PSI is below the threshold; the message names the worst",
    "—",
)
NO_PROFILE: Final = Reason(
    "NoProfile",
    "DataDrift Unknown `NoProfile`",
    "the pods have no reference profile, so they compare nothing",
    "`modeldeploy-profile` a profile.json beside the model, or set `spec.model.profileUri`",
)
DRIFT_NOT_MEASURED: Final = Reason(
    "DriftNotMeasured",
    "DataDrift Unknown `DriftNotMeasured`",
    "no pod's drift gauges could be read, or their window holds too few rows",
    "send traffic; the message names the pods that could not be read and why",
)
SERVING: Final = Reason(
    "Serving", "Ready True `Serving`", "every pod of the current generation serves", "—"
)
ROLLING_OUT: Final = Reason(
    "RollingOut",
    "Ready False `RollingOut`, Progressing True",
    "a rollout is under way; the message says what it waits for",
    "wait; a model download counts against `MODELDEPLOY_STARTUP_BUDGET_SECONDS`",
)
SCALED_TO_ZERO: Final = Reason(
    "ScaledToZero",
    "Ready False `ScaledToZero`",
    "`spec.replicas` is 0",
    "`kubectl scale md/<name> --replicas=N`",
)
ROLLOUT_COMPLETE: Final = Reason(
    "RolloutComplete",
    "Progressing False `RolloutComplete`",
    "every track runs the current spec",
    "—",
)
AS_EXPECTED: Final = Reason(
    "AsExpected", "Degraded False `AsExpected`", "no problems observed", "—"
)
ROLLOUT_PROMOTED: Final = Reason(
    "Promoted",
    "Promoted True `Promoted`",
    "spec.model went through its progressive rollout; stable serves it",
    "—",
)
ROLLOUT_PROGRESSING: Final = Reason(
    "RolloutProgressing",
    "Promoted False `RolloutProgressing`, Progressing True",
    "spec.model runs as a canary and goes through `spec.rollout.steps`; status.rollout says "
    "which step and weight",
    "wait, or `kubectl modeldeploy promote <name>` (or `abort`)",
)
ROLLOUT_PAUSED: Final = Reason(
    "RolloutPaused",
    "Promoted False `RolloutPaused`, Progressing True",
    "a pause step without duration waits for a person",
    "`kubectl modeldeploy promote <name>` (or `abort`)",
)
ROLLOUT_PROMOTING: Final = Reason(
    "RolloutPromoting",
    "Promoted False `RolloutPromoting`, Progressing True",
    "the stable track moves to the new model (maxUnavailable 0); the canary goes when it is done",
    "wait",
)

# Problems, in rank order: what a person must fix first comes first.
CHILD_CONFLICT: Final = _problem(
    "ChildConflict",
    0,
    "a same-named object not owned by this ModelDeployment exists",
    "delete or rename that object",
    blocks=True,
)
ROLLOUT_ABORTED: Final = _problem(
    "RolloutAborted",
    15,
    "the progressive rollout of spec.model was aborted (the message names the failed check with "
    "its measured value and threshold, or says who aborted it); the canary is gone and stable "
    "serves the previous model",
    "fix the model and change `spec.model`, or `kubectl modeldeploy retry <name>`",
    on="Degraded/Promoted `RolloutAborted`",
)
APPLY_FAILED: Final = _problem(
    "ApplyFailed",
    10,
    "the API server rejected a child (message quotes it)",
    "usually an invalid `spec.resources` quantity combination or an admission webhook",
    blocks=True,
)
REGISTRY_UNAVAILABLE: Final = _problem(
    "RegistryUnavailable",
    12,
    "the MLflow tracking server in `spec.model.mlflow.trackingUri` did not answer, answered "
    "with an error, or refused the credentials (message quotes it); pods already serving a "
    "resolved version keep serving it",
    "check the tracking server, `trackingUri` and the Secret in `spec.model.mlflow.secretName`; "
    "the operator asks again every 15 s",
)
REGISTRY_MODEL_NOT_FOUND: Final = _problem(
    "RegistryModelNotFound",
    13,
    "the registry has no such registered model, version or alias for a models:/ storageUri",
    "fix the name/version/alias in `storageUri`, or register the model (set the alias)",
)
REGISTRY_MODEL_UNUSABLE: Final = _problem(
    "RegistryModelUnusable",
    14,
    "the registered version exists but can't be served: not READY yet, or its artifacts are "
    "behind the tracking server's proxy (mlflow-artifacts:/) instead of s3:// or gs://",
    "wait for the registration to finish, or run `mlflow server` with an s3:// or gs:// "
    "`--default-artifact-root` and `--no-serve-artifacts`",
)
MODEL_LOAD_FAILED: Final = _problem(
    "ModelLoadFailed",
    20,
    "the server exited with its own termination message (artifact missing, digest mismatch, "
    "unloadable file, credentials refused)",
    "fix `spec.model`/`spec.canary` (`storageUri`, `sha256`, `format`) or the Secret; the "
    "message quotes the server",
)
IMAGE_PULL_FAILED: Final = _problem(
    "ImagePullFailed",
    30,
    "ErrImagePull / ImagePullBackOff",
    "check `spec.server.image` / `MODELDEPLOY_SERVER_IMAGE` and registry access; with a local "
    "image keep `IfNotPresent`",
)
POD_CONFIG_ERROR: Final = _problem(
    "PodConfigError",
    40,
    "CreateContainerConfigError, e.g. the Secret in `spec.credentials.secretName` (or its GCS "
    "key) is missing",
    "create the Secret in the ModelDeployment's namespace",
)
REPLICA_FAILURE: Final = _problem(
    "ReplicaFailure",
    45,
    "the ReplicaSet cannot create pods (quota, LimitRange)",
    "check `kubectl describe rs`, ResourceQuota",
)
SERVER_CRASHING: Final = _problem(
    "ServerCrashing",
    50,
    "the container exits without a message (e.g. OOMKilled)",
    "`kubectl logs --previous`; raise `spec.resources.limits.memory`",
)
UNSCHEDULABLE: Final = _problem(
    "Unschedulable",
    60,
    "the scheduler cannot place a pod (message quotes it)",
    "lower requests/replicas or add nodes",
)
PROGRESS_DEADLINE_EXCEEDED: Final = _problem(
    "ProgressDeadlineExceeded",
    70,
    "a track made no progress within `progressDeadlineSeconds`",
    "look at the pod problem listed first; fix and the rollout resumes",
    on="Degraded/Progressing `ProgressDeadlineExceeded`",
)
ROUTE_NOT_ACCEPTED: Final = _problem(
    "RouteNotAccepted",
    75,
    "the Gateway named in `spec.traffic.gateway.parentRefs` did not accept the HTTPRoute (the "
    "message quotes the Gateway); in-cluster traffic through the Service is unaffected",
    "check the parentRef's name, namespace and sectionName, and the listener's allowedRoutes",
)
ROUTE_REFS_UNRESOLVED: Final = _problem(
    "RouteRefsUnresolved",
    76,
    "the Gateway accepted the HTTPRoute but cannot resolve its backend Services (message quotes "
    "it)",
    "the operator's Services should exist: look for an ApplyFailed or ChildConflict first",
)
GATEWAY_API_MISSING: Final = _problem(
    "GatewayAPIMissing",
    80,
    "`spec.traffic.gateway` is set but the cluster does not serve HTTPRoutes "
    "(gateway.networking.k8s.io/v1); the Service still splits traffic by ready pods",
    "install the Gateway API CRDs and an implementation, or remove `spec.traffic.gateway`",
)
INVALID_SPEC: Final = Reason(
    "InvalidSpec",
    "all `InvalidSpec`",
    "the stored spec does not parse with this operator (CRD older than the operator)",
    "apply the current CRD, then re-apply the object",
)

REASONS: Final = (
    SERVING,
    ROLLING_OUT,
    SCALED_TO_ZERO,
    ROLLOUT_COMPLETE,
    AS_EXPECTED,
    ROLLOUT_PROMOTED,
    ROLLOUT_PROGRESSING,
    ROLLOUT_PAUSED,
    ROLLOUT_PROMOTING,
    ROLLOUT_ABORTED,
    REGISTRY_UNAVAILABLE,
    REGISTRY_MODEL_NOT_FOUND,
    REGISTRY_MODEL_UNUSABLE,
    FEATURE_DRIFT,
    PREDICTION_DRIFT,
    NO_DRIFT,
    NO_PROFILE,
    DRIFT_NOT_MEASURED,
    MODEL_LOAD_FAILED,
    SERVER_CRASHING,
    IMAGE_PULL_FAILED,
    POD_CONFIG_ERROR,
    UNSCHEDULABLE,
    PROGRESS_DEADLINE_EXCEEDED,
    REPLICA_FAILURE,
    APPLY_FAILED,
    CHILD_CONFLICT,
    ROUTE_NOT_ACCEPTED,
    ROUTE_REFS_UNRESOLVED,
    GATEWAY_API_MISSING,
    INVALID_SPEC,
)


def markdown_table() -> str:
    """The troubleshooting table of docs/operations.md."""
    rows = [
        "| condition / reason | meaning | what to do |",
        "| --- | --- | --- |",
        *(f"| {r.shown_on} | {r.meaning} | {r.action} |" for r in REASONS),
    ]
    return "\n".join(rows) + "\n"
