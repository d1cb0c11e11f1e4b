"""The one idempotent reconcile path: observe, plan, write the difference, compute status.

Create, update, resume, the resync loop and the child watches all end here. There is no "first
run": a ModelDeployment with no children and one with every child in place go through the same
steps, and the second run over an unchanged object performs no write at all (reads only).

The cluster is reached through the ``Cluster`` protocol, implemented by ``kube.Kube`` against the
API server and by an in-memory fake in the unit tests, so this module imports neither kopf nor the
Kubernetes client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from modeldeploy_operator import analysis, builders, plan, registry, rollout, status
from modeldeploy_operator import conditions as c
from modeldeploy_operator.api import LABEL_TRACK, ModelDeployment, parse_duration
from modeldeploy_operator.drift import DriftReport
from modeldeploy_operator.errors import ApiError, ObjectGoneError
from modeldeploy_operator.settings import OperatorSettings
from modeldeploy_operator.tracks import (
    ALL_TRACKS,
    CANARY,
    STABLE,
    TrackPlan,
    deployment_name,
    plan_tracks,
    pod_target,
)

Obj = dict[str, Any]
log = logging.getLogger(__name__)


class Cluster(Protocol):
    """The API calls reconcile needs; every method raises ``ApiError`` on a rejected request."""

    def get(self, kind: str, namespace: str, name: str) -> Obj | None: ...

    def apply(self, manifest: Obj) -> Obj: ...

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None: ...

    def list_pods(self, namespace: str, selector: str) -> list[Obj]: ...

    def patch_status(self, namespace: str, name: str, patch: Obj) -> Obj | None: ...

    def event(self, md: Obj, type_: str, reason: str, message: str) -> None: ...


# pod name -> pod IP in; pod name -> its parsed /metrics or why it could not be scraped out.
Scraper = Callable[[Mapping[str, str]], Mapping[str, "analysis.PodCounters | str"]]


@dataclass
class Baseline:
    """The previous scrape of one ModelDeployment's pods, the start of the next interval. Held in
    memory only: after an operator restart the first scrape is a new baseline, so one interval
    goes unjudged; nothing else depends on it."""

    revision: str
    pods: dict[str, tuple[str, analysis.PodCounters]]  # pod -> (track, counters)


class InvalidSpecError(Exception):
    """The stored spec does not parse (the CRD is older than the operator, or was bypassed)."""


@dataclass
class Outcome:
    writes: list[str] = field(default_factory=list)
    status_written: bool = False
    status: Obj = field(default_factory=dict)
    retry: ApiError | None = None  # a transient failure: the caller should retry soon
    requeue_after: float | None = None  # seconds until a rollout step or analysis is due


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid_status(body: Obj, err: ValidationError, previous: Obj, now: str) -> Obj:
    gen = int(body["metadata"].get("generation") or 0)
    msgs = "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:5]
    )
    message = f"the spec does not match this operator's API: {msgs}"
    prev = list(previous.get("conditions") or [])
    return {
        "observedGeneration": gen,
        "conditions": [
            status.condition(
                ctype, ctype == c.DEGRADED, c.INVALID_SPEC.name, message, gen, prev, now
            )
            for ctype in c.CONDITION_TYPES
        ],
    }


def _ready_tracks(observed: dict[plan.Key, Obj | None], tracks: TrackPlan) -> frozenset[str]:
    """Tracks whose live Deployment has a ready pod: only those may get route weight."""
    ready = set()
    for t in tracks.active:
        dep = observed.get(("Deployment", t.deployment)) or {}
        if int((dep.get("status") or {}).get("readyReplicas") or 0) > 0:
            ready.add(t.name)
    return frozenset(ready)


def children_to_read(
    possible: list[plan.Key], wanted: set[plan.Key], live_status: Obj, thorough: bool
) -> list[plan.Key]:
    """The ones the spec wants plus the ones status recorded as existing after the last
    reconcile: only those can need a write or a delete. Every possible child when ``thorough``,
    or when status was written without that record (a CRD too old to keep the field, an
    invalid spec's status).

    A status no reconcile has written yet (no observedGeneration) records nothing, because
    nothing was created: the write that first sets observedGeneration records the children
    the same run created. A child created by a run that died before that write, and then
    dropped from the spec, is found by the next thorough run (the resync loop's), like one
    created by a run that died before any later status write."""
    recorded = live_status.get("children")
    if recorded is None and not live_status.get("observedGeneration"):
        recorded = []
    if thorough or not isinstance(recorded, list):
        return possible
    existed = {tuple(str(c).split("/", 1)) for c in recorded}
    return [k for k in possible if k in wanted or k in existed]


def _commands(body: Obj) -> dict[str, str]:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return {
        cmd: str(annotations[key])
        for cmd, key in rollout.COMMAND_ANNOTATIONS.items()
        if annotations.get(key)
    }


def _analyse(
    md: ModelDeployment,
    pods: list[Obj],
    scrape: Scraper,
    baselines: MutableMapping[tuple[str, str], Baseline],
    revision: str,
) -> tuple[rollout.Verdict, tuple[analysis.Check, ...]]:
    """One analysis interval: scrape the ready pods of both tracks and judge canary against
    stable over the counters since the previous scrape. The first scrape of a rollout is only
    a baseline (Inconclusive, no checks)."""
    assert md.spec.rollout is not None
    tracks: dict[str, str] = {}
    targets: dict[str, str] = {}
    for pod in pods:
        if (target := pod_target(pod)) is not None:
            tracks[pod["metadata"]["name"]] = target.track
            targets[pod["metadata"]["name"]] = target.ip
    scraped = scrape(targets)
    key = (md.namespace, md.name)
    before = baselines.get(key)
    if before is not None and before.revision != revision:
        before = None
    current: dict[str, tuple[str, analysis.PodCounters]] = {}
    for pod_name, result in scraped.items():
        if isinstance(result, str):
            log.warning("%s/%s: %s", md.namespace, md.name, result)
            # Keep its last counters as its baseline: otherwise the next scrape that reaches
            # it would count the pod's whole history as one interval.
            if before is not None and pod_name in before.pods:
                current[pod_name] = before.pods[pod_name]
        else:
            current[pod_name] = (tracks[pod_name], result)
    baselines[key] = Baseline(revision, current)
    if before is None:
        return "Inconclusive", ()

    def of(
        pods_: dict[str, tuple[str, analysis.PodCounters]], track: str
    ) -> dict[str, analysis.PodCounters]:
        return {n: counters for n, (t, counters) in pods_.items() if t == track}

    canary = analysis.window(of(before.pods, CANARY), of(current, CANARY))
    stable = analysis.window(of(before.pods, STABLE), of(current, STABLE))
    checks = analysis.judge(canary, stable, md.spec.rollout.analysis)
    return analysis.verdict(checks), checks


def _decide_rollout(
    cluster: Cluster,
    md: ModelDeployment,
    body: Obj,
    live_status: Obj,
    observed: dict[plan.Key, Obj | None],
    scrape: Scraper | None,
    baselines: MutableMapping[tuple[str, str], Baseline],
    clock: float,
) -> tuple[rollout.Decision, list[Obj] | None]:
    """The step machine's decision for this run (spec.rollout), reading both track
    Deployments first, and the pods when an analysis interval is due."""
    spec = md.spec.rollout
    assert spec is not None
    for track in ALL_TRACKS:
        key = ("Deployment", deployment_name(md.name, track))
        if key not in observed:
            observed[key] = cluster.get("Deployment", md.namespace, key[1])
    stable_dep = observed[("Deployment", deployment_name(md.name, STABLE))]
    canary_dep = observed[("Deployment", deployment_name(md.name, CANARY))]
    target = rollout.model_of_spec(md.spec.model)
    previous = rollout.RolloutState.from_status(live_status.get("rollout"))
    canary_ready = rollout.model_of_deployment(
        canary_dep, builders.CONTAINER_NAME
    ) == target and rollout.deployment_rolled_out(canary_dep)
    verdict: rollout.Verdict | None = None
    checks: tuple[analysis.Check, ...] = ()
    pods: list[Obj] | None = None
    if (
        scrape is not None
        and canary_ready
        and previous is not None
        and previous.revision == target.revision
        and rollout.analysis_due(spec, previous, clock)
    ):
        pods = cluster.list_pods(md.namespace, builders.pod_selector(md.name))
        verdict, checks = _analyse(md, pods, scrape, baselines, target.revision)
    obs = rollout.Observation(
        target=target,
        stable=rollout.model_of_deployment(stable_dep, builders.CONTAINER_NAME),
        stable_rolled_out=rollout.deployment_rolled_out(stable_dep),
        canary_ready=canary_ready,
        commands=_commands(body),
        now=clock,
        verdict=verdict,
        checks=checks,
    )
    return rollout.advance(spec, previous, obs), pods


def reconcile(
    cluster: Cluster,
    body: Obj,
    settings: OperatorSettings,
    now: str | None = None,
    *,
    thorough: bool = True,
    scrape: Scraper | None = None,
    baselines: MutableMapping[tuple[str, str], Baseline] | None = None,
    clock: float | None = None,
    resolver: registry.Resolver | None = None,
    registry_due: MutableMapping[registry.CheckKey, registry.Due] | None = None,
    drift: DriftReport | None = None,
) -> Outcome:
    """Brings the children of ``body`` (a ModelDeployment as stored) to the desired state and
    writes its status when it changed. Transient API failures are returned in ``Outcome.retry``
    after status has been brought up to date as far as possible. ``thorough``: read every
    child the operator could have created, not only those status recorded (children_to_read).
    With spec.rollout, ``scrape`` reads the pods' metrics for the analysis (None: no analysis),
    ``baselines`` keeps each object's previous scrape between runs, and ``clock`` is the time
    the step machine sees (seconds since the epoch; default: now). ``resolver`` asks the
    MLflow registry what a models:/ storageUri names (None: no registry can be reached), and
    ``registry_due`` keeps when each reference is to be asked next (registry.resolve).
    ``drift`` is the latest drift check of its pods (drift.summarize; None: keep status's).
    """
    now = now or now_rfc3339()
    out = Outcome()
    live_status: Obj = dict(body.get("status") or {})
    try:
        md = ModelDeployment.from_body(body)
    except ValidationError as e:
        desired = _invalid_status(body, e, live_status, now)
        _write_status(cluster, body, live_status, desired, out)
        raise InvalidSpecError(desired["conditions"][0]["message"]) from e

    ns = md.namespace
    clock = clock if clock is not None else time.time()
    reg: registry.RegistryOutcome | None = None
    if registry.references(md):
        reg = registry.resolve(
            md,
            (body.get("metadata") or {}).get("annotations") or {},
            dict(live_status.get("registry") or {}),
            resolver or registry.NO_RESOLVER,
            lambda secret: _read_secret(cluster, ns, secret),
            registry_due if registry_due is not None else {},
            clock,
            now,
        )
        for type_, reason, message in reg.events:
            cluster.event(body, type_, reason, message)
        out.requeue_after = reg.next_check
        md = registry.effective(md, reg.resolved)
    # A models:/ reference that was never resolved names no artifact: nothing is written (what
    # exists keeps serving) until the registry answers; status says why.
    blocked = reg is not None and bool(reg.unresolved)
    observed: dict[plan.Key, Obj | None] = {}
    decision: rollout.Decision | None = None
    pods: list[Obj] | None = None
    if md.spec.rollout is not None and not blocked:
        decision, pods = _decide_rollout(
            cluster,
            md,
            body,
            live_status,
            observed,
            scrape,
            baselines if baselines is not None else {},
            clock,
        )
        for type_, reason, message in decision.events:
            cluster.event(body, type_, reason, message)
        out.requeue_after = _sooner(out.requeue_after, decision.requeue_after)
        if decision.analysing and md.spec.rollout.analysis.enabled:
            interval = parse_duration(md.spec.rollout.analysis.interval)
            out.requeue_after = _sooner(out.requeue_after, interval)
    tracks = plan_tracks(md, decision)
    wanted = {plan.key_of(m) for m in builders.desired_children(md, settings, tracks)}
    possible = builders.possible_children(md.name, ns)
    for kind, name in children_to_read(possible, wanted, live_status, thorough):
        if (kind, name) not in observed:
            observed[(kind, name)] = cluster.get(kind, ns, name)
    desired_children = builders.desired_children(
        md, settings, tracks, _ready_tracks(observed, tracks)
    )

    the_plan = plan.Plan() if blocked else plan.plan(desired_children, observed, md.uid)
    errors: list[str] = []
    route_api_missing = False
    # One Event per kind of change per run ("Created Deployment a: created; Service b: ..."), not
    # one per child: a new ModelDeployment would otherwise cost half a dozen extra API calls.
    done: dict[str, list[str]] = {}
    for action in the_plan.actions:
        what = f"{action.kind} {action.name}"
        try:
            if action.verb == "apply":
                assert action.manifest is not None
                observed[(action.kind, action.name)] = cluster.apply(action.manifest)
                out.writes.append(f"apply {what}")
                reason = "Created" if action.reason == "created" else "Updated"
                done.setdefault(reason, []).append(f"{what}: {action.reason}")
            else:
                cluster.delete(action.kind, ns, action.name, action.uid)
                observed[(action.kind, action.name)] = None
                out.writes.append(f"delete {what}")
                done.setdefault("Deleted", []).append(f"{what}: {action.reason}")
        except ApiError as e:
            if e.namespace_terminating:
                raise ObjectGoneError(f"namespace {ns} is being deleted") from e
            if action.kind == "HTTPRoute" and e.status == 404:
                route_api_missing = True  # no such resource: the Gateway API CRDs are missing
                continue
            if e.retryable:
                out.retry = out.retry or e
                log.warning("%s %s failed, will retry: %s", action.verb, what, e)
                continue
            # No Event per attempt: the Degraded transition announces it once.
            errors.append(f"{action.verb} {what} was rejected: {e.message}")

    for reason, items in done.items():
        cluster.event(body, "Normal", reason, f"{reason} " + "; ".join(items))

    if pods is None or the_plan.actions:
        pods = cluster.list_pods(ns, builders.pod_selector(md.name))
    deployments = {t.name: observed.get(("Deployment", t.deployment)) for t in tracks.active}
    leftover = [
        t for t in tracks.removed if observed.get(("Deployment", deployment_name(md.name, t)))
    ]
    # Pods of a removed track still terminating must not be blamed on the tracks that remain.
    live_pods = [
        p
        for p in pods
        if (p.get("metadata") or {}).get("labels", {}).get(LABEL_TRACK) in tracks.names
    ]
    obs = status.Observed(
        deployments=deployments,
        pods=live_pods,
        write_errors=errors,
        conflicts=the_plan.conflicts,
        leftover_tracks=leftover,
        route=observed.get(("HTTPRoute", md.name)),
        route_api_missing=route_api_missing,
        rollout=decision.state if decision is not None else None,
        registry_problems=reg.problems if reg is not None else [],
        registry_blocked=blocked,
        drift=drift,
    )
    desired_status = status.compute_status(
        md, obs, live_status, now, settings.cluster_domain, tracks
    )
    desired_status["children"] = [f"{k}/{n}" for (k, n) in possible if observed.get((k, n))]
    if reg is not None:
        desired_status["registry"] = reg.status()
    _write_status(cluster, body, live_status, desired_status, out)
    return out


def _read_secret(cluster: Cluster, namespace: str, name: str) -> Obj | None:
    try:
        return cluster.get("Secret", namespace, name)
    except ApiError as e:
        hint = (
            f" (the operator's RBAC lets it read only Secrets named {registry.MLFLOW_SECRET}: "
            "use that name, or grant get on this one)"
            if e.status == 403
            else ""
        )
        raise registry.RegistryError(
            "unreachable", f"reading the Secret {name} failed: {e.message}{hint}"
        ) from e


def _sooner(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _write_status(cluster: Cluster, body: Obj, live: Obj, desired: Obj, out: Outcome) -> None:
    out.status = desired
    patch = status.status_patch(live, desired)
    if patch is None:
        return
    meta = body["metadata"]
    try:
        cluster.patch_status(meta["namespace"], meta["name"], patch)
    except ApiError as e:
        if e.status == 404:
            raise ObjectGoneError(f"{meta['namespace']}/{meta['name']} was deleted") from e
        raise
    out.status_written = True
    _announce_transitions(cluster, body, live, desired)


def _announce_transitions(cluster: Cluster, body: Obj, live: Obj, desired: Obj) -> None:
    """An Event when Ready or Degraded flips, so `kubectl describe md` tells the story."""
    before = {c.get("type"): c for c in live.get("conditions") or []}
    for cond in desired.get("conditions") or []:
        old = before.get(cond["type"])
        if (
            old is not None
            and old.get("status") == cond["status"]
            and old.get("reason") == cond["reason"]
        ):
            continue
        if cond["type"] == c.READY and cond["status"] == "True":
            cluster.event(body, "Normal", c.READY, cond["message"])
        elif cond["type"] == c.DEGRADED and cond["status"] == "True":
            cluster.event(body, "Warning", cond["reason"], cond["message"])
