"""MLflow Model Registry references (registry.py) with a fake Resolver: parsing, credentials,
servable artifact locations, when a reference is asked again, what is kept through an outage,
the effective ModelDeployment, and the reconcile path against the in-memory cluster."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import FakeCluster, make_md, md_body
from modeldeploy_operator import conditions as c
from modeldeploy_operator import registry
from modeldeploy_operator.api import ModelDeployment
from modeldeploy_operator.conditions import Reason
from modeldeploy_operator.reconcile import Outcome, reconcile
from modeldeploy_operator.registry import (
    REFRESH_ANNOTATION,
    RETRY_SECONDS,
    CheckKey,
    Due,
    ModelVersion,
    RegistryError,
    RegistryOutcome,
    RegistryRef,
    Resolution,
)
from modeldeploy_operator.settings import OperatorSettings

Obj = dict[str, Any]


def ats(due: dict[CheckKey, Due]) -> dict[CheckKey, float]:
    """When each reference is due next (the problems a Due carries are asserted elsewhere)."""
    return {k: d.at for k, d in due.items()}


TRACKING = "http://mlflow:5000"
ALIAS = "models:/iris@champion"
PINNED = "models:/iris/3"
LATEST = "models:/iris/latest"
S3_V3 = "s3://mlflow/1/abc/artifacts/model"
S3_V4 = "s3://mlflow/1/def/artifacts/model"
NOW = "2026-11-23T11:00:00Z"
LATER = "2026-11-23T12:00:00Z"
T0 = 1000.0
INTERVAL = 60.0  # MlflowSpec.refresh_interval's default, 1m


class FakeResolver:
    """``registry.Resolver`` answering per reference uri: a ModelVersion, or a RegistryError to
    raise. Records every call (uri, tracking uri, headers)."""

    def __init__(self, answers: Mapping[str, ModelVersion | RegistryError] | None = None) -> None:
        self.answers: dict[str, ModelVersion | RegistryError] = dict(answers or {})
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    def resolve(
        self, ref: RegistryRef, tracking_uri: str, headers: Mapping[str, str]
    ) -> ModelVersion:
        self.calls.append((ref.uri, tracking_uri, dict(headers)))
        answer = self.answers[ref.uri]
        if isinstance(answer, RegistryError):
            raise answer
        return answer

    def uris(self) -> list[str]:
        return [uri for uri, _, _ in self.calls]


def v(version: str, artifact_uri: str, run_id: str | None = None) -> ModelVersion:
    return ModelVersion(version=version, artifact_uri=artifact_uri, run_id=run_id)


def mlflow(**extra: Any) -> Obj:
    return {"trackingUri": TRACKING, **extra}


def reg_md(uri: str = ALIAS, canary: Obj | None = None, **mlflow_extra: Any) -> ModelDeployment:
    spec: Obj = {"model": {"storageUri": uri, "mlflow": mlflow(**mlflow_extra)}}
    if canary is not None:
        spec["canary"] = canary
    return make_md(**spec)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret(**data: str) -> Obj:
    """A Secret as the API server returns it: data base64-encoded."""
    return {"kind": "Secret", "data": {k: b64(val) for k, val in data.items()}}


def no_secret(name: str) -> Obj | None:
    raise AssertionError(f"no Secret should be read, but {name} was")


def resolve(
    md: ModelDeployment,
    resolver: FakeResolver,
    due: dict[CheckKey, Due],
    clock: float = T0,
    previous: Obj | None = None,
    annotations: Mapping[str, str] | None = None,
    now: str = NOW,
    secrets: Mapping[str, Obj] | None = None,
) -> RegistryOutcome:
    read = no_secret if secrets is None else (lambda name: (secrets or {}).get(name))
    return registry.resolve(md, annotations or {}, previous or {}, resolver, read, due, clock, now)


def key(uri: str = ALIAS) -> CheckKey:
    return ("default", "iris", uri)


# --- parse_ref ---------------------------------------------------------------------------------


def test_parse_ref_reads_the_three_forms() -> None:
    assert registry.parse_ref(PINNED) == RegistryRef(uri=PINNED, name="iris", version="3")
    assert registry.parse_ref(LATEST) == RegistryRef(uri=LATEST, name="iris", latest=True)
    assert registry.parse_ref(ALIAS) == RegistryRef(uri=ALIAS, name="iris", alias="champion")
    dashed = registry.parse_ref("models:/fraud-model.v2@prod_2")
    assert dashed is not None
    assert (dashed.name, dashed.alias, dashed.version) == ("fraud-model.v2", "prod_2", None)


@pytest.mark.parametrize(
    "uri", ["s3://models/iris/v1/model.joblib", "gs://b/m", "pvc://claim/m", "file:///m"]
)
def test_parse_ref_is_none_for_other_uris(uri: str) -> None:
    assert registry.parse_ref(uri) is None


@pytest.mark.parametrize("uri", ["models:/iris", "models:/iris/v3", "models:/iris/3/x"])
def test_parse_ref_refuses_a_malformed_reference(uri: str) -> None:
    with pytest.raises(ValueError, match="is not models:/<name>/<version>"):
        registry.parse_ref(uri)


def test_only_a_pinned_version_does_not_move() -> None:
    refs = {u: registry.parse_ref(u) for u in (PINNED, LATEST, ALIAS)}
    assert {u: r.moves for u, r in refs.items() if r is not None} == {
        PINNED: False,
        LATEST: True,
        ALIAS: True,
    }
    pinned = refs[PINNED]
    assert pinned is not None
    assert pinned.describe() == "version 3 of registered model 'iris'"


# --- auth_headers ------------------------------------------------------------------------------


def test_auth_headers_token_is_a_bearer_token() -> None:
    s = secret(MLFLOW_TRACKING_TOKEN="tok-123\n")  # a trailing newline from `echo` is dropped
    assert registry.auth_headers(s, "modeldeploy-mlflow") == {"Authorization": "Bearer tok-123"}


def test_auth_headers_token_wins_over_username_and_password() -> None:
    s = secret(
        MLFLOW_TRACKING_TOKEN="t", MLFLOW_TRACKING_USERNAME="u", MLFLOW_TRACKING_PASSWORD="p"
    )
    assert registry.auth_headers(s, "modeldeploy-mlflow") == {"Authorization": "Bearer t"}


def test_auth_headers_username_and_password_are_basic_auth() -> None:
    s = secret(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="s3cr:t")
    headers = registry.auth_headers(s, "modeldeploy-mlflow")
    assert headers == {"Authorization": "Basic " + b64("alice:s3cr:t")}


def test_auth_headers_missing_secret_names_it() -> None:
    with pytest.raises(RegistryError) as info:
        registry.auth_headers(None, "modeldeploy-mlflow")
    assert info.value.kind == "unreachable"
    assert "the Secret modeldeploy-mlflow" in info.value.message
    assert "does not exist" in info.value.message


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"MLFLOW_TRACKING_USERNAME": "alice"},
        {"MLFLOW_TRACKING_PASSWORD": "pw"},
        {"MLFLOW_TRACKING_TOKEN": "  "},
        {"AWS_ACCESS_KEY_ID": "x"},
    ],
)
def test_auth_headers_missing_keys_names_the_secret(data: dict[str, str]) -> None:
    with pytest.raises(RegistryError) as info:
        registry.auth_headers(secret(**data), "modeldeploy-mlflow")
    assert info.value.kind == "unreachable"
    assert "the Secret modeldeploy-mlflow" in info.value.message
    assert "MLFLOW_TRACKING_TOKEN" in info.value.message


def test_auth_headers_secret_without_data_names_the_secret() -> None:
    with pytest.raises(RegistryError, match="modeldeploy-mlflow"):
        registry.auth_headers({"kind": "Secret"}, "modeldeploy-mlflow")


# --- check_servable ----------------------------------------------------------------------------


@pytest.mark.parametrize("uri", [S3_V3, "gs://bucket/1/abc/artifacts/model"])
def test_check_servable_accepts_s3_and_gs(uri: str) -> None:
    registry.check_servable(v("1", uri))  # no exception


def test_check_servable_refuses_the_artifact_proxy() -> None:
    with pytest.raises(RegistryError) as info:
        registry.check_servable(v("1", "mlflow-artifacts:/1/abc/artifacts/model"))
    assert info.value.kind == "unusable"
    assert "--no-serve-artifacts" in info.value.message
    assert "mlflow-artifacts:/1/abc/artifacts/model" in info.value.message


@pytest.mark.parametrize(
    "uri", ["https://example.com/model", "dbfs:/databricks/model", "/mlruns/1/abc/artifacts/m"]
)
def test_check_servable_refuses_other_schemes(uri: str) -> None:
    with pytest.raises(RegistryError) as info:
        registry.check_servable(v("1", uri))
    assert info.value.kind == "unusable"
    assert "can't download from" in info.value.message
    assert uri in info.value.message


# --- resolve -----------------------------------------------------------------------------------


def test_no_reference_or_no_mlflow_asks_nothing() -> None:
    resolver = FakeResolver()
    due: dict[CheckKey, Due] = {}
    out = resolve(make_md(), resolver, due)
    assert out == RegistryOutcome()
    assert resolver.calls == []
    assert due == {}


def test_first_run_asks_and_records_the_resolution() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3, "run-a")})
    due: dict[CheckKey, Due] = {}
    out = resolve(reg_md(), resolver, due)
    assert resolver.calls == [(ALIAS, TRACKING, {})]
    assert out.resolved == {"model": Resolution(ALIAS, "3", S3_V3, NOW, "run-a")}
    assert out.problems == []
    assert out.unresolved == []
    assert out.events == []
    assert out.refreshed is None
    assert ats(due) == {key(): T0 + INTERVAL}
    assert out.next_check == INTERVAL
    assert out.status() == {
        "model": {
            "uri": ALIAS,
            "version": "3",
            "artifactUri": S3_V3,
            "resolvedAt": NOW,
            "runId": "run-a",
        }
    }


def test_not_due_is_not_asked_again_and_keeps_the_previous_answer() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(), resolver, due)
    resolver.answers[ALIAS] = v("4", S3_V4)  # the alias moved, but it is not time to ask
    out = resolve(reg_md(), resolver, due, clock=T0 + 20, previous=first.status(), now=LATER)
    assert resolver.uris() == [ALIAS]
    assert out.resolved == first.resolved
    assert out.resolved["model"].resolved_at == NOW
    assert out.next_check == pytest.approx(INTERVAL - 20)
    assert ats(due) == {key(): T0 + INTERVAL}


def test_after_the_interval_an_alias_is_asked_again_but_a_pinned_version_is_not() -> None:
    for uri in (ALIAS, LATEST):
        resolver = FakeResolver({uri: v("3", S3_V3)})
        due: dict[CheckKey, Due] = {}
        first = resolve(reg_md(uri), resolver, due)
        resolve(reg_md(uri), resolver, due, clock=T0 + INTERVAL - 1, previous=first.status())
        assert resolver.uris() == [uri]
        resolve(reg_md(uri), resolver, due, clock=T0 + INTERVAL, previous=first.status())
        assert resolver.uris() == [uri, uri]
        assert due[key(uri)].at == T0 + 2 * INTERVAL

    resolver = FakeResolver({PINNED: v("3", S3_V3)})
    due = {}
    first = resolve(reg_md(PINNED), resolver, due)
    assert first.next_check is None  # a resolved pinned version needs no requeue
    out = resolve(reg_md(PINNED), resolver, due, clock=T0 + 100 * INTERVAL, previous=first.status())
    assert resolver.uris() == [PINNED]
    assert out.resolved == first.resolved
    assert out.problems == []
    assert out.events == []


def test_a_resolved_pinned_version_never_asks_for_a_requeue() -> None:
    resolver = FakeResolver({PINNED: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(PINNED), resolver, due)
    assert first.next_check is None
    checks = [
        resolve(reg_md(PINNED), resolver, due, clock=T0 + dt, previous=first.status()).next_check
        for dt in (1.0, INTERVAL - 5, INTERVAL, 100 * INTERVAL)
    ]
    assert resolver.uris() == [PINNED]
    assert checks == [None, None, None, None]


def test_an_operator_restart_asks_a_moving_reference_once_more() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    first = resolve(reg_md(), resolver, {})
    resolve(reg_md(), resolver, {}, clock=T0 + 1, previous=first.status())  # a new due_at map
    assert resolver.uris() == [ALIAS, ALIAS]


def test_refresh_annotation_forces_asking_once_and_is_recorded() -> None:
    resolver = FakeResolver({PINNED: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(PINNED), resolver, due)
    asked = {REFRESH_ANNOTATION: "2026-11-23T11:05"}
    out = resolve(
        reg_md(PINNED), resolver, due, clock=T0 + 1, previous=first.status(), annotations=asked
    )
    assert resolver.uris() == [PINNED, PINNED]
    assert out.refreshed == "2026-11-23T11:05"
    assert out.status()["refreshed"] == "2026-11-23T11:05"
    # the same value again has been acted on: not asked, and still recorded
    again = resolve(
        reg_md(PINNED), resolver, due, clock=T0 + 2, previous=out.status(), annotations=asked
    )
    assert resolver.uris() == [PINNED, PINNED]
    assert again.refreshed == "2026-11-23T11:05"
    assert again.status()["refreshed"] == "2026-11-23T11:05"
    # a new value asks again, also for an alias that is not due
    alias_first = resolve(reg_md(), resolver := FakeResolver({ALIAS: v("3", S3_V3)}), due)
    prev = {**alias_first.status(), "refreshed": "a"}
    resolve(
        reg_md(), resolver, due, clock=T0 + 1, previous=prev, annotations={REFRESH_ANNOTATION: "b"}
    )
    assert resolver.uris() == [ALIAS, ALIAS]


def test_a_version_change_emits_an_event_and_updates_resolved_at() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(), resolver, due)
    resolver.answers[ALIAS] = v("4", S3_V4, "run-b")
    out = resolve(reg_md(), resolver, due, clock=T0 + INTERVAL, previous=first.status(), now=LATER)
    assert out.resolved == {"model": Resolution(ALIAS, "4", S3_V4, LATER, "run-b")}
    assert out.events == [
        (
            "Normal",
            "RegistryVersionChanged",
            f"{ALIAS} now names version 4 (was 3): rolling out {S3_V4}",
        )
    ]
    assert out.problems == []


def test_the_same_version_keeps_resolved_at_and_emits_nothing() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(), resolver, due)
    out = resolve(reg_md(), resolver, due, clock=T0 + INTERVAL, previous=first.status(), now=LATER)
    assert resolver.uris() == [ALIAS, ALIAS]
    assert out.resolved["model"].resolved_at == NOW
    assert out.status() == first.status()
    assert out.events == []


def test_a_failure_with_a_kept_resolution_keeps_serving_it_and_retries_soon() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(), resolver, due)
    resolver.answers[ALIAS] = RegistryError("unreachable", "connection refused")
    t1 = T0 + INTERVAL
    out = resolve(reg_md(), resolver, due, clock=t1, previous=first.status(), now=LATER)
    assert out.resolved == first.resolved
    assert out.unresolved == []
    ((reason, message),) = out.problems
    assert reason is c.REGISTRY_UNAVAILABLE
    assert message.startswith(f"the MLflow tracking server {TRACKING} could not resolve ")
    assert f"spec.model.storageUri {ALIAS}" in message
    assert "connection refused" in message
    assert f"keep serving version 3 ({S3_V3})" in message
    assert due[key()].at == t1 + RETRY_SECONDS
    assert out.next_check == RETRY_SECONDS
    assert out.status() == first.status()  # status.registry still holds version 3

    resolve(reg_md(), resolver, due, clock=t1 + RETRY_SECONDS - 1, previous=out.status())
    assert len(resolver.calls) == 2  # not yet
    resolver.answers[ALIAS] = v("3", S3_V3)
    healed = resolve(reg_md(), resolver, due, clock=t1 + RETRY_SECONDS, previous=out.status())
    assert len(resolver.calls) == 3
    assert healed.problems == []
    assert healed.resolved == first.resolved
    assert due[key()].at == t1 + RETRY_SECONDS + INTERVAL


def test_retry_is_the_refresh_interval_when_that_is_sooner() -> None:
    resolver = FakeResolver({ALIAS: RegistryError("unreachable", "timed out")})
    due: dict[CheckKey, Due] = {}
    out = resolve(reg_md(refreshInterval="5s"), resolver, due)
    assert due[key()].at == T0 + 5
    assert out.next_check == 5


def test_a_failure_with_nothing_kept_leaves_the_reference_unresolved() -> None:
    resolver = FakeResolver({ALIAS: RegistryError("unreachable", "connection refused")})
    due: dict[CheckKey, Due] = {}
    out = resolve(reg_md(), resolver, due)
    assert out.resolved == {}
    assert out.unresolved == ["model"]
    ((reason, message),) = out.problems
    assert reason is c.REGISTRY_UNAVAILABLE
    assert "nothing is deployed for it until the registry answers" in message
    assert out.next_check == RETRY_SECONDS
    assert out.status() == {}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("unreachable", c.REGISTRY_UNAVAILABLE),
        ("not_found", c.REGISTRY_MODEL_NOT_FOUND),
        ("unusable", c.REGISTRY_MODEL_UNUSABLE),
    ],
)
def test_problem_kinds_map_to_reasons(kind: registry.ErrorKind, reason: Reason) -> None:
    resolver = FakeResolver({ALIAS: RegistryError(kind, "the answer")})
    out = resolve(reg_md(), resolver, {})
    ((got, message),) = out.problems
    assert got is reason
    assert got.is_problem
    assert "the answer" in message
    if kind != "unreachable":
        assert message.startswith(
            f"spec.model.storageUri {ALIAS} (alias @champion of registered model 'iris') "
            "can't be served: the answer"
        )


def test_an_artifact_behind_the_proxy_is_unusable_and_not_resolved() -> None:
    resolver = FakeResolver({ALIAS: v("3", "mlflow-artifacts:/1/abc/artifacts/model")})
    out = resolve(reg_md(), resolver, {})
    assert out.unresolved == ["model"]
    ((reason, message),) = out.problems
    assert reason is c.REGISTRY_MODEL_UNUSABLE
    assert "--no-serve-artifacts" in message


def test_a_changed_spec_uri_ignores_the_old_status_block() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(), resolver, due)
    challenger = "models:/iris@challenger"
    resolver.answers[challenger] = v("4", S3_V4)
    out = resolve(
        reg_md(challenger), resolver, due, clock=T0 + 1, previous=first.status(), now=LATER
    )
    assert resolver.uris() == [ALIAS, challenger]  # asked at once, though ALIAS was not due
    assert out.resolved == {"model": Resolution(challenger, "4", S3_V4, LATER)}
    assert out.events == []  # a new reference, not a moved one
    # and when it fails, the old reference's version is not what it keeps
    resolver.answers["models:/iris@other"] = RegistryError("not_found", "no alias @other")
    failed = resolve(reg_md("models:/iris@other"), resolver, due, previous=first.status())
    assert failed.unresolved == ["model"]
    assert failed.resolved == {}


def test_canary_references_are_resolved_too_with_one_secret_read() -> None:
    canary_uri = "models:/iris@challenger"
    resolver = FakeResolver({ALIAS: v("3", S3_V3), canary_uri: v("4", S3_V4)})
    reads: list[str] = []

    def read(name: str) -> Obj | None:
        reads.append(name)
        return secret(MLFLOW_TRACKING_TOKEN="tok")

    md = reg_md(
        canary={"storageUri": canary_uri, "trafficPercent": 25}, secretName="modeldeploy-mlflow"
    )
    due: dict[CheckKey, Due] = {}
    out = registry.resolve(md, {}, {}, resolver, read, due, T0, NOW)
    assert reads == ["modeldeploy-mlflow"]
    assert resolver.calls == [
        (ALIAS, TRACKING, {"Authorization": "Bearer tok"}),
        (canary_uri, TRACKING, {"Authorization": "Bearer tok"}),
    ]
    assert out.resolved == {
        "model": Resolution(ALIAS, "3", S3_V3, NOW),
        "canary": Resolution(canary_uri, "4", S3_V4, NOW),
    }
    assert set(due) == {key(ALIAS), key(canary_uri)}
    assert set(out.status()) == {"model", "canary"}


def test_only_the_canary_may_be_a_reference() -> None:
    canary_uri = "models:/iris@challenger"
    resolver = FakeResolver({canary_uri: RegistryError("not_found", "no alias @challenger")})
    md = make_md(
        model={"storageUri": "s3://models/iris/v1/model.joblib", "mlflow": mlflow()},
        canary={"storageUri": canary_uri, "trafficPercent": 25},
    )
    out = resolve(md, resolver, {})
    assert resolver.uris() == [canary_uri]
    assert out.unresolved == ["canary"]
    ((reason, message),) = out.problems
    assert reason is c.REGISTRY_MODEL_NOT_FOUND
    assert message.startswith(f"spec.canary.storageUri {canary_uri} ")


def test_next_check_is_the_soonest_due_reference() -> None:
    canary_uri = "models:/iris@challenger"
    resolver = FakeResolver({ALIAS: v("3", S3_V3), canary_uri: v("4", S3_V4)})
    due: dict[CheckKey, Due] = {}
    md = reg_md(canary={"storageUri": canary_uri, "trafficPercent": 25})
    first = resolve(md, resolver, due)
    assert first.next_check == INTERVAL
    later = resolve(md, resolver, due, clock=T0 + 45, previous=first.status())
    assert later.next_check == pytest.approx(INTERVAL - 45)
    resolver.answers[canary_uri] = RegistryError("unreachable", "down")
    failing = resolve(md, resolver, due, clock=T0 + INTERVAL, previous=first.status())
    assert failing.next_check == RETRY_SECONDS  # the canary's retry, before the model's interval
    assert ats(due) == {
        key(ALIAS): T0 + 2 * INTERVAL,
        key(canary_uri): T0 + INTERVAL + RETRY_SECONDS,
    }
    waiting = resolve(md, resolver, due, clock=T0 + INTERVAL + 10, previous=failing.status())
    assert len(resolver.calls) == 4  # neither was due
    assert waiting.next_check == pytest.approx(RETRY_SECONDS - 10)
    # a pinned model beside a moving canary: only the canary sets the requeue
    pinned_resolver = FakeResolver({PINNED: v("3", S3_V3), canary_uri: v("4", S3_V4)})
    pinned_md = reg_md(PINNED, canary={"storageUri": canary_uri, "trafficPercent": 25})
    assert resolve(pinned_md, pinned_resolver, {}).next_check == INTERVAL
    # overdue never gives a negative requeue
    out = RegistryOutcome()
    registry._soonest(out, -3.0)
    assert out.next_check == 0.0


def test_a_missing_secret_is_a_registry_problem_naming_it() -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    out = resolve(reg_md(secretName="modeldeploy-mlflow"), resolver, {}, secrets={})
    assert resolver.calls == []
    assert out.unresolved == ["model"]
    ((reason, message),) = out.problems
    assert reason is c.REGISTRY_UNAVAILABLE
    assert "the Secret modeldeploy-mlflow" in message


def test_resolution_from_status_tolerates_junk() -> None:
    assert Resolution.from_status(None) is None
    assert Resolution.from_status("x") is None
    assert Resolution.from_status({"uri": ALIAS, "version": "3"}) is None
    r = Resolution(ALIAS, "3", S3_V3, NOW, "run-a")
    assert Resolution.from_status(r.to_status()) == r
    assert "runId" not in Resolution(ALIAS, "3", S3_V3, NOW).to_status()


# --- effective ---------------------------------------------------------------------------------


def test_effective_replaces_model_and_canary_uris_with_format_mlflow() -> None:
    canary_uri = "models:/iris@challenger"
    md = reg_md(canary={"storageUri": canary_uri, "trafficPercent": 25, "format": "sklearn"})
    eff = registry.effective(
        md,
        {
            "model": Resolution(ALIAS, "3", S3_V3, NOW),
            "canary": Resolution(canary_uri, "4", S3_V4, NOW),
        },
    )
    assert eff.spec.model.storage_uri == S3_V3
    assert eff.spec.model.format == "mlflow"
    assert eff.spec.canary is not None
    assert eff.spec.canary.storage_uri == S3_V4
    assert eff.spec.canary.format == "mlflow"
    assert eff.spec.canary.traffic_percent == 25
    assert eff.spec.model.mlflow == md.spec.model.mlflow
    # the original is untouched
    assert md.spec.model.storage_uri == ALIAS
    assert md.spec.model.format == "sklearn"


def test_effective_replaces_only_the_resolved_field() -> None:
    canary_uri = "models:/iris@challenger"
    md = reg_md(canary={"storageUri": canary_uri, "trafficPercent": 25})
    eff = registry.effective(md, {"model": Resolution(ALIAS, "3", S3_V3, NOW)})
    assert eff.spec.model.storage_uri == S3_V3
    assert eff.spec.canary is not None
    assert eff.spec.canary.storage_uri == canary_uri


def test_effective_without_resolutions_is_unchanged() -> None:
    md = reg_md()
    assert registry.effective(md, {}) is md
    plain = make_md()
    assert registry.effective(plain, {}) == plain


# --- reconcile ---------------------------------------------------------------------------------


def registry_body(**mlflow_extra: Any) -> Obj:
    return md_body(model={"storageUri": ALIAS, "mlflow": mlflow(**mlflow_extra)})


def run(
    cluster: FakeCluster,
    body: Obj,
    settings: OperatorSettings,
    resolver: FakeResolver,
    due: dict[CheckKey, Due],
    clock: float,
    now: str = NOW,
) -> Outcome:
    out = reconcile(
        cluster, body, settings, now=now, clock=clock, resolver=resolver, registry_due=due
    )
    body["status"] = out.status  # what the API server holds after our status patch
    return out


def server_env(cluster: FakeCluster, deployment: str = "iris-stable") -> dict[str, str]:
    dep = cluster.objects[("Deployment", "default", deployment)]
    (container,) = [
        ct for ct in dep["spec"]["template"]["spec"]["containers"] if ct["name"] == "model-server"
    ]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def condition(body: Obj, ctype: str) -> Obj:
    (cond,) = [x for x in body["status"]["conditions"] if x["type"] == ctype]
    assert isinstance(cond, dict)
    return cond


def test_reconcile_serves_the_resolved_artifact_and_follows_the_alias(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3, "run-a")})
    due: dict[CheckKey, Due] = {}
    body = registry_body()

    out = run(cluster, body, settings, resolver, due, T0)
    assert resolver.calls == [(ALIAS, TRACKING, {})]
    env = server_env(cluster)
    assert env["STORAGE_URI"] == S3_V3
    assert env["MODEL_FORMAT"] == "mlflow"
    assert body["status"]["registry"]["model"] == {
        "uri": ALIAS,
        "version": "3",
        "artifactUri": S3_V3,
        "resolvedAt": NOW,
        "runId": "run-a",
    }
    assert body["status"]["stable"]["storageUri"] == S3_V3
    assert out.requeue_after == INTERVAL
    cluster.roll_out()
    run(cluster, body, settings, resolver, due, T0 + 1)
    assert condition(body, "Ready")["status"] == "True"
    assert len(resolver.calls) == 1  # not due yet

    # the alias moves: the next due run rolls the new artifact out and says so
    resolver.answers[ALIAS] = v("4", S3_V4, "run-b")
    cluster.events.clear()
    run(cluster, body, settings, resolver, due, T0 + INTERVAL, now=LATER)
    assert len(resolver.calls) == 2
    assert server_env(cluster)["STORAGE_URI"] == S3_V4
    assert body["status"]["registry"]["model"]["version"] == "4"
    assert body["status"]["registry"]["model"]["resolvedAt"] == LATER
    assert ("Normal", "RegistryVersionChanged") in [(t, r) for t, r, _ in cluster.events]
    cluster.roll_out()
    run(cluster, body, settings, resolver, due, T0 + INTERVAL + 1, now=LATER)
    assert condition(body, "Ready")["status"] == "True"

    # the registry goes away: the pods keep version 4, Degraded says why
    resolver.answers[ALIAS] = RegistryError("unreachable", "connection refused")
    before = cluster.objects[("Deployment", "default", "iris-stable")]["spec"]
    cluster.calls.clear()
    out = run(cluster, body, settings, resolver, due, T0 + 2 * INTERVAL, now=LATER)
    assert len(resolver.calls) == 3
    assert not [w for w in cluster.writes() if w.startswith(("apply", "delete"))]
    assert cluster.objects[("Deployment", "default", "iris-stable")]["spec"] == before
    assert server_env(cluster)["STORAGE_URI"] == S3_V4
    degraded = condition(body, "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "RegistryUnavailable"
    assert "keep serving version 4" in degraded["message"]
    assert body["status"]["registry"]["model"]["version"] == "4"
    assert out.requeue_after == RETRY_SECONDS


def test_reconcile_writes_no_child_while_a_reference_was_never_resolved(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    resolver = FakeResolver({ALIAS: RegistryError("unreachable", "connection refused")})
    due: dict[CheckKey, Due] = {}
    body = registry_body()
    out = run(cluster, body, settings, resolver, due, T0)
    assert [w for w in cluster.writes() if w.startswith(("apply", "delete"))] == []
    assert cluster.objects == {}
    ready = condition(body, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "RegistryUnavailable"
    assert "nothing is deployed" in ready["message"]
    assert condition(body, "Degraded")["reason"] == "RegistryUnavailable"
    assert condition(body, "Progressing")["status"] == "False"
    assert body["status"].get("registry") in (None, {})
    assert out.requeue_after == RETRY_SECONDS

    # once the registry answers, the children appear
    resolver.answers[ALIAS] = v("3", S3_V3)
    run(cluster, body, settings, resolver, due, T0 + RETRY_SECONDS)
    assert server_env(cluster)["STORAGE_URI"] == S3_V3
    assert body["status"]["registry"]["model"]["version"] == "3"


def test_reconcile_without_a_resolver_is_unavailable(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = registry_body()
    out = reconcile(cluster, body, settings, now=NOW, clock=T0)
    assert cluster.objects == {}
    ready = next(x for x in out.status["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "RegistryUnavailable"
    assert "no registry client" in ready["message"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"MLFLOW_TRACKING_TOKEN": "tok-123"}, "Bearer tok-123"),
        (
            {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "pw"},
            "Basic " + base64.b64encode(b"alice:pw").decode(),
        ),
    ],
)
def test_reconcile_sends_the_secrets_credentials(
    cluster: FakeCluster, settings: OperatorSettings, data: dict[str, str], expected: str
) -> None:
    cluster.objects[("Secret", "default", "modeldeploy-mlflow")] = secret(**data)
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    body = registry_body(secretName="modeldeploy-mlflow")
    run(cluster, body, settings, resolver, {}, T0)
    assert resolver.calls == [(ALIAS, TRACKING, {"Authorization": expected})]
    assert "get Secret/modeldeploy-mlflow" in cluster.calls
    assert server_env(cluster)["STORAGE_URI"] == S3_V3


def test_reconcile_refresh_annotation_asks_a_pinned_version_again(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    resolver = FakeResolver({PINNED: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    body = md_body(model={"storageUri": PINNED, "mlflow": mlflow()})
    out = run(cluster, body, settings, resolver, due, T0)
    assert out.requeue_after is None
    run(cluster, body, settings, resolver, due, T0 + 10 * INTERVAL)
    assert len(resolver.calls) == 1
    body["metadata"]["annotations"] = {REFRESH_ANNOTATION: "1"}
    run(cluster, body, settings, resolver, due, T0 + 10 * INTERVAL + 1)
    assert len(resolver.calls) == 2
    assert body["status"]["registry"]["refreshed"] == "1"
    run(cluster, body, settings, resolver, due, T0 + 10 * INTERVAL + 2)
    assert len(resolver.calls) == 2


def test_reconcile_a_missing_secret_blocks_with_a_message_naming_it(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    body = registry_body(secretName="modeldeploy-mlflow")
    run(cluster, body, settings, resolver, {}, T0)
    assert resolver.calls == []
    assert cluster.objects == {}
    ready = condition(body, "Ready")
    assert ready["reason"] == "RegistryUnavailable"
    assert "the Secret modeldeploy-mlflow" in ready["message"]


def test_a_plain_canary_beside_a_registry_model_keeps_its_format(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    body = md_body(
        model={"storageUri": ALIAS, "mlflow": mlflow()},
        canary={"storageUri": "s3://models/iris/v2/model.joblib", "trafficPercent": 25},
    )
    run(cluster, body, settings, FakeResolver({ALIAS: v("3", S3_V3)}), {}, T0)
    assert server_env(cluster, "iris-stable")["MODEL_FORMAT"] == "mlflow"
    assert server_env(cluster, "iris-canary")["MODEL_FORMAT"] == "sklearn"


def test_a_failure_is_still_reported_until_the_retry_and_not_asked_meanwhile() -> None:
    """Degraded must not flap between two attempts: the runs before the retry repeat the
    problem from memory without asking the registry."""
    resolver = FakeResolver({ALIAS: RegistryError("unreachable", "connection refused")})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(), resolver, due)
    assert first.unresolved == ["model"]
    between = resolve(reg_md(), resolver, due, clock=T0 + 5, previous=first.status())
    assert len(resolver.calls) == 1
    assert between.unresolved == ["model"]
    assert between.problems == first.problems
    assert between.next_check == pytest.approx(RETRY_SECONDS - 5)
    resolver.answers[ALIAS] = v("3", S3_V3)
    after = resolve(reg_md(), resolver, due, clock=T0 + RETRY_SECONDS, previous=first.status())
    assert len(resolver.calls) == 2
    assert after.problems == []
    assert after.resolved["model"].version == "3"


def test_a_failed_refresh_of_a_pinned_version_is_retried() -> None:
    resolver = FakeResolver({PINNED: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    first = resolve(reg_md(PINNED), resolver, due)
    assert due == {}  # resolved once, never asked again on its own
    resolver.answers[PINNED] = RegistryError("unreachable", "down")
    asked = {REFRESH_ANNOTATION: "now"}
    failed = resolve(
        reg_md(PINNED), resolver, due, clock=T0 + 1, previous=first.status(), annotations=asked
    )
    assert failed.problems
    resolver.answers[PINNED] = v("3", S3_V3)
    retried = resolve(
        reg_md(PINNED),
        resolver,
        due,
        clock=T0 + 1 + RETRY_SECONDS,
        previous=failed.status(),
        annotations=asked,
    )
    assert len(resolver.calls) == 3
    assert retried.problems == []
    assert due == {}


def test_an_alias_move_goes_through_the_progressive_rollout(
    cluster: FakeCluster, settings: OperatorSettings
) -> None:
    """With spec.rollout the new version runs as the canary beside the one that served before
    (stable keeps the old artifact), exactly as a hand edit of spec.model would."""
    resolver = FakeResolver({ALIAS: v("3", S3_V3)})
    due: dict[CheckKey, Due] = {}
    body = md_body(
        model={"storageUri": ALIAS, "mlflow": mlflow()},
        rollout={"steps": [{"setWeight": 50}, {"pause": {}}], "analysis": {"enabled": False}},
    )
    run(cluster, body, settings, resolver, due, T0)
    cluster.roll_out()
    run(cluster, body, settings, resolver, due, T0 + 1)
    assert server_env(cluster)["STORAGE_URI"] == S3_V3
    assert ("Deployment", "default", "iris-canary") not in cluster.objects

    resolver.answers[ALIAS] = v("4", S3_V4)
    run(cluster, body, settings, resolver, due, T0 + INTERVAL, now=LATER)
    cluster.roll_out()
    run(cluster, body, settings, resolver, due, T0 + INTERVAL + 1, now=LATER)
    assert server_env(cluster, "iris-canary")["STORAGE_URI"] == S3_V4
    assert server_env(cluster, "iris-canary")["MODEL_FORMAT"] == "mlflow"
    assert server_env(cluster)["STORAGE_URI"] == S3_V3  # stable serves the previous version
    ro = body["status"]["rollout"]
    assert ro["phase"] in ("Progressing", "Paused"), ro
    assert ro["previous"]["storageUri"] == S3_V3, ro
