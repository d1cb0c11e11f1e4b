"""The progressive rollout's step machine, as a pure function of the spec, status and observations.

When ``spec.rollout`` is set, a change of ``spec.model`` does not roll the stable track: the new
model runs as a canary beside the one that served before, and ``advance`` walks it through
``spec.rollout.steps`` (set a weight, pause for a while or until a person promotes), counts the
analysis intervals that failed, and ends in promotion (the stable track moves to the new model,
then the canary goes away) or abort (canary weight 0 at once, stable keeps the old model).

Everything it needs is passed in: the previous ``RolloutState`` (which lives in
``status.rollout``, so a restarted operator resumes at the same step), what the cluster shows (the
stable Deployment's model, whether the canary is ready), the command annotations, the time and
this run's analysis verdict. It returns the next state and what the tracks should run, and never
reads a clock or the network itself, so every transition is a unit test.

The model that served before is read from the stable Deployment when a rollout starts and kept
in ``status.rollout.previous``: from then on stable is held at it, whatever a hand edit does.
The operator never writes ``spec`` (GitOps tools own it); commands arrive as annotations whose
values the state remembers once handled, so ``kubectl annotate --overwrite`` with a fresh value
is a new command and a stale annotation is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from modeldeploy_operator.api import GROUP, ModelSpec, RolloutSpec, parse_duration

Obj = dict[str, Any]

PROGRESSING: Final = "Progressing"
PAUSED: Final = "Paused"
PROMOTING: Final = "Promoting"
HEALTHY: Final = "Healthy"
ABORTED: Final = "Aborted"
PHASES: Final = (PROGRESSING, PAUSED, PROMOTING, HEALTHY, ABORTED)
Phase = Literal["Progressing", "Paused", "Promoting", "Healthy", "Aborted"]

COMMANDS: Final = ("promote", "abort", "retry")
COMMAND_ANNOTATIONS: Final = {c: f"{GROUP}/{c}" for c in COMMANDS}

Verdict = Literal["Passed", "Failed", "Inconclusive"]


class Check(Protocol):
    """One analysis check's outcome (analysis.Check), as far as the step machine reads it."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def threshold(self) -> float: ...
    @property
    def result(self) -> str: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class ModelRef:
    """A model version as a track serves it."""

    storage_uri: str
    format: str
    sha256: str = ""
    # The drift reference profile goes with the model: a new one is a new thing to serve (and
    # to judge), so it is part of the revision, but only when set (revisions written before
    # profileUri existed stay the same).
    profile_uri: str = ""

    @property
    def revision(self) -> str:
        """What identifies this version in status: the URI, and the digest when pinned."""
        digest = f"@sha256:{self.sha256[:12]}" if self.sha256 else ""
        profile = f" profile={self.profile_uri}" if self.profile_uri else ""
        return f"{self.format}:{self.storage_uri}{digest}{profile}"

    def to_status(self) -> Obj:
        out: Obj = {"storageUri": self.storage_uri, "format": self.format}
        if self.sha256:
            out["sha256"] = self.sha256
        if self.profile_uri:
            out["profileUri"] = self.profile_uri
        return out

    @classmethod
    def from_status(cls, obj: Any) -> ModelRef | None:
        if not isinstance(obj, dict) or not obj.get("storageUri"):
            return None
        return cls(
            str(obj["storageUri"]),
            str(obj.get("format") or "sklearn"),
            obj.get("sha256") or "",
            obj.get("profileUri") or "",
        )


def model_of_spec(spec: ModelSpec) -> ModelRef:
    return ModelRef(spec.storage_uri, str(spec.format), spec.sha256 or "", spec.profile_uri or "")


