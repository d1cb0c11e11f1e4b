"""MLflow Model Registry references in storageUri: which version they name, and when to ask again.

A ``models:/<name>/<version>``, ``models:/<name>/latest`` or ``models:/<name>@<alias>`` storageUri
is not something a pod can download: the operator asks the tracking server (spec.model.mlflow)
which version the reference names and where that version's artifacts are, and the children are
built from that concrete artifact URI (``effective``), so the server pods, the rollout step machine
and status all see an ordinary s3:// or gs:// model. The answer is kept in status.registry, which
is what makes the registry's outages harmless: when it can't be reached, or stops knowing the
model, the last answer for the same reference keeps the pods as they are (and Degraded says why),
and only a reference that has never been resolved leaves the children unwritten.

When to ask is decided here too (``due``): on a new reference, every spec.model.mlflow
.refreshInterval, sooner after a failed attempt, and at once when the annotation
modeldeploy.io/refresh-model changes. The times of the last attempts are held in memory only: a
restarted operator asks again on its first run, which costs one request per reference.

The HTTP calls live in registry_client.py behind the ``Resolver`` protocol; this module is pure.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from modeldeploy_operator import conditions as c
from modeldeploy_operator.api import (
    GROUP,
    REGISTRY_PREFIX,
    MlflowSpec,
    ModelDeployment,
    ModelFormat,
    parse_duration,
)
from modeldeploy_operator.conditions import Reason

Obj = dict[str, Any]

REFRESH_ANNOTATION: Final = f"{GROUP}/refresh-model"
# After a failed attempt the reference is asked again this soon (or at the refresh interval, if
# that is sooner): an outage ends without anyone touching the object.
RETRY_SECONDS: Final = 15.0
# The one Secret name the shipped RBAC lets the operator read (rbac.py): the operator can't read
# a namespace's other Secrets, whatever a spec names.
MLFLOW_SECRET: Final = "modeldeploy-mlflow"  # noqa: S105 - a Secret name
# The Secret keys spec.model.mlflow.secretName may hold: the MLflow client's own variables.
TOKEN_KEY: Final = "MLFLOW_TRACKING_TOKEN"  # noqa: S105 - a key name
USERNAME_KEY: Final = "MLFLOW_TRACKING_USERNAME"
PASSWORD_KEY: Final = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - a key name
# Artifact URI schemes the server pods download from themselves (storage/uri.py).
SERVABLE_SCHEMES: Final = ("s3://", "gs://", "pvc://", "file:///")

Field_ = Literal["model", "canary"]
FIELDS: Final[tuple[Field_, ...]] = ("model", "canary")

_REF = re.compile(r"^models:/(?P<name>[^/@\s]+)(/(?P<version>[0-9]+|latest)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class RegistryRef:
    """A parsed models:/ reference: exactly one of a version number, ``latest`` or an alias."""

    uri: str
    name: str
    version: str | None = None  # a number, or None
    alias: str | None = None
    latest: bool = False

    @property
    def moves(self) -> bool:
        """Whether the registry can change its answer (an alias or latest; a version can't)."""
        return self.version is None

    def describe(self) -> str:
        if self.alias is not None:
            return f"alias @{self.alias} of registered model {self.name!r}"
        if self.latest:
            return f"the latest version of registered model {self.name!r}"
        return f"version {self.version} of registered model {self.name!r}"


def parse_ref(uri: str) -> RegistryRef | None:
    """The reference in a storageUri, or None when it is not a models:/ URI."""
    if not uri.startswith(REGISTRY_PREFIX):
        return None
    m = _REF.match(uri)
    if m is None:  # the CRD's pattern admits only the forms above
        raise ValueError(f"{uri} is not models:/<name>/<version>, /latest or @<alias>")
    version = m.group("version")
    return RegistryRef(
        uri=uri,
        name=m.group("name"),
        version=version if version and version != "latest" else None,
        alias=m.group("alias"),
        latest=version == "latest",
    )


@dataclass(frozen=True)
class ModelVersion:
    """The registry's answer: one registered model version and where its artifacts are."""

    version: str
    artifact_uri: str
    run_id: str | None = None


ErrorKind = Literal["unreachable", "not_found", "unusable"]


class RegistryError(Exception):
    """The registry could not say which version a reference names. ``kind``: unreachable (no
    answer, an HTTP error, refused credentials), not_found (no such model, version or alias),
    unusable (the version exists but can't be served: not READY, or its artifacts are somewhere
    the pods can't download from). The message is a sentence without the reference in it."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Resolver(Protocol):
    """Asks a tracking server which version ``ref`` names (registry_client.MlflowRegistry).
    ``headers`` carry the credentials. Raises RegistryError."""

    def resolve(
        self, ref: RegistryRef, tracking_uri: str, headers: Mapping[str, str]
    ) -> ModelVersion: ...


class _NoResolver:
    """The resolver of a reconcile that was given none: every reference is unreachable."""

    def resolve(
        self, ref: RegistryRef, tracking_uri: str, headers: Mapping[str, str]
    ) -> ModelVersion:
        raise RegistryError("unreachable", "this operator process has no registry client")


NO_RESOLVER: Final[Resolver] = _NoResolver()

_REASONS: Final[dict[ErrorKind, Reason]] = {
    "unreachable": c.REGISTRY_UNAVAILABLE,
    "not_found": c.REGISTRY_MODEL_NOT_FOUND,
    "unusable": c.REGISTRY_MODEL_UNUSABLE,
}


def check_servable(version: ModelVersion) -> None:
    """Refuses an artifact location the server pods can't download from, saying what to do."""
    uri = version.artifact_uri
    if uri.startswith(SERVABLE_SCHEMES):
        return
    if uri.startswith("mlflow-artifacts:"):
        raise RegistryError(
            "unusable",
            f"its artifacts are at {uri}, behind the tracking server's artifact proxy, which "
            "the model server does not download from: run `mlflow server` with "
            "--default-artifact-root s3://<bucket>/<path> (or gs://) and --no-serve-artifacts, "
            "and log the model again",
        )
    raise RegistryError(
        "unusable",
        f"its artifacts are at {uri}, which the model server can't download from "
        "(it reads s3://, gs:// and pvc:// artifact locations)",
    )


@dataclass(frozen=True)
class Resolution:
    """A reference and the version it named, as status.registry.<field> keeps it."""

    uri: str
    version: str
    artifact_uri: str
    resolved_at: str
    run_id: str | None = None

    def to_status(self) -> Obj:
        out: Obj = {
            "uri": self.uri,
            "version": self.version,
            "artifactUri": self.artifact_uri,
            "resolvedAt": self.resolved_at,
        }
        if self.run_id:
            out["runId"] = self.run_id
        return out

    @classmethod
    def from_status(cls, block: object) -> Resolution | None:
        if not isinstance(block, dict):
            return None
        try:
            return cls(
                uri=str(block["uri"]),
                version=str(block["version"]),
                artifact_uri=str(block["artifactUri"]),
                resolved_at=str(block["resolvedAt"]),
                run_id=block.get("runId"),
            )
        except KeyError:
            return None


def references(md: ModelDeployment) -> dict[Field_, RegistryRef]:
    """The models:/ references in spec.model and spec.canary, by field."""
    out: dict[Field_, RegistryRef] = {}
    model_ref = parse_ref(md.spec.model.storage_uri)
    if model_ref is not None:
        out["model"] = model_ref
    canary = md.spec.canary
    if canary is not None:
        canary_ref = parse_ref(canary.storage_uri)
        if canary_ref is not None:
            out["canary"] = canary_ref
    return out


def auth_headers(secret: Obj | None, secret_name: str) -> dict[str, str]:
    """The request headers from the credentials Secret (``secret``: as the API server returns
    it, data base64-encoded). Raises RegistryError naming the Secret when it is not usable."""
    if secret is None:
        raise RegistryError(
            "unreachable",
            f"the Secret {secret_name} named in spec.model.mlflow.secretName does not exist "
            f"(create it with {TOKEN_KEY}, or {USERNAME_KEY} and {PASSWORD_KEY})",
        )
    data = {
        str(k): base64.b64decode(str(v)).decode("utf-8", "replace").strip()
        for k, v in (secret.get("data") or {}).items()
    }
    if data.get(TOKEN_KEY):
        return {"Authorization": f"Bearer {data[TOKEN_KEY]}"}
    if data.get(USERNAME_KEY) and data.get(PASSWORD_KEY):
        pair = f"{data[USERNAME_KEY]}:{data[PASSWORD_KEY]}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    raise RegistryError(
        "unreachable",
        f"the Secret {secret_name} named in spec.model.mlflow.secretName has neither "
        f"{TOKEN_KEY} nor both {USERNAME_KEY} and {PASSWORD_KEY}",
    )


