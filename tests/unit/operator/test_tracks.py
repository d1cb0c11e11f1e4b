"""The track plan: which tracks run, what each serves, and the replica split computed once."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import make_md
from hypothesis import given
from hypothesis import strategies as st
from modeldeploy_operator import builders
from modeldeploy_operator.api import LABEL_TRACK
from modeldeploy_operator.settings import OperatorSettings
from modeldeploy_operator.tracks import (
    ALL_TRACKS,
    CANARY,
    MAX_NAME,
    STABLE,
    PodTarget,
    plan_tracks,
    pod_target,
)

Obj = dict[str, Any]
SHA = "b" * 64


def test_stable_only() -> None:
    plan = plan_tracks(make_md(replicas=3, model={"storageUri": "s3://m/v1.joblib", "sha256": SHA}))
    assert plan.names == (STABLE,)
    assert plan.removed == (CANARY,)
    t = plan.stable
    assert (t.storage_uri, t.format, t.sha256, t.replicas) == (
        "s3://m/v1.joblib",
        "sklearn",
        SHA,
        3,
    )
    assert (t.deployment, t.service) == ("iris-stable", "iris-stable")
    assert t.requested_percent == 100
    assert t.model_version == SHA[:12]
    assert plan.get(CANARY) is None
    assert plan.single_replica_note == ""


def test_canary_has_its_own_artifact_and_inherits_the_format() -> None:
    md = make_md(
        replicas=4,
        model={"storageUri": "s3://m/v1.skops", "format": "skops", "sha256": SHA},
        canary={"storageUri": "s3://m/v2.skops", "trafficPercent": 25},
    )
    plan = plan_tracks(md)
    assert plan.names == (STABLE, CANARY)
    assert plan.removed == ()
    canary = plan.get(CANARY)
    assert canary is not None
    assert (canary.storage_uri, canary.format, canary.sha256) == ("s3://m/v2.skops", "skops", "")
    assert canary.model_version == CANARY  # no digest: the track names the version
    assert (plan.stable.replicas, canary.replicas) == (3, 1)
    assert (plan.stable.requested_percent, canary.requested_percent) == (75, 25)
    assert (canary.deployment, canary.service) == ("iris-canary", "iris-canary")


def test_one_replica_cannot_run_both_tracks_and_the_plan_says_which_gets_it() -> None:
    plan = plan_tracks(
        make_md(replicas=1, canary={"storageUri": "s3://m/v2", "trafficPercent": 10})
    )
    assert [t.replicas for t in plan.active] == [1, 0]
    assert "the stable track gets it" in plan.single_replica_note


@given(total=st.integers(0, 1000), percent=st.one_of(st.none(), st.integers(0, 100)))
def test_the_tracks_always_add_up_to_spec_replicas(total: int, percent: int | None) -> None:
    canary = None if percent is None else {"storageUri": "s3://m/v2", "trafficPercent": percent}
    plan = plan_tracks(make_md(replicas=total, canary=canary))
    assert sum(t.replicas for t in plan.active) == total
    assert set(plan.names) | set(plan.removed) == set(ALL_TRACKS)


def test_name_limit_leaves_room_for_the_longest_track_suffix() -> None:
    assert 63 - len("-canary") == MAX_NAME
    assert all(len(f"{'x' * MAX_NAME}-{t}") <= 63 for t in ALL_TRACKS)


@pytest.mark.parametrize("with_canary", [False, True])
def test_children_are_named_from_the_plan(with_canary: bool) -> None:
    canary = {"storageUri": "s3://m/v2", "trafficPercent": 50} if with_canary else None
    md = make_md(canary=canary)
    plan = plan_tracks(md)
    children = builders.desired_children(md, OperatorSettings())
    names = {(m["kind"], m["metadata"]["name"]) for m in children}
    for t in plan.active:
        assert ("Deployment", t.deployment) in names
        assert ("Service", t.service) in names
    assert names <= set(builders.possible_children(md.name, md.namespace))


def test_only_ready_running_serving_pods_are_targets() -> None:
    def pod(track: str | None = "canary", ip: str | None = "10.0.0.7", **meta: Any) -> Obj:
        labels = {LABEL_TRACK: track} if track else {}
        return {
            "metadata": {"name": "p", "labels": labels, **meta},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
        }

    assert pod_target(pod()) == PodTarget(track="canary", ip="10.0.0.7")
    not_ready = pod()
    not_ready["status"]["conditions"][0]["status"] = "False"
    assert pod_target(not_ready) is None
    assert pod_target(pod(ip=None)) is None  # not started: nowhere to scrape
    assert pod_target(pod(track=None)) is None
    assert pod_target(pod(track="shadow")) is None  # not a track this operator runs
    assert pod_target(pod(deletionTimestamp="2026-12-04T00:00:00Z")) is None  # draining
