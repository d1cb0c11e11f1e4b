"""Drift tracking in the server: binning, PSI, the window, missing values, and the app end to end.

PSI values are checked against the formula written out by hand, bins against rows placed on and
around the edges, and the app test serves a model with a profile, sends rows far outside the
training data and reads the PSI gauge rising in /metrics and "drift on" in the V2 metadata.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modeldeploy_server.app import create_app
from modeldeploy_server.batcher import MicroBatcher
from modeldeploy_server.bootstrap import find_profile
from modeldeploy_server.config import Settings
from modeldeploy_server.dataplane import DataPlane, ServingInfo
from modeldeploy_server.drift import PSI_EPSILON, DriftTracker, psi
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.profile import Profile, build_profile, dump, parse_profile
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime

pytestmark = pytest.mark.anyio


def _psi_by_hand(actual: list[float], expected: list[float]) -> float:
    n = sum(actual)
    total = 0.0
    for a, e in zip(actual, expected, strict=True):
        a, e = max(a / n, PSI_EPSILON), max(e, PSI_EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def test_psi_against_hand_computed_values() -> None:
    assert psi(np.array([50, 50]), np.array([0.5, 0.5])) == 0.0
    # (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5)
    expected = 0.3 * math.log(1.6) + 0.3 * math.log(2.5)
    assert psi(np.array([80, 20]), np.array([0.5, 0.5])) == pytest.approx(expected)
    # an empty bin on either side counts as the epsilon, not as infinity
    assert psi(np.array([10, 0]), np.array([0.5, 0.5])) == pytest.approx(
        _psi_by_hand([10, 0], [0.5, 0.5])
    )
    assert math.isnan(psi(np.array([0, 0]), np.array([0.5, 0.5])))


def _mixed_profile() -> Profile:
    return parse_profile(
        json.dumps(
            {
                "schema_version": 1,
                "rows": 100,
                "n_features": 2,
                "features": [
                    {"name": "size", "kind": "numeric", "edges": [0, 1, 2], "shares": [0.5, 0.5]},
                    {
                        "name": "colour",
                        "kind": "categorical",
                        "categories": ["a", "b"],
                        "shares": [0.5, 0.5],
                    },
                ],
                "prediction": {
                    "name": "prediction",
                    "kind": "categorical",
                    "categories": ["0", "1"],
                    "shares": [0.5, 0.5],
                },
            }
        )
    )


def test_binning_missing_and_out_of_range() -> None:
    tracker = DriftTracker(_mixed_profile(), source="p.json")
    x = np.array([[0.5, "a"], [1.5, "b"], [5.0, "z"], [None, None], [2.0, "a"]], dtype=object)
    tracker.observe(x, np.array([0, 1, 1, 1, 1]))
    snap = tracker.snapshot()
    size = snap["features"]["size"]
    assert size["bins"] == {"(-inf,0)": 0, "[0,1)": 1, "[1,2]": 2, "(2,+inf)": 1}
    assert size["missing"] == 1
    assert size["out_of_range"] == 1
    colour = snap["features"]["colour"]
    assert colour["bins"] == {"a": 2, "b": 1, "__other__": 1}
    assert colour["missing"] == 1
    assert colour["out_of_range"] == 1
    # slots: below, [0,1), [1,2], above, missing against 0, .5, .5, 0, 0
    assert size["psi"] == pytest.approx(_psi_by_hand([0, 1, 2, 1, 1], [0, 0.5, 0.5, 0, 0]))
    assert snap["prediction_psi"] == pytest.approx(_psi_by_hand([1, 4, 0, 0], [0.5, 0.5, 0, 0]))
    assert snap["window_rows"] == 5
    assert tracker.describe() == "on (profile p.json, schema v1)"


def test_numeric_features_binned_together_match_one_by_one() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(500, 3)) * [1, 10, 100]
    prof = build_profile(train, bins=7)
    served = rng.normal(size=(300, 3)) * [2, 10, 50] + [0, 5, 0]
    served[::17, 1] = np.nan
    tracker = DriftTracker(prof)
    for start in range(0, 300, 7):  # batches of several sizes
        tracker.observe(served[start : start + 7])
    snap = tracker.snapshot()
    for j, f in enumerate(prof.features):
        one = DriftTracker(build_profile(train[:, [j]], bins=7, feature_names=[f.name]))
        one.observe(served[:, [j]])
        assert snap["features"][f.name]["bins"] == one.snapshot()["features"][f.name]["bins"]
        assert snap["features"][f.name]["missing"] == (18 if j == 1 else 0)  # rows 0, 17, ..., 289


def test_the_window_forgets_old_rows_bucket_by_bucket() -> None:
    prof = build_profile(np.arange(100, dtype=float).reshape(-1, 1), bins=2)
    tracker = DriftTracker(prof, window_rows=100, buckets=10)
    low, high = np.zeros((10, 1)), np.full((10, 1), 99.0)
    for _ in range(10):
        tracker.observe(low)
    assert tracker.snapshot()["window_rows"] == 90  # the 10th bucket pushed out the 1st
    for _ in range(10):
        tracker.observe(high)
    snap = tracker.snapshot()
    assert snap["window_rows"] == 90
    assert sum(snap["features"]["x0"]["bins"].values()) == 200  # the counters keep everything
    # the window holds only high values now: all in the upper bin [49, 99] (51% in training)
    f = prof.features[0]
    assert f.shares == [0.49, 0.51]
    assert snap["features"]["x0"]["psi"] == pytest.approx(
        _psi_by_hand([0, 0, 90, 0, 0], [0, 0.49, 0.51, 0, 0])
    )


def test_without_a_profile_missing_values_are_still_counted() -> None:
    metrics = Metrics()
    tracker = DriftTracker(None, metrics, feature_names=["a", "b"], n_features=2)
    tracker.observe(np.array([[1.0, np.nan], [np.nan, np.nan]]))
    tracker.observe(np.array([[None, 1], [2, 3]], dtype=object))
    assert tracker.snapshot()["missing"] == {"a": 2, "b": 2}
    assert tracker.describe() == "off: no reference profile"
    sample = metrics.registry.get_sample_value
    assert sample("modeldeploy_feature_missing_total", {"feature": "b"}) == 2
    assert sample("modeldeploy_drift_enabled") == 0
    assert sample("modeldeploy_feature_drift_psi", {"feature": "a"}) is None


def test_a_profile_for_another_model_turns_drift_off() -> None:
    tracker = DriftTracker(_mixed_profile(), n_features=4, source="p.json")
    assert not tracker.enabled
    assert "describes 2 features, the model takes 4" in tracker.describe()
    named = DriftTracker(_mixed_profile(), feature_names=["colour", "size"], source="p.json")
    assert "its features are size, colour" in named.describe()


async def test_observation_runs_after_the_caller_has_its_result() -> None:
    order: list[str] = []

    def run(x: Any, outputs: tuple[str, ...]) -> list[Any]:
        return [x[:, 0]]

    batcher = MicroBatcher(
        run, max_batch_rows=8, max_wait_s=0, after=lambda x, o, out: order.append("observed")
    )
    batcher.start()

    async def caller() -> None:
        await batcher.submit(np.ones((1, 2)), ("y",))
        order.append("answered")

    await asyncio.gather(caller(), caller())
    await asyncio.sleep(0.01)
    await batcher.stop()
    assert order[0] == "answered"
    assert order.count("observed") >= 1


# ---- finding the profile, and the app end to end -----------------------------------------------


@pytest.fixture
def iris_profile(model_files: dict[str, Path], iris: tuple[Any, Any]) -> Profile:
    x, _ = iris
    rt = load_sklearn_runtime(model_files["forest"], "sklearn")
    return build_profile(x, rt.predict(x, ("output-0",))[0], prediction_kind="categorical")


def test_the_profile_beside_the_model_is_found(
    tmp_path: Path, model_files: dict[str, Path], iris_profile: Profile
) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(model_files["forest"].read_bytes())
    settings = Settings(storage_uri=str(tmp_path), pvc_root=tmp_path)
    assert find_profile(settings, model, {}).profile is None
    dump(iris_profile, tmp_path / "profile.json")
    ref = find_profile(settings, model, {})
    assert ref.profile == iris_profile
    assert ref.source.endswith("profile.json")
    (tmp_path / "model.profile.json").write_text('{"schema_version": 1, "rows": 0}')
    broken = find_profile(settings, model, {})  # the more specific name wins, and is broken
    assert broken.profile is None
    assert "model.profile.json: rows:" in broken.off_reason
    named = find_profile(
        Settings(profile_uri=str(tmp_path / "absent.json"), pvc_root=tmp_path), model, {}
    )
    assert named.profile is None
    assert "no file at" in named.off_reason


async def test_served_drift_raises_the_psi_gauge_and_metadata_says_on(
    model_files: dict[str, Path], iris_profile: Profile
) -> None:
    dp = DataPlane(ServingInfo("iris", "v1", "stable", "file:///m", ""), Metrics(), max_wait_s=0)
    rt = load_sklearn_runtime(model_files["forest"], "sklearn")
    await dp.set_ready(rt, "ab" * 32, profile=iris_profile, profile_source="profile.json")
    app = create_app(dp, max_body_bytes=1 << 20)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            meta = (await client.get("/v2/models/iris")).json()
            assert meta["parameters"]["drift"] == "on (profile profile.json, schema v1)"

            async def psi_of(feature: str) -> float:
                await asyncio.sleep(0.01)  # observation runs after the response
                v = dp.metrics.registry.get_sample_value(
                    "modeldeploy_feature_drift_psi", {"feature": feature}
                )
                assert v is not None
                return v

            typical = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 10
            r = await client.post("/v1/models/iris:predict", json={"instances": typical})
            assert r.status_code == 200
            before = await psi_of("x2")
            drifted = [[5.1, 3.5, 9.0 + i / 10, 0.2] for i in range(60)]  # petal length way up
            r = await client.post("/v1/models/iris:predict", json={"instances": drifted})
            assert r.status_code == 200
            after = await psi_of("x2")
            assert after > 0.25 > before or after > before + 1
            text = (await client.get("/metrics")).text
            assert 'modeldeploy_feature_out_of_range_total{feature="x2"} 60.0' in text
            assert 'modeldeploy_feature_bin_total{bin="(6.9,+inf)",feature="x2"}' in text
            assert "modeldeploy_prediction_drift_psi " in text
            assert "modeldeploy_drift_enabled 1.0" in text
    finally:
        await dp.stop()


async def test_without_a_profile_metadata_says_drift_is_off(make_client: Any) -> None:
    client, dp = await make_client("forest")
    meta = (await client.get("/v2/models/iris")).json()
    assert meta["parameters"]["drift"] == "off: no reference profile"
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP64", "shape": [2, 4], "data": [1, 2, 3, None, 1, 2, 3, 4]}
        ]
    }
    r = await client.post("/v2/models/iris/infer", json=body)
    assert r.status_code == 200
    await asyncio.sleep(0.01)
    sample = dp.metrics.registry.get_sample_value
    assert sample("modeldeploy_feature_missing_total", {"feature": "x3"}) == 1
    assert sample("modeldeploy_feature_missing_total", {"feature": "x0"}) == 0


def test_a_profile_beside_the_model_in_a_bucket_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, iris_profile: Profile
) -> None:
    from fsspec.implementations.memory import MemoryFileSystem
    from modeldeploy_server.storage import sidecar

    fs = MemoryFileSystem()
    fs.store.clear()
    monkeypatch.setattr(sidecar, "filesystem", lambda loc, env: fs)
    model = tmp_path / "model.joblib"  # the downloaded copy; nothing beside it locally
    model.write_bytes(b"")
    settings = Settings(storage_uri="s3://models/iris/v2/", pvc_root=tmp_path)
    assert find_profile(settings, model, {}).profile is None
    fs.pipe("/models/iris/v2/profile.json", dump(iris_profile).encode())
    ref = find_profile(settings, model, {})
    assert ref.profile == iris_profile
    assert ref.source == "s3://models/iris/v2/profile.json"
    # a URI naming the model file: the profile is looked for in its directory
    by_file = Settings(storage_uri="s3://models/iris/v2/model.joblib", pvc_root=tmp_path)
    assert find_profile(by_file, model, {}).profile == iris_profile
    fs.store.clear()