CheckKey = tuple[str, str, str]  # (namespace, name, reference uri)


@dataclass(frozen=True)
class Due:
    """When a reference is to be asked next, and, after a failed attempt, what went wrong: the
    runs until the retry still report it (Degraded must not flap between two attempts)."""

    at: float
    problem: tuple[Reason, str] | None = None


@dataclass
class RegistryOutcome:
    """What the registry step of one reconcile found."""

    resolved: dict[Field_, Resolution] = field(default_factory=dict)
    problems: list[tuple[Reason, str]] = field(default_factory=list)
    unresolved: list[Field_] = field(default_factory=list)  # never resolved: no children yet
    refreshed: str | None = None  # the refresh annotation value acted on
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    next_check: float | None = None  # seconds until a reference is due again

    def status(self) -> Obj:
        out: Obj = {f: r.to_status() for f, r in self.resolved.items()}
        if self.refreshed is not None:
            out["refreshed"] = self.refreshed
        return out


def resolve(
    md: ModelDeployment,
    annotations: Mapping[str, str],
    previous_status: Obj,
    resolver: Resolver,
    read_secret: Callable[[str], Obj | None],
    due_at: MutableMapping[CheckKey, Due],
    clock: float,
    now: str,
) -> RegistryOutcome:
    """Resolves every models:/ reference of ``md`` that is due, keeps the others' last answer
    from ``previous_status`` (status.registry), and says what went wrong. ``due_at`` holds,
    per reference, when it is to be asked next (updated here); ``read_secret`` reads a Secret of
    the ModelDeployment's namespace."""
    out = RegistryOutcome()
    refs = references(md)
    mlflow = md.spec.model.mlflow
    if not refs or mlflow is None:
        return out
    interval = parse_duration(mlflow.refresh_interval)
    asked = annotations.get(REFRESH_ANNOTATION)
    handled = previous_status.get("refreshed")
    refresh = bool(asked) and asked != handled
    out.refreshed = asked if refresh else (handled if isinstance(handled, str) else None)
    headers: dict[str, str] | None = None
    for field_, ref in refs.items():
        key: CheckKey = (md.namespace, md.name, ref.uri)
        kept = Resolution.from_status(previous_status.get(field_))
        if kept is not None and kept.uri != ref.uri:
            kept = None
        due = due_at.get(key)
        # A moving reference is asked again when due; a pinned version, once resolved, only
        # after a failed attempt (or when told to).
        is_due = (
            refresh
            or (due is None and (kept is None or ref.moves))
            or (due is not None and due.problem is None and kept is None)
            or (due is not None and clock >= due.at and (ref.moves or due.problem is not None))
        )
        if not is_due:
            if due is not None and due.problem is not None:
                out.problems.append(due.problem)
            if kept is not None:
                out.resolved[field_] = kept
            else:
                out.unresolved.append(field_)
            if due is not None and (ref.moves or due.problem is not None):
                _soonest(out, due.at - clock)
            continue
        try:
            if headers is None:
                headers = _headers(mlflow, read_secret)
            answer = resolver.resolve(ref, mlflow.tracking_uri, headers)
            check_servable(answer)
        except RegistryError as e:
            problem = _problem(field_, ref, mlflow, e, kept)
            due_at[key] = Due(clock + min(RETRY_SECONDS, interval), problem)
            _soonest(out, min(RETRY_SECONDS, interval))
            out.problems.append(problem)
            if kept is not None:
                out.resolved[field_] = kept
            else:
                out.unresolved.append(field_)
            continue
        if ref.moves:
            due_at[key] = Due(clock + interval)
            _soonest(out, interval)
        else:
            due_at.pop(key, None)  # a version number names the same artifact forever
        if kept is not None and kept.version == answer.version:
            out.resolved[field_] = kept
            continue
        out.resolved[field_] = Resolution(
            ref.uri, answer.version, answer.artifact_uri, now, answer.run_id
        )
        if kept is not None:
            out.events.append(
                (
                    "Normal",
                    "RegistryVersionChanged",
                    f"{ref.uri} now names version {answer.version} (was {kept.version}): "
                    f"rolling out {answer.artifact_uri}",
                )
            )
    return out


