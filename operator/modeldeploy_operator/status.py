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

Pure over dicts so it is tested from recorded child objects (tests/unit/operator/fixtures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modeldeploy_operator.builders import (
    CANARY,
    CONTAINER_NAME,
    STABLE,
    deployment_name,
    pod_selector,
)
from modeldeploy_operator.model import ANNOTATION_TEMPLATE_HASH, LABEL_TRACK, ModelDeployment
from modeldeploy_operator.split import cannot_honour, effective_percent, split_replicas

Obj = dict[str, Any]

IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


@dataclass(frozen=True)
class Problem:
    """Something a person must act on. Lower rank wins the Degraded condition's reason."""

    rank: int
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What reconcile saw (after its writes) for one ModelDeployment."""

    deployments: dict[str, Obj | None]  # track -> live Deployment
    pods: list[Obj] = field(default_factory=list)
    write_errors: list[str] = field(default_factory=list)  # apply/delete rejected by the API
    conflicts: list[str] = field(default_factory=list)  # children owned by someone else
    leftover_tracks: list[str] = field(default_factory=list)  # tracks being removed


@dataclass(frozen=True)
class TrackState:
    track: str
    uri: str
    desired: int
    replicas: int
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
    for c in _get(dep, "status", "conditions", default=[]):
        if c.get("type") == ctype:
            return dict(c)
    return None


def track_state(track: str, uri: str, desired: int, dep: Obj | None) -> TrackState:
    name = _get(dep, "metadata", "name", default=track)
    if dep is None:
        return TrackState(
            track, uri, desired, 0, 0, False, f"Deployment for {track} not created yet"
        )
    spec_replicas = int(_get(dep, "spec", "replicas", default=1))
    st = _get(dep, "status", default={})
    generation = int(_get(dep, "metadata", "generation", default=0))
    observed = int(st.get("observedGeneration") or 0)
    replicas = int(st.get("replicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    if observed < generation:
        waiting = f"Deployment {name} has not observed its latest spec yet"
    elif spec_replicas != desired:
        waiting = f"Deployment {name} asks for {spec_replicas} replicas, {desired} desired"
    elif updated < desired:
        waiting = f"{updated} of {desired} {track} pods run the current version"
    elif replicas > desired:
        waiting = f"{replicas - desired} old {track} pods are still terminating"
    elif available < desired:
        waiting = f"{available} of {desired} {track} pods are available"
    else:
        waiting = ""
    return TrackState(track, uri, desired, spec_replicas, ready, not waiting, waiting)


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
                        60,
                        "Unschedulable",
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
                        30,
                        "ImagePullFailed",
                        f"{where} cannot pull image {cs.get('image', '')}: {w_reason}"
                        + (f": {w_msg}" if w_msg else "")
                        + " (check spec.server.image and that the node can reach the registry)",
                    )
                )
                continue
            if w_reason in CONFIG_REASONS:
                out.append(
                    Problem(
                        40,
                        "PodConfigError",
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
                            20,
                            "ModelLoadFailed",
                            f"{where} exited with code {terminated.get('exitCode')} "
                            f"({restarts} restarts): {_last_lines(msg)}",
                        )
                    )
                else:
                    out.append(
                        Problem(
                            50,
                            "ServerCrashing",
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
                70,
                "ProgressDeadlineExceeded",
                f"the {track} rollout made no progress within its deadline: "
                f"{progressing.get('message', '').strip()} (see the pod problems above or "
                f"kubectl describe deployment {_get(dep, 'metadata', 'name', default=track)})",
            )
        )
    failure = _deploy_condition(dep, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        out.append(
            Problem(
                45,
                "ReplicaFailure",
                f"the {track} Deployment cannot create pods: {failure.get('message', '').strip()} "
                "(a ResourceQuota or LimitRange in the namespace?)",
            )
        )
    return out


def condition(
    ctype: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    previous: list[Obj],
    now: str,
) -> Obj:
    value = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == ctype), None)
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
) -> Obj:
    """The full status to write. ``previous`` is the live status (for transition times)."""
    spec = md.spec
    canary = spec.canary
    split = split_replicas(spec.replicas, canary.traffic_percent if canary else None)
    tracks = [
        track_state(STABLE, spec.model.storage_uri, split.stable, observed.deployments.get(STABLE))
    ]
    if canary is not None:
        tracks.append(
            track_state(CANARY, canary.storage_uri, split.canary, observed.deployments.get(CANARY))
        )

    ready_total = sum(t.ready for t in tracks)
    replicas_total = sum(t.replicas for t in tracks)

    def block(t: TrackState) -> Obj:
        return {
            "storageUri": t.uri,
            "replicas": t.replicas,
            "readyReplicas": t.ready,
            "trafficPercent": effective_percent(t.ready, ready_total),
        }

    problems: list[Problem] = []
    problems += [Problem(0, "ChildConflict", c) for c in observed.conflicts]
    problems += [Problem(10, "ApplyFailed", e) for e in observed.write_errors]
    problems += pod_problems(observed.pods, observed.deployments)
    for t in tracks:
        problems += deployment_problems(t.track, observed.deployments.get(t.track))
    problems.sort(key=lambda p: p.rank)

    waiting = [t.progress for t in tracks if not t.rolled_out]
    waiting += [
        f"the {t} track (Deployment {deployment_name(md.name, t)}) is being removed"
        for t in observed.leftover_tracks
    ]
    deadline = any(p.reason == "ProgressDeadlineExceeded" for p in problems)
    write_blocked = any(p.rank < 20 for p in problems)
    rolled_out = not waiting and not write_blocked

    gen = md.generation
    prev_conditions = list(previous.get("conditions") or [])

    if problems:
        first = problems[0]
        extra = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        degraded = condition(
            "Degraded", True, first.reason, first.message + extra, gen, prev_conditions, now
        )
    else:
        degraded = condition(
            "Degraded", False, "AsExpected", "no problems observed", gen, prev_conditions, now
        )

    if rolled_out:
        progressing = condition(
            "Progressing",
            False,
            "RolloutComplete",
            "every track runs the current spec",
            gen,
            prev_conditions,
            now,
        )
    elif deadline:
        progressing = condition(
            "Progressing",
            False,
            "ProgressDeadlineExceeded",
            degraded["message"],
            gen,
            prev_conditions,
            now,
        )
    elif write_blocked:
        progressing = condition(
            "Progressing", False, problems[0].reason, problems[0].message, gen, prev_conditions, now
        )
    else:
        progressing = condition(
            "Progressing", True, "RollingOut", "; ".join(waiting), gen, prev_conditions, now
        )

    uri_note = ", ".join(f"{t.track} {t.ready}/{t.replicas} serving {t.uri}" for t in tracks)
    note = ""
    if canary is not None and cannot_honour(spec.replicas, canary.traffic_percent):
        note = (
            f"; note: 1 replica cannot run both tracks, so the {STABLE if split.stable else CANARY}"
            " track gets it (set spec.replicas >= 2 to run a canary beside stable)"
        )
    if spec.replicas == 0 and rolled_out:
        ready = condition(
            "Ready",
            False,
            "ScaledToZero",
            "spec.replicas is 0: nothing serves (kubectl scale md/" + md.name + " --replicas=N)",
            gen,
            prev_conditions,
            now,
        )
    elif rolled_out:
        ready = condition(
            "Ready",
            True,
            "Serving",
            f"{ready_total}/{replicas_total} ready: {uri_note}{note}",
            gen,
            prev_conditions,
            now,
        )
    elif problems:
        ready = condition(
            "Ready", False, problems[0].reason, degraded["message"], gen, prev_conditions, now
        )
    else:
        ready = condition(
            "Ready", False, "RollingOut", "; ".join(waiting), gen, prev_conditions, now
        )

    status: Obj = {
        "observedGeneration": gen,
        "url": f"http://{md.name}.{md.namespace}.svc.{cluster_domain}",
        "replicas": replicas_total,
        "readyReplicas": ready_total,
        "replicaCounts": f"{ready_total}/{replicas_total}",
        "selector": pod_selector(md.name),
        "stable": block(tracks[0]),
        "conditions": [ready, progressing, degraded],
    }
    if canary is not None:
        status["canary"] = block(tracks[1])
    return status


def status_patch(live: Obj, desired: Obj) -> Obj | None:
    """A JSON merge patch turning ``live`` into ``desired`` for the fields the operator owns, or
    None when they are equal (an unchanged object gets no status write)."""
    patch: Obj = {}
    for k, v in desired.items():
        if live.get(k) != v:
            patch[k] = v
    for k in ("canary",):  # blocks the operator removes when their track goes away
        if k in live and k not in desired:
            patch[k] = None
    return patch or None
