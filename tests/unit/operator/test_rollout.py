"""The progressive rollout's step machine (rollout.advance) as a pure function, step by step.

Each test plays reconciles in sequence: the state one run returns is the previous state of the
next, as it would be after a round trip through status. Time is a number the test moves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modeldeploy_operator.api import RolloutSpec
from modeldeploy_operator.rollout import (
    ABORTED,
    HEALTHY,
    PAUSED,
    PROGRESSING,
    PROMOTING,
    Decision,
    ModelRef,
    Observation,
    RolloutState,
    advance,
    analysis_due,
    deployment_rolled_out,
    model_of_deployment,
)
from modeldeploy_operator.tracks import _rollout_split

OLD = ModelRef("s3://models/iris/v1/", "sklearn")
NEW = ModelRef("s3://models/iris/v2/", "sklearn", "ab" * 32)


def spec(**kw: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(kw)


STEPS = spec(
    steps=[
        {"setWeight": 10},
        {"pause": {"duration": "1m"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
)


@dataclass(frozen=True)
class FakeCheck:
    name: str
    value: float | None
    threshold: float
    result: str
    message: str


def obs(**kw: Any) -> Observation:
    base: dict[str, Any] = {
        "target": NEW,
        "stable": OLD,
        "stable_rolled_out": True,
        "canary_ready": True,
        "commands": {},
        "now": 1000.0,
    }
    return Observation(**{**base, **kw})


def roundtrip(d: Decision, steps: int = 4) -> RolloutState:
    """The state as the next run reads it back from status."""
    back = RolloutState.from_status(d.state.to_status(steps))
    assert back is not None
    return back


def test_a_new_model_deployment_is_healthy_at_once() -> None:
    d = advance(STEPS, None, obs(stable=None))
    assert d.state.phase == HEALTHY
    assert (d.stable, d.canary) == (NEW, None)
    assert d.events == ()


def test_adding_spec_rollout_to_a_served_model_starts_nothing() -> None:
    d = advance(STEPS, None, obs(stable=NEW))
    assert d.state.phase == HEALTHY
    assert d.canary is None


def test_walks_the_steps_and_promotes() -> None:
    d = advance(STEPS, None, obs(canary_ready=False))
    # Started; weight 10 is asked, but the step waits until the canary serves it.
    assert d.state.phase == PROGRESSING
    assert (d.stable, d.canary, d.canary_weight) == (OLD, NEW, 10)
    assert [e[1] for e in d.events] == ["RolloutStarted", "RolloutStep"]
    assert d.state.step == 0
    assert "waiting for the canary" in d.state.message

    d = advance(STEPS, roundtrip(d), obs(now=1010.0))
    assert d.state.step == 1  # weight reached, now pausing 1m from t=1010
    assert d.requeue_after == pytest.approx(60.0)
    assert "until" in d.state.message

    d2 = advance(STEPS, roundtrip(d), obs(now=1040.0))
    assert d2.state.step == 1
    assert d2.requeue_after == pytest.approx(30.0)
    assert d2.state.message == d.state.message  # no status write just because time passed

    d = advance(STEPS, roundtrip(d2), obs(now=1071.0, canary_ready=False))
    assert (d.state.step, d.canary_weight) == (2, 50)  # pause over; 50% waits for the canary
    d = advance(STEPS, roundtrip(d), obs(now=1080.0))
    assert d.state.phase == PAUSED
    assert d.state.step == 3
    assert [e[1] for e in d.events] == ["RolloutPaused"]
    assert d.requeue_after is None

    # Still paused: no event again.
    d = advance(STEPS, roundtrip(d), obs(now=2000.0))
    assert d.state.phase == PAUSED
    assert d.events == ()

    d = advance(STEPS, roundtrip(d), obs(now=2001.0, commands={"promote": "t1"}))
    assert d.state.phase == PROMOTING
    assert (d.stable, d.canary, d.canary_weight) == (NEW, NEW, 50)  # canary serves meanwhile

    # stable rolling over: the canary stays until every stable pod serves the new model
    d = advance(STEPS, roundtrip(d), obs(now=2010.0, stable=NEW, stable_rolled_out=False))
    assert d.state.phase == PROMOTING
    assert d.canary == NEW

    d = advance(STEPS, roundtrip(d), obs(now=2020.0, stable=NEW, commands={"promote": "t1"}))
    assert d.state.phase == HEALTHY
    assert (d.stable, d.canary) == (NEW, None)
    assert [e[1] for e in d.events] == ["RolloutPromoted"]


def test_a_stale_command_does_not_act_on_a_new_rollout() -> None:
    d = advance(STEPS, None, obs(commands={"promote": "old", "abort": "older"}))
    assert d.state.phase == PROGRESSING
    d = advance(STEPS, roundtrip(d), obs(commands={"promote": "old", "abort": "older"}))
    assert d.state.phase == PROGRESSING


def test_abort_by_command_sends_traffic_back_at_once_and_stays_aborted() -> None:
    d = advance(STEPS, None, obs())
    d = advance(STEPS, roundtrip(d), obs(commands={"abort": "a1"}))
    assert d.state.phase == ABORTED
    assert (d.stable, d.canary, d.canary_weight) == (OLD, None, 0)
    assert "aborted by a person" in d.state.message
    # GitOps-safe: spec.model still names NEW, and the rollout stays aborted for it.
    for t in (2000.0, 3000.0):
        d = advance(STEPS, roundtrip(d), obs(now=t, commands={"abort": "a1"}))
        assert d.state.phase == ABORTED
        assert d.stable == OLD
    # Even a stable Deployment edited by hand is put back to the old model.
    d = advance(STEPS, roundtrip(d), obs(stable=NEW))
    assert d.stable == OLD
    d = advance(STEPS, roundtrip(d), obs(commands={"abort": "a1", "retry": "r1"}))
    assert d.state.phase == PROGRESSING
    assert d.canary == NEW
    assert d.state.step == 1


def test_failed_analysis_aborts_past_the_failure_limit() -> None:
    failing = (FakeCheck("errorRate", 0.25, 0.01, "Failed", "canary 5xx 25% > 1%"),)
    d = advance(STEPS, None, obs())
    d = advance(STEPS, roundtrip(d), obs(now=1030.0, verdict="Failed", checks=failing))
    assert d.state.phase == PROGRESSING  # failureLimit 1: one failed interval is tolerated
    assert d.state.failed_intervals == 1
    assert [e[1] for e in d.events] == ["AnalysisFailed"]
    assert d.state.checks[0]["result"] == "Failed"
    d = advance(STEPS, roundtrip(d), obs(now=1060.0, verdict="Failed", checks=failing))
    assert d.state.phase == ABORTED
    assert "canary 5xx 25% > 1%" in d.state.message
    assert d.canary is None


def test_inconclusive_is_not_a_failure_and_keeps_the_last_conclusive_checks() -> None:
    passing = (FakeCheck("errorRate", 0.0, 0.01, "Passed", "ok"),)
    d = advance(STEPS, None, obs())
    d = advance(STEPS, roundtrip(d), obs(now=1030.0, verdict="Passed", checks=passing))
    d = advance(STEPS, roundtrip(d), obs(now=1060.0, verdict="Inconclusive", checks=()))
    assert d.state.failed_intervals == 0
    assert d.state.checks[0]["result"] == "Passed"
    assert d.state.last_analysis == 1060.0


def test_a_new_spec_model_mid_rollout_starts_over_from_what_stable_serves() -> None:
    third = ModelRef("s3://models/iris/v3/", "sklearn")
    d = advance(STEPS, None, obs())
    d = advance(STEPS, roundtrip(d), obs(target=third))
    assert d.state.revision == third.revision
    assert (d.stable, d.canary) == (OLD, third)
    assert d.state.step == 1


def test_reverting_spec_model_ends_the_rollout() -> None:
    d = advance(STEPS, None, obs())
    d = advance(STEPS, roundtrip(d), obs(target=OLD))
    assert d.state.phase == HEALTHY
    assert (d.stable, d.canary) == (OLD, None)


def test_no_steps_promotes_straight_away() -> None:
    d = advance(spec(steps=[]), None, obs())
    assert d.state.phase == PROMOTING
    assert d.stable == NEW


def test_state_survives_a_round_trip_through_status() -> None:
    d = advance(STEPS, None, obs(commands={"retry": "x"}))
    state = replace(d.state, last_analysis=1234.0, checks=({"name": "errorRate"},))
    assert RolloutState.from_status(state.to_status(4)) == state
    assert RolloutState.from_status({"phase": "Bogus", "revision": "x"}) is None
    assert RolloutState.from_status(None) is None


def test_analysis_due_every_interval_while_judging() -> None:
    s = spec(analysis={"interval": "30s"})
    d = advance(s, None, obs())
    assert analysis_due(s, d.state, 1000.0)  # never judged: now
    st1 = replace(d.state, last_analysis=1000.0)
    assert not analysis_due(s, st1, 1029.0)
    assert analysis_due(s, st1, 1030.0)
    assert not analysis_due(spec(analysis={"enabled": False}), d.state, 1000.0)
    assert not analysis_due(s, replace(st1, phase=PROMOTING), 5000.0)


def test_reads_the_model_and_rollout_of_a_live_deployment() -> None:
    dep = {
        "metadata": {"generation": 2},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "model-server",
                            "env": [
                                {"name": "STORAGE_URI", "value": OLD.storage_uri},
                                {"name": "MODEL_FORMAT", "value": "sklearn"},
                                {"name": "MODEL_SHA256", "value": ""},
                            ],
                        }
                    ]
                }
            },
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2,
        },
    }
    assert model_of_deployment(dep, "model-server") == OLD
    assert model_of_deployment(dep, "other") is None
    assert model_of_deployment(None, "model-server") is None
    assert deployment_rolled_out(dep)
    assert not deployment_rolled_out({**dep, "status": {**dep["status"], "replicas": 3}})
    assert not deployment_rolled_out({**dep, "metadata": {"generation": 3}})


@given(total=st.integers(0, 200), weight=st.integers(0, 100))
def test_rollout_split_always_shows_the_canary_its_weight(total: int, weight: int) -> None:
    split = _rollout_split(total, weight)
    if total == 0:
        assert split == (0, 0)
        return
    assert split.canary >= (1 if weight > 0 else 0)
    assert split.stable >= 1  # an abort always has a stable pod to send traffic back to
    # At most one pod more than asked for, and only when there were too few to divide.
    assert total <= split.stable + split.canary <= total + 1
    if weight == 0:
        assert split == (total, 0)
