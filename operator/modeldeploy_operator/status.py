"""Computes a ModelDeployment's status from its observed Deployments and Pods: a pure function.

Status is the product. ``kubectl get md`` and ``kubectl wait --for=condition=Ready`` are how people
and pipelines decide whether a model is serving, so the rules here are strict and honest:

* Ready=True only when every track's Deployment has observed its latest spec, all its pods run the
  current template, none of the old ones are left and all are available; and only at the
  generation the operator just applied. Zero replicas is not Ready (nothing serves).
* Degraded=True names the first thing a person must fix, in the server's own words when a pod
  exited with a termination message (a missing artifact, a digest mismatch), or the kubelet's
  (image pull failures), the scheduler's (unschedulable) or the Deployment controller's (progress
  deadline exceeded).
* The canary's traffic share is reported as it is (ready canary pods over ready pods), not as
  requested.

Pure over dicts so it is tested from recorded child objects (tests/unit/operator/fixtures). The
tracks and their replica split come from ``tracks.plan_tracks``, every reason and its rank from
``conditions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modeldeploy_operator import conditions as c
from modeldeploy_operator.api import ANNOTATION_TEMPLATE_HASH, LABEL_TRACK, ModelDeployment
from modeldeploy_operator.builders import CONTAINER_NAME, pod_selector, service_url
from modeldeploy_operator.conditions import Reason
from modeldeploy_operator.drift import DriftReport
from modeldeploy_operator.rollout import (
    ABORTED,
    HEALTHY,
    PAUSED,
    PROGRESSING,
    PROMOTING,
    RolloutState,
)
from modeldeploy_operator.split import effective_percent
from modeldeploy_operator.tracks import (
    ALL_TRACKS,
    Track,
    TrackPlan,
    deployment_name,
    plan_tracks,
)

Obj = dict[str, Any]

IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


# The Promoted condition's (and, during a rollout, Progressing's) reason per rollout phase.
_ROLLOUT_REASONS: dict[str, Reason] = {
    PROGRESSING: c.ROLLOUT_PROGRESSING,
    PAUSED: c.ROLLOUT_PAUSED,
    PROMOTING: c.ROLLOUT_PROMOTING,
    HEALTHY: c.ROLLOUT_PROMOTED,
    ABORTED: c.ROLLOUT_ABORTED,
}


@dataclass(frozen=True)
class Problem:
    """Something a person must act on; the reason's rank orders several (lowest first)."""

    reason: Reason
    message: str

    @property
    def rank(self) -> int:
        assert self.reason.rank is not None, f"{self.reason} is not a problem reason"
        return self.reason.rank


@dataclass(frozen=True)
class Observed:
    """What reconcile saw (after its writes) for one ModelDeployment."""

    deployments: dict[str, Obj | None]  # track -> live Deployment
    pods: list[Obj] = field(default_factory=list)
    write_errors: list[str] = field(default_factory=list)  # apply/delete rejected by the API
    conflicts: list[str] = field(default_factory=list)  # children owned by someone else
    leftover_tracks: list[str] = field(default_factory=list)  # tracks being removed
    route: Obj | None = None  # the live HTTPRoute, with spec.traffic.gateway
    route_api_missing: bool = False  # applying the HTTPRoute found no such resource
    rollout: RolloutState | None = None  # the step machine's state after this run (spec.rollout)
    # what the MLflow registry step said (registry.resolve), and whether a never-resolved
    # models:/ reference kept every child from being written
    registry_problems: list[tuple[Reason, str]] = field(default_factory=list)
    registry_blocked: bool = False
    # The latest drift check's report (drift.summarize); None: none since the operator started,
    # and the DataDrift condition and status.drift stay as they are.
    drift: DriftReport | None = None


@dataclass(frozen=True)
class TrackState:
    """One track as asked for (``track``) and as its live Deployment has it."""

    track: Track
    replicas: int  # what the live Deployment asks for
    ready: int
    rolled_out: bool
    progress: str  # what the rollout is waiting for, for messages


def _get(obj: Obj | None, *path: str, default: Any = None) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(p)
    return default if cur is None else cur