def _soonest(out: RegistryOutcome, seconds: float) -> None:
    seconds = max(seconds, 0.0)
    out.next_check = seconds if out.next_check is None else min(out.next_check, seconds)


def _headers(mlflow: MlflowSpec, read_secret: Callable[[str], Obj | None]) -> dict[str, str]:
    if not mlflow.secret_name:
        return {}
    return auth_headers(read_secret(mlflow.secret_name), mlflow.secret_name)


def _problem(
    field_: Field_, ref: RegistryRef, mlflow: MlflowSpec, e: RegistryError, kept: Resolution | None
) -> tuple[Reason, str]:
    where = f"spec.{field_}.storageUri {ref.uri}"
    if e.kind == "unreachable":
        said = f"the MLflow tracking server {mlflow.tracking_uri} could not resolve {where}: "
    else:
        said = f"{where} ({ref.describe()}) can't be served: "
    said += e.message
    if kept is not None:
        said += f"; the pods keep serving version {kept.version} ({kept.artifact_uri})"
    else:
        said += "; nothing is deployed for it until the registry answers"
    return _REASONS[e.kind], said


def effective(md: ModelDeployment, resolved: Mapping[Field_, Resolution]) -> ModelDeployment:
    """``md`` with each resolved models:/ reference replaced by its artifact URI (format
    mlflow): the ModelDeployment the children, the rollout and status are computed from."""
    if not resolved:
        return md
    spec = md.spec
    model = spec.model
    if "model" in resolved:
        model = model.model_copy(
            update={"storage_uri": resolved["model"].artifact_uri, "format": ModelFormat.MLFLOW}
        )
    canary = spec.canary
    if canary is not None and "canary" in resolved:
        canary = canary.model_copy(
            update={"storage_uri": resolved["canary"].artifact_uri, "format": ModelFormat.MLFLOW}
        )
    elif canary is not None and canary.format is None:
        # a plain canary inherits the format spec.model has as written, not the one a resolved
        # registry reference gives spec.model
        canary = canary.model_copy(update={"format": spec.model.format})
    return md.model_copy(
        update={"spec": spec.model_copy(update={"model": model, "canary": canary})}
    )