def model_of_deployment(dep: Obj | None, container: str) -> ModelRef | None:
    """The model a live track Deployment's pod template serves, from the env the operator set."""
    if not dep:
        return None
    spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    for c in spec.get("containers") or []:
        if c.get("name") != container:
            continue
        env = {e.get("name"): e.get("value") for e in c.get("env") or [] if isinstance(e, dict)}
        uri = env.get("STORAGE_URI")
        if uri:
            return ModelRef(
                str(uri),
                str(env.get("MODEL_FORMAT") or "sklearn"),
                env.get("MODEL_SHA256") or "",
                env.get("PROFILE_URI") or "",
            )
    return None


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class RolloutState:
    """What the operator remembers about the rollout of one spec.model, in status.rollout."""

    revision: str  # ModelRef.revision of the spec.model this state is about
    phase: Phase
    previous: ModelRef | None  # the model that served before (stable, until promotion)
    step: int = 0  # index into spec.rollout.steps of the step being carried out
    weight: int = 0  # the canary weight asked for (the last setWeight reached)
    step_started: float | None = None  # when the current step began
    failed_intervals: int = 0
    last_analysis: float | None = None
    checks: tuple[Obj, ...] = ()  # the last conclusive interval's checks, as status shows them
    message: str = ""
    handled: Mapping[str, str] = field(default_factory=dict)  # command -> annotation value

    def to_status(self, steps: int) -> Obj:
        out: Obj = {
            "revision": self.revision,
            "phase": self.phase,
            "summary": f"{self.phase} {min(self.step, steps)}/{steps}",
            "step": self.step,
            "steps": steps,
            "weight": self.weight,
            "failedIntervals": self.failed_intervals,
            "message": self.message,
        }
        if self.previous is not None:
            out["previous"] = self.previous.to_status()
        if self.step_started is not None:
            out["stepStartedAt"] = _rfc3339(self.step_started)
        if self.last_analysis is not None:
            out["lastAnalysisAt"] = _rfc3339(self.last_analysis)
        if self.checks:
            out["analysis"] = [dict(c) for c in self.checks]
        if self.handled:
            out["commands"] = dict(self.handled)
        return out

    @classmethod
    def from_status(cls, obj: Any) -> RolloutState | None:
        if not isinstance(obj, dict) or obj.get("phase") not in PHASES or not obj.get("revision"):
            return None
        commands = obj.get("commands")
        handled: dict[Any, Any] = commands if isinstance(commands, dict) else {}
        return cls(
            revision=str(obj["revision"]),
            phase=obj["phase"],
            previous=ModelRef.from_status(obj.get("previous")),
            step=int(obj.get("step") or 0),
            weight=int(obj.get("weight") or 0),
            step_started=_epoch(obj.get("stepStartedAt")),
            failed_intervals=int(obj.get("failedIntervals") or 0),
            last_analysis=_epoch(obj.get("lastAnalysisAt")),
            checks=tuple(c for c in obj.get("analysis") or [] if isinstance(c, dict)),
            message=str(obj.get("message") or ""),
            handled={str(k): str(v) for k, v in handled.items()},
        )


@dataclass(frozen=True)
class Observation:
    """What one reconcile saw, for the step machine."""

    target: ModelRef  # spec.model
    stable: ModelRef | None  # what the stable Deployment serves (None: no stable Deployment)
    stable_rolled_out: bool  # every stable pod runs the current template and is ready
    canary_ready: bool  # the canary Deployment is rolled out at its current template
    commands: Mapping[str, str]  # command -> annotation value, for the annotations present
    now: float  # seconds since the epoch
    verdict: Verdict | None = None  # this run's analysis interval, when one was judged
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Decision:
    """What the tracks run after this reconcile, and what to tell people."""

    state: RolloutState
    stable: ModelRef
    canary: ModelRef | None  # None: no canary track
    canary_weight: int
    events: tuple[tuple[str, str, str], ...] = ()  # (type, reason, message)
    requeue_after: float | None = None  # seconds until the machine must look again

    @property
    def analysing(self) -> bool:
        """Whether the canary is being judged (its analysis intervals run)."""
        return self.state.phase in (PROGRESSING, PAUSED) and self.canary is not None


def _new_commands(obs: Observation, handled: Mapping[str, str]) -> set[str]:
    return {c for c, v in obs.commands.items() if v and handled.get(c) != v}


