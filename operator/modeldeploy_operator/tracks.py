"""Which tracks a ModelDeployment runs, and what each one serves: the one home of track knowledge.

A track is one model version behind its own Deployment and Service (``stable`` always, ``canary``
while ``spec.canary`` is set). The builders, the status computation and reconcile all need the
same facts about a track — its artifact (uri, format, digest), its share of ``spec.replicas``,
the names of its children — and they used to derive them each on their own. Here they are derived
once, from the spec, by ``plan_tracks``; everyone else reads the ``Track`` values.

With ``spec.rollout`` the step machine (rollout.py) decides what each track serves and the
canary's weight; ``plan_tracks`` takes its ``Decision`` and turns it into the same ``Track``
values, so builders and status read one thing whichever way the canary came to be.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from modeldeploy_operator.api import LABEL_TRACK, ModelDeployment
from modeldeploy_operator.rollout import PROMOTING, Decision
from modeldeploy_operator.split import Split, cannot_honour, split_replicas

STABLE: Final = "stable"
CANARY: Final = "canary"
ALL_TRACKS: Final = (STABLE, CANARY)

# Child names are DNS-1035 labels (<= 63 characters); the longest suffix a track adds decides
# how long a ModelDeployment's own name may be.
MAX_CHILD_NAME = 63
LONGEST_SUFFIX = max(len(f"-{t}") for t in ALL_TRACKS)
MAX_NAME = MAX_CHILD_NAME - LONGEST_SUFFIX


@dataclass(frozen=True)
class PodTarget:
    """A ready serving pod: its track and the IP its /metrics answers on."""

    track: str
    ip: str


def pod_target(pod: Mapping[str, Any]) -> PodTarget | None:
    """The pod's track and IP when it is a ready, running serving pod; None otherwise (the
    analysis and the drift check read exactly these pods)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    track = (meta.get("labels") or {}).get(LABEL_TRACK)
    ip = status.get("podIP")
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    if track not in ALL_TRACKS or not ip or not ready or meta.get("deletionTimestamp"):
        return None
    return PodTarget(str(track), str(ip))


def deployment_name(md_name: str, track: str) -> str:
    return f"{md_name}-{track}"


def service_name(md_name: str, track: str | None) -> str:
    """``<name>`` for the Service over every track (track None), ``<name>-<track>`` for one."""
    return f"{md_name}-{track}" if track else md_name


@dataclass(frozen=True)
class Track:
    """One track as the spec asks for it."""

    name: str  # STABLE or CANARY
    storage_uri: str
    format: str
    sha256: str  # "" when the digest is not checked
    replicas: int  # this track's share of spec.replicas
    requested_percent: int  # the share of traffic the spec asks for (the canary's percent)
    deployment: str  # child Deployment name
    service: str  # child Service name addressing only this track
    profile_uri: str = ""  # the drift reference profile; "": the server looks beside the model

    @property
    def model_version(self) -> str:
        """The version label the server reports: the digest's first 12 hex, else the track."""
        return self.sha256[:12] if self.sha256 else self.name


@dataclass(frozen=True)
class TrackPlan:
    """Every track the ModelDeployment should run right now, and those it should not."""

    active: tuple[Track, ...]  # stable first
    removed: tuple[str, ...]  # track names whose children must go
    single_replica_note: str  # "" unless one replica cannot run both tracks (see split.py)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.active)

    def get(self, name: str) -> Track | None:
        return next((t for t in self.active if t.name == name), None)

    @property
    def stable(self) -> Track:
        return self.active[0]


def _rollout_split(total: int, weight: int) -> Split:
    """spec.replicas divided at a rollout weight. Unlike a fixed canary, a rollout that has set
    a weight above 0 always gets a canary pod, and stable always keeps one, with a pod more than
    spec.replicas when there are too few to divide: otherwise a single-replica ModelDeployment
    could never show its canary any traffic, and an abort at weight 100 would have no stable
    pod to send the traffic back to at once. The extra pod lasts as long as the rollout."""
    split = split_replicas(total, weight)
    if total == 0:
        return split
    return Split(split.stable or 1, split.canary or (1 if weight > 0 else 0))


def _planned_by_rollout(md: ModelDeployment, decision: Decision) -> TrackPlan:
    split = _rollout_split(md.spec.replicas, decision.canary_weight)
    if decision.state.phase == PROMOTING:
        # Promotion moves stable to the new model at full size (maxUnavailable 0) while the
        # canary keeps its pods and weight, until every stable pod serves the new model.
        split = Split(md.spec.replicas, split.canary)
    stable_model = decision.stable
    active = [
        Track(
            name=STABLE,
            storage_uri=stable_model.storage_uri,
            format=stable_model.format,
            sha256=stable_model.sha256,
            replicas=split.stable if decision.canary else md.spec.replicas,
            requested_percent=100 - (decision.canary_weight if decision.canary else 0),
            deployment=deployment_name(md.name, STABLE),
            service=service_name(md.name, STABLE),
            profile_uri=stable_model.profile_uri,
        )
    ]
    if decision.canary is not None:
        active.append(
            Track(
                name=CANARY,
                storage_uri=decision.canary.storage_uri,
                format=decision.canary.format,
                sha256=decision.canary.sha256,
                replicas=split.canary,
                requested_percent=decision.canary_weight,
                deployment=deployment_name(md.name, CANARY),
                service=service_name(md.name, CANARY),
                profile_uri=decision.canary.profile_uri,
            )
        )
    names = {t.name for t in active}
    return TrackPlan(
        active=tuple(active),
        removed=tuple(t for t in ALL_TRACKS if t not in names),
        single_replica_note="",
    )


def plan_tracks(md: ModelDeployment, rollout: Decision | None = None) -> TrackPlan:
    """The tracks the spec asks for; with ``spec.rollout``, the ones ``rollout`` (the step
    machine's decision for this reconcile) asks for."""
    if rollout is not None:
        return _planned_by_rollout(md, rollout)
    spec = md.spec
    canary = spec.canary
    split = split_replicas(spec.replicas, canary.traffic_percent if canary else None)
    canary_percent = canary.traffic_percent if canary else 0
    active = [
        Track(
            name=STABLE,
            storage_uri=spec.model.storage_uri,
            format=str(spec.model.format),
            sha256=spec.model.sha256 or "",
            replicas=split.stable,
            requested_percent=100 - canary_percent,
            deployment=deployment_name(md.name, STABLE),
            service=service_name(md.name, STABLE),
            profile_uri=spec.model.profile_uri or "",
        )
    ]
    if canary is not None:
        active.append(
            Track(
                name=CANARY,
                storage_uri=canary.storage_uri,
                format=str(canary.format or spec.model.format),
                sha256=canary.sha256 or "",
                replicas=split.canary,
                requested_percent=canary_percent,
                deployment=deployment_name(md.name, CANARY),
                service=service_name(md.name, CANARY),
                profile_uri=canary.profile_uri or "",
            )
        )
    note = ""
    if canary is not None and cannot_honour(spec.replicas, canary.traffic_percent):
        note = (
            f"1 replica cannot run both tracks, so the {STABLE if split.stable else CANARY}"
            " track gets it (set spec.replicas >= 2 to run a canary beside stable)"
        )
    names = {t.name for t in active}
    return TrackPlan(
        active=tuple(active),
        removed=tuple(t for t in ALL_TRACKS if t not in names),
        single_replica_note=note,
    )