def _deploy_condition(dep: Obj | None, ctype: str) -> Obj | None:
    for cond in _get(dep, "status", "conditions", default=[]):
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def track_state(track: Track, dep: Obj | None) -> TrackState:
    name, desired = track.deployment, track.replicas
    if dep is None:
        return TrackState(track, 0, 0, False, f"Deployment {name} not created yet")
    spec_replicas = int(_get(dep, "spec", "replicas", default=1))
    st = _get(dep, "status", default={})
    generation = int(_get(dep, "metadata", "generation", default=0))
    observed = int(st.get("observedGeneration") or 0)
    replicas = int(st.get("replicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    t = track.name
    if observed < generation:
        waiting = f"Deployment {name} has not observed its latest spec yet"
    elif spec_replicas != desired:
        waiting = f"Deployment {name} asks for {spec_replicas} replicas, {desired} desired"
    elif updated < desired:
        waiting = f"{updated} of {desired} {t} pods run the current version"
    elif replicas > desired:
        waiting = f"{replicas - desired} old {t} pods are still terminating"
    elif available < desired:
        waiting = f"{available} of {desired} {t} pods are available"
    else:
        waiting = ""
    return TrackState(track, spec_replicas, ready, not waiting, waiting)


def _pod_track(pod: Obj) -> str:
    return str(_get(pod, "metadata", "labels", default={}).get(LABEL_TRACK, "?"))


def _is_stale(pod: Obj, deployments: dict[str, Obj | None]) -> bool:
    """True for a pod of an older template than its track's Deployment has now.

    Such a pod is being replaced; blaming it would report the previous model's failure (a 404
    for a uri already corrected) as the reason the current one does not serve.
    """
    current = _get(
        deployments.get(_pod_track(pod)),
        "spec",
        "template",
        "metadata",
        "annotations",
        ANNOTATION_TEMPLATE_HASH,
    )
    return (
        bool(current) and _get(pod, "metadata", "annotations", ANNOTATION_TEMPLATE_HASH) != current
    )


def pod_problems(pods: list[Obj], deployments: dict[str, Obj | None]) -> list[Problem]:
    """Problems visible on pods: the server's termination message, pull and scheduling failures.

    Only pods of each track's current template count (``deployments``: track -> live Deployment).
    """
    out: list[Problem] = []
    for pod in sorted(pods, key=lambda p: str(_get(p, "metadata", "name", default=""))):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue  # a pod on its way out is not a problem to act on
        if _is_stale(pod, deployments):
            continue
        name = meta.get("name", "?")
        where = f"{_pod_track(pod)} pod {name}"
        for cond in _get(pod, "status", "conditions", default=[]):
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                out.append(
                    Problem(
                        c.UNSCHEDULABLE,
                        f"{where} cannot be scheduled: {cond.get('message', '').strip()} "
                        "(lower spec.resources.requests or spec.replicas, or add nodes)",
                    )
                )
        statuses = _get(pod, "status", "containerStatuses", default=[])
        for cs in statuses:
            if cs.get("name") not in (CONTAINER_NAME, None):
                continue
            waiting = _get(cs, "state", "waiting", default={})
            w_reason = waiting.get("reason", "")
            w_msg = (waiting.get("message") or "").strip()
            if w_reason in IMAGE_PULL_REASONS:
                out.append(
                    Problem(
                        c.IMAGE_PULL_FAILED,
                        f"{where} cannot pull image {cs.get('image', '')}: {w_reason}"
                        + (f": {w_msg}" if w_msg else "")
                        + " (check spec.server.image and that the node can reach the registry)",
                    )
                )
                continue
            if w_reason in CONFIG_REASONS:
                out.append(
                    Problem(
                        c.POD_CONFIG_ERROR,
                        f"{where}: {w_reason}: {w_msg or 'see kubectl describe pod'} "
                        "(a Secret named in spec.credentials missing, or missing a key?)",
                    )
                )
                continue
            if cs.get("ready"):
                continue  # a container that restarted once but serves now is not degraded
            terminated = _get(cs, "state", "terminated") or _get(cs, "lastState", "terminated")
            if terminated and int(terminated.get("exitCode") or 0) != 0:
                msg = (terminated.get("message") or "").strip()
                restarts = int(cs.get("restartCount") or 0)
                if msg:
                    out.append(
                        Problem(
                            c.MODEL_LOAD_FAILED,
                            f"{where} exited with code {terminated.get('exitCode')} "
                            f"({restarts} restarts): {_last_lines(msg)}",
                        )
                    )
                else:
                    out.append(
                        Problem(
                            c.SERVER_CRASHING,
                            f"{where} exited with code {terminated.get('exitCode')} "
                            f"({terminated.get('reason', 'Error')}, {restarts} restarts) without "
                            "a termination message; see kubectl logs --previous",
                        )
                    )
    return out


def _last_lines(text: str, limit: int = 600) -> str:
    # FallbackToLogsOnError may hand us a log tail; the end of it is the part that explains.
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


def deployment_problems(track: str, dep: Obj | None) -> list[Problem]:
    out: list[Problem] = []
    progressing = _deploy_condition(dep, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        out.append(
            Problem(
                c.PROGRESS_DEADLINE_EXCEEDED,
                f"the {track} rollout made no progress within its deadline: "
                f"{progressing.get('message', '').strip()} (see the pod problems above or "
                f"kubectl describe deployment {_get(dep, 'metadata', 'name', default=track)})",
            )
        )
    failure = _deploy_condition(dep, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        out.append(
            Problem(
                c.REPLICA_FAILURE,
                f"the {track} Deployment cannot create pods: {failure.get('message', '').strip()} "
                "(a ResourceQuota or LimitRange in the namespace?)",
            )
        )
    return out


def route_problems(md: ModelDeployment, route: Obj | None, api_missing: bool) -> list[Problem]:
    """What the Gateway said about the HTTPRoute, in its own words (its parents' Accepted and
    ResolvedRefs conditions for the route's current generation)."""
    if md.spec.traffic is None or md.spec.traffic.gateway is None:
        return []
    if api_missing:
        return [
            Problem(
                c.GATEWAY_API_MISSING,
                "spec.traffic.gateway is set but this cluster does not serve HTTPRoutes "
                "(gateway.networking.k8s.io/v1): install the Gateway API CRDs and a Gateway "
                f"implementation, or remove spec.traffic.gateway; the Service {md.name} still "
                "splits traffic by ready pods",
            )
        ]
    generation = int(_get(route, "metadata", "generation", default=0))
    out: list[Problem] = []
    for parent in _get(route, "status", "parents", default=[]):
        ref = parent.get("parentRef") or {}
        where = f"Gateway {ref.get('namespace', md.namespace)}/{ref.get('name', '?')}"
        if ref.get("sectionName"):
            where += f" (listener {ref['sectionName']})"
        for cond in parent.get("conditions") or []:
            stale = int(cond.get("observedGeneration") or generation) < generation
            if cond.get("status") != "False" or stale:
                continue
            said = f"{cond.get('reason', '')}: {(cond.get('message') or '').strip()}".strip(": ")
            if cond.get("type") == "Accepted":
                out.append(
                    Problem(
                        c.ROUTE_NOT_ACCEPTED,
                        f"{where} did not accept HTTPRoute {md.name}: {said} (check "
                        "spec.traffic.gateway.parentRefs; in-cluster traffic is unaffected)",
                    )
                )
            elif cond.get("type") == "ResolvedRefs":
                out.append(
                    Problem(
                        c.ROUTE_REFS_UNRESOLVED,
                        f"{where} cannot resolve the backends of HTTPRoute {md.name}: {said}",
                    )
                )
    return out


def condition(
    ctype: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    previous: list[Obj],
    now: str,
) -> Obj:
    value = "Unknown" if status is None else "True" if status else "False"
    old = next((p for p in previous if p.get("type") == ctype), None)
    # The transition time moves only when the status flips: it answers "since when".
    since = old.get("lastTransitionTime") if old and old.get("status") == value else None
    return {
        "type": ctype,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }


def compute_status(
    md: ModelDeployment,
    observed: Observed,
    previous: Obj,
    now: str,
    cluster_domain: str = "cluster.local",
    tracks: TrackPlan | None = None,
) -> Obj:
    """The full status to write. ``previous`` is the live status (for transition times);
    ``tracks`` is ``plan_tracks(md)`` when the caller has it already."""
    plan = tracks or plan_tracks(md)
    states = [track_state(t, observed.deployments.get(t.name)) for t in plan.active]

    ready_total = sum(s.ready for s in states)
    replicas_total = sum(s.replicas for s in states)

    def block(s: TrackState) -> Obj:
        return {
            "storageUri": s.track.storage_uri,
            "replicas": s.replicas,
            "readyReplicas": s.ready,
            "trafficPercent": effective_percent(s.ready, ready_total),
        }

    problems: list[Problem] = []
    problems += [Problem(c.CHILD_CONFLICT, msg) for msg in observed.conflicts]
    problems += [Problem(c.APPLY_FAILED, msg) for msg in observed.write_errors]
    problems += [Problem(reason, msg) for reason, msg in observed.registry_problems]
    problems += pod_problems(observed.pods, observed.deployments)
    for t in plan.active:
        problems += deployment_problems(t.name, observed.deployments.get(t.name))
    problems += route_problems(md, observed.route, observed.route_api_missing)
    rollout = observed.rollout if md.spec.rollout is not None else None
    if rollout is not None and rollout.phase == ABORTED:
        problems.append(Problem(c.ROLLOUT_ABORTED, rollout.message))
    problems.sort(key=lambda p: p.rank)

    waiting = [s.progress for s in states if not s.rolled_out]
    waiting += [
        f"the {t} track (Deployment {deployment_name(md.name, t)}) is being removed"
        for t in observed.leftover_tracks
    ]
    deadline = any(p.reason is c.PROGRESS_DEADLINE_EXCEEDED for p in problems)
    write_blocked = observed.registry_blocked or any(p.reason.blocks_rollout for p in problems)
    rolled_out = not waiting and not write_blocked

    gen = md.generation
    prev_conditions = list(previous.get("conditions") or [])

    def cond(ctype: str, value: bool | None, reason: Reason, message: str) -> Obj:
        return condition(ctype, value, reason.name, message, gen, prev_conditions, now)

    if problems:
        first = problems[0]
        extra = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        degraded = cond(c.DEGRADED, True, first.reason, first.message + extra)
    else:
        degraded = cond(c.DEGRADED, False, c.AS_EXPECTED, "no problems observed")

    in_rollout = rollout is not None and rollout.phase in (PROGRESSING, PAUSED, PROMOTING)
    if in_rollout and not write_blocked and not deadline:
        assert rollout is not None
        progressing = cond(c.PROGRESSING, True, _ROLLOUT_REASONS[rollout.phase], rollout.message)
    elif rolled_out:
        progressing = cond(
            c.PROGRESSING, False, c.ROLLOUT_COMPLETE, "every track runs the current spec"
        )
    elif deadline:
        progressing = cond(c.PROGRESSING, False, c.PROGRESS_DEADLINE_EXCEEDED, degraded["message"])
    elif write_blocked:
        progressing = cond(c.PROGRESSING, False, problems[0].reason, problems[0].message)
    else:
        progressing = cond(c.PROGRESSING, True, c.ROLLING_OUT, "; ".join(waiting))

    uri_note = ", ".join(
        f"{s.track.name} {s.ready}/{s.replicas} serving {s.track.storage_uri}" for s in states
    )
    note = f"; note: {plan.single_replica_note}" if plan.single_replica_note else ""
    if md.spec.replicas == 0 and rolled_out:
        ready = cond(
            c.READY,
            False,
            c.SCALED_TO_ZERO,
            "spec.replicas is 0: nothing serves (kubectl scale md/" + md.name + " --replicas=N)",
        )
    elif rolled_out:
        ready = cond(
            c.READY, True, c.SERVING, f"{ready_total}/{replicas_total} ready: {uri_note}{note}"
        )
    elif problems:
        ready = cond(c.READY, False, problems[0].reason, degraded["message"])
    else:
        ready = cond(c.READY, False, c.ROLLING_OUT, "; ".join(waiting))

    status: Obj = {
        "observedGeneration": gen,
        "url": external_url(md) or service_url(md, cluster_domain),
        "address": service_url(md, cluster_domain),
        "replicas": replicas_total,
        "readyReplicas": ready_total,
        "replicaCounts": f"{ready_total}/{replicas_total}",
        "selector": pod_selector(md.name),
        "conditions": [ready, progressing, degraded],
    }
    if rollout is not None and md.spec.rollout is not None:
        status["rollout"] = rollout.to_status(len(md.spec.rollout.steps))
        reason = _ROLLOUT_REASONS[rollout.phase]
        status["conditions"].append(
            cond(c.PROMOTED, rollout.phase == HEALTHY, reason, rollout.message)
        )
    for s in states:
        status[s.track.name] = block(s)
    _drift(status, observed.drift, previous, cond)
    return status


def _drift(
    status: Obj,
    report: DriftReport | None,
    previous: Obj,
    cond: Callable[[str, bool | None, Reason, str], Obj],
) -> None:
    """The DataDrift condition and status.drift: from this run's report, else as they were."""
    if report is None:
        old = next(
            (x for x in previous.get("conditions") or [] if x.get("type") == c.DATA_DRIFT), None
        )
        if old is not None:
            status["conditions"].append(old)
        if previous.get("drift"):
            status["drift"] = previous["drift"]
        return
    status["conditions"].append(cond(c.DATA_DRIFT, report.drifting, report.reason, report.message))
    drift = report.to_status()
    if drift is not None:
        status["drift"] = drift


def external_url(md: ModelDeployment) -> str | None:
    """http://<first exact hostname> when a Gateway route with host names carries the traffic
    (a wildcard names no host a client could call)."""
    gateway = md.spec.traffic.gateway if md.spec.traffic else None
    exact = [h for h in (gateway.hostnames or []) if not h.startswith("*")] if gateway else []
    return f"http://{exact[0]}" if exact else None


def status_patch(live: Obj, desired: Obj) -> Obj | None:
    """A JSON merge patch turning ``live`` into ``desired`` for the fields the operator owns, or
    None when they are equal (an unchanged object gets no status write)."""
    patch: Obj = {}
    for k, v in desired.items():
        if live.get(k) != v:
            patch[k] = v
    # blocks that go away with their track, spec.rollout or the last models:/ storageUri
    for k in (*ALL_TRACKS, "rollout", "registry", "drift"):
        if k in live and k not in desired:
            patch[k] = None
    return patch or None