def _check_status(check: Check) -> Obj:
    out: Obj = {"name": check.name, "result": check.result, "threshold": check.threshold}
    if check.value is not None:
        out["value"] = round(check.value, 6)
    out["message"] = check.message
    return out


def _failed_message(checks: tuple[Check, ...]) -> str:
    failed = [c for c in checks if c.result == "Failed"]
    return "; ".join(c.message for c in failed) or "analysis failed"


def analysis_due(spec: RolloutSpec, state: RolloutState | None, now: float) -> bool:
    """Whether this reconcile should scrape and judge (the caller knows if a canary serves)."""
    if not spec.analysis.enabled or state is None or state.phase not in (PROGRESSING, PAUSED):
        return False
    if state.last_analysis is None:
        return True
    return now - state.last_analysis >= parse_duration(spec.analysis.interval)


def advance(spec: RolloutSpec, previous: RolloutState | None, obs: Observation) -> Decision:
    """The next rollout state for this reconcile, and what stable and canary serve."""
    target = obs.target
    events: list[tuple[str, str, str]] = []
    state = previous

    if state is None or state.revision != target.revision:
        handled = dict(obs.commands)  # commands already present predate this rollout
        if obs.stable is None or obs.stable == target:
            # Nothing served before (a new ModelDeployment), or stable already runs it.
            done = RolloutState(
                target.revision,
                HEALTHY,
                None,
                len(spec.steps),
                100,
                obs.now,
                message=f"serving {target.storage_uri}",
                handled=handled,
            )
            return Decision(done, target, None, 0)
        state = RolloutState(
            target.revision,
            PROGRESSING,
            obs.stable,
            0,
            0,
            obs.now,
            message=f"rolling out {target.storage_uri} beside {obs.stable.storage_uri}",
            handled=handled,
        )
        events.append(
            (
                "Normal",
                "RolloutStarted",
                f"rollout of {target.storage_uri} started beside {obs.stable.storage_uri} "
                f"({len(spec.steps)} steps)",
            ),
        )

    fresh = _new_commands(obs, state.handled)
    handled = {**state.handled, **{c: obs.commands[c] for c in fresh}}
    state = replace(state, handled=handled)
    old = state.previous or obs.stable or target

    if state.phase == HEALTHY:
        return Decision(state, target, None, 0, tuple(events))

    if state.phase == ABORTED:
        if "retry" in fresh:
            state = replace(
                state,
                phase=PROGRESSING,
                step=0,
                weight=0,
                step_started=obs.now,
                failed_intervals=0,
                checks=(),
                last_analysis=None,
                previous=old,
                message=f"retrying the rollout of {target.storage_uri}",
            )
            events.append(("Normal", "RolloutRetried", state.message))
        else:
            return Decision(state, old, None, 0, tuple(events))

    if state.phase in (PROGRESSING, PAUSED):
        if "abort" in fresh:
            return _abort(
                state,
                old,
                events,
                f"aborted by a person (annotation {COMMAND_ANNOTATIONS['abort']})",
            )
        if obs.verdict is not None:
            checks = tuple(_check_status(c) for c in obs.checks)
            state = replace(state, last_analysis=obs.now)
            if obs.verdict != "Inconclusive":
                state = replace(state, checks=checks)
            if obs.verdict == "Failed":
                failed = state.failed_intervals + 1
                state = replace(state, failed_intervals=failed)
                why = _failed_message(obs.checks)
                if failed > spec.analysis.failure_limit:
                    return _abort(state, old, events, f"analysis failed: {why}")
                events.append(
                    (
                        "Warning",
                        "AnalysisFailed",
                        f"interval failed ({failed} of {spec.analysis.failure_limit} tolerated): "
                        f"{why}",
                    ),
                )
        if "promote" in fresh:
            state = replace(
                state,
                phase=PROMOTING,
                step=len(spec.steps),
                message="promoted by a person; moving stable to the new model",
            )
            events.append(("Normal", "RolloutPromoting", state.message))
        else:
            state, requeue, step_events = _walk(spec, state, obs)
            events += step_events
            if state.phase != PROMOTING:
                return Decision(state, old, target, state.weight, tuple(events), requeue)

    # PROMOTING: stable rolls to the new model (maxUnavailable 0); the canary keeps its weight
    # until every stable pod serves the new model, then goes.
    if obs.stable == target and obs.stable_rolled_out:
        state = replace(
            state,
            phase=HEALTHY,
            weight=100,
            step=len(spec.steps),
            message=f"promoted {target.storage_uri}",
            step_started=obs.now,
        )
        events.append(("Normal", "RolloutPromoted", state.message))
        return Decision(state, target, None, 0, tuple(events))
    return Decision(state, target, target, state.weight, tuple(events))


