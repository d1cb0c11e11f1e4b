"""The operator's drift check reads a real server's drift gauges into a DataDrift report.

A real server process serves an iris model with its reference profile beside it; the operator's
own drift round (handlers.Runtime.check_drift_once: one scrape of every ready pod its watch
cache keeps, then drift.summarize) reads its /metrics over real HTTP. Training-like traffic
gives NoDrift, traffic with petals three times as long as any in training gives FeatureDrift
naming a petal feature, and each changed report kicks a reconcile so the status shows it; an
unchanged one does not. Not enough rows yet is DriftNotMeasured, and a model without a profile
is NoProfile, as the condition reasons promise (docs/monitoring.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modeldeploy_operator import conditions as c
from modeldeploy_operator.api import LABEL_INSTANCE, LABEL_TRACK
from modeldeploy_operator.builders import pod_selector
from modeldeploy_operator.handlers import Runtime
from modeldeploy_operator.settings import OperatorSettings
from server_stores import IRIS_FEATURES, iris_store_with_profile, predict

pytestmark = pytest.mark.integration

KEY = ("default", "iris")


def runtime_for(url: str) -> Runtime:
    """The operator's per-process state as the watches and a first reconcile leave it: the
    object, and its pods listed once (one ready stable pod at the server's address, one not
    ready yet, which is not read). Its kube is never called: the kicked reconciles are only
    counted."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    rt = Runtime(settings=OperatorSettings(), kube=None, metrics_port=int(port))  # type: ignore[arg-type]
    namespace, name = KEY
    rt.seen("ADDED", KEY)
    rt.cache.seen("ModelDeployment", {"metadata": {"namespace": namespace, "name": name}}, False)

    def pod(pod_name: str, ready: str, ip: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": {LABEL_INSTANCE: name, LABEL_TRACK: "stable"},
            },
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
        }

    rt.cache.listing(namespace, pod_selector(name))
    pods = [pod("iris-stable-0", "True", host), pod("iris-stable-1", "False", "192.0.2.1")]
    rt.cache.listed(namespace, pod_selector(name), pods)
    return rt


async def one_round(rt: Runtime) -> int:
    """One drift round; the reconciles it kicks are cancelled (there is no API server here)."""
    changed = await rt.check_drift_once()
    kicked = len(rt.kicks)
    assert kicked == changed, (kicked, changed)
    for task in list(rt.kicks):
        task.cancel()
    await asyncio.sleep(0)
    return changed


def test_the_drift_round_reads_a_real_servers_gauges(
    start_server: Any, tmp_path: Path, artifacts: dict[str, bytes]
) -> None:
    model_path, x = iris_store_with_profile(tmp_path, artifacts["joblib"])
    proc = start_server(str(model_path), MODELDEPLOY_TRACK="stable")
    proc.wait_ready()
    rt = runtime_for(proc.url)

    async def scenario() -> None:
        predict(proc.url, x[:20])
        assert await one_round(rt) == 1
        report = rt.drift[KEY]
        assert report.reason is c.DRIFT_NOT_MEASURED, report
        assert "too few served rows" in report.message
        assert "stable 20" in report.message

        rng = np.random.default_rng(1)
        predict(proc.url, x[rng.permutation(len(x))].repeat(4, axis=0))  # like the training
        assert await one_round(rt) == 1
        report = rt.drift[KEY]
        assert (report.reason, report.drifting) == (c.NO_DRIFT, False), report
        assert report.psi is not None, report
        assert report.psi < 0.25, report
        assert report.feature in IRIS_FEATURES
        assert report.track == "stable"
        assert await one_round(rt) == 0  # the same window: no new report, no reconcile

        drifted = x.copy()
        drifted[:, 2:] *= 3
        predict(proc.url, np.tile(drifted, (30, 1)))
        assert await one_round(rt) == 1
        report = rt.drift[KEY]
        assert (report.reason, report.drifting) == (c.FEATURE_DRIFT, True), report
        assert report.feature in {"petal_length", "petal_width"}, report
        assert report.psi is not None
        assert report.psi >= 0.25
        assert report.summary == f"{report.feature} {report.psi:.2f}"
        assert f"feature {report.feature} drifts on the stable track" in report.message
        status = report.to_status()
        assert status is not None
        assert status["track"] == "stable"
        assert status["feature"] == report.feature

    asyncio.run(scenario())


def test_a_model_without_a_profile_is_no_profile_and_an_unreachable_pod_changes_nothing(
    start_server: Any, tmp_path: Path, artifacts: dict[str, bytes]
) -> None:
    (tmp_path / "model.joblib").write_bytes(artifacts["joblib"])
    proc = start_server(str(tmp_path / "model.joblib"))
    proc.wait_ready()
    rt = runtime_for(proc.url)

    async def scenario() -> None:
        assert await one_round(rt) == 1
        report = rt.drift[KEY]
        assert (report.reason, report.drifting) == (c.NO_PROFILE, None), report
        assert "spec.model.profileUri" in report.message
        assert report.to_status() is None  # the DRIFT column stays empty

        # The pod goes away (or a NetworkPolicy stands in the way): the round can read no pod
        # of the object and leaves its last report alone instead of flapping to Unknown.
        proc.popen.terminate()
        proc.popen.wait(timeout=30)
        assert await one_round(rt) == 0
        assert rt.drift[KEY] is report

    asyncio.run(scenario())