def _abort(
    state: RolloutState, old: ModelRef, events: list[tuple[str, str, str]], why: str
) -> Decision:
    message = f"rollout aborted, traffic back on {old.storage_uri}: {why}"
    state = replace(state, phase=ABORTED, weight=0, message=message)
    events.append(("Warning", "RolloutAborted", message))
    return Decision(state, old, None, 0, tuple(events))


def _walk(
    spec: RolloutSpec, state: RolloutState, obs: Observation
) -> tuple[RolloutState, float | None, list[tuple[str, str, str]]]:
    """Carries out steps from ``state.step`` for as long as they are done."""
    events: list[tuple[str, str, str]] = []
    total = len(spec.steps)
    while state.step < total:
        step = spec.steps[state.step]
        label = f"step {state.step + 1}/{total}"
        if step.set_weight is not None:
            if state.weight != step.set_weight:
                state = replace(
                    state,
                    weight=step.set_weight,
                    phase=PROGRESSING,
                    message=f"{label}: weight {step.set_weight}%",
                )
                events.append(("Normal", "RolloutStep", state.message))
            if not obs.canary_ready:
                # The weight counts once the canary serves it: a pause measures real traffic.
                state = replace(
                    state,
                    phase=PROGRESSING,
                    step_started=obs.now,
                    message=f"{label}: weight {step.set_weight}%, waiting for the "
                    "canary to be ready",
                )
                return state, None, events
            state = replace(state, step=state.step + 1, step_started=obs.now)
            continue
        assert step.pause is not None
        if step.pause.duration is None:
            if state.phase != PAUSED:
                events.append(
                    (
                        "Normal",
                        "RolloutPaused",
                        f"{label}: paused at weight {state.weight}% until promoted "
                        "(kubectl modeldeploy promote, or annotation "
                        f"{COMMAND_ANNOTATIONS['promote']})",
                    ),
                )
            state = replace(
                state,
                phase=PAUSED,
                message=f"{label}: paused at weight {state.weight}% until promoted",
            )
            return state, None, events
        started = state.step_started if state.step_started is not None else obs.now
        ends = started + parse_duration(step.pause.duration)
        if ends > obs.now:
            # The end time, not "n s left": a message that changes every run would be a status
            # write every run.
            state = replace(
                state,
                phase=PROGRESSING,
                step_started=started,
                message=f"{label}: pausing {step.pause.duration} at weight "
                f"{state.weight}% (until {_rfc3339(ends)})",
            )
            return state, ends - obs.now, events
        state = replace(state, step=state.step + 1, step_started=ends)
    state = replace(
        state, phase=PROMOTING, message="all steps done; moving stable to the new model"
    )
    events.append(("Normal", "RolloutPromoting", state.message))
    return state, None, events


def deployment_rolled_out(dep: Obj | None) -> bool:
    """Every pod of the Deployment runs its current template and is available (at least one)."""
    if not dep:
        return False
    want = int((dep.get("spec") or {}).get("replicas") or 0)
    st = dep.get("status") or {}
    generation = int((dep.get("metadata") or {}).get("generation") or 0)
    return (
        want > 0
        and int(st.get("observedGeneration") or 0) >= generation
        and int(st.get("updatedReplicas") or 0) >= want
        and int(st.get("replicas") or 0) <= want
        and int(st.get("availableReplicas") or 0) >= want
    )
