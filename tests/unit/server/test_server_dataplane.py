"""The protocol DataPlane over the Runtime interface, without HTTP.

A runtime that is not scikit-learn at all (``UpperRuntime``) is served through the same DataPlane,
which is what lets an MLflow runtime slot in later; the scikit-learn runtime is checked for what
it must not do to the process (warning filters).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modeldeploy_server.codec import Tensor, V1Request, V2Request, decode_v1
from modeldeploy_server.dataplane import DataPlane, ServingInfo
from modeldeploy_server.datatypes import V2_DTYPES, v2_datatype
from modeldeploy_server.errors import InvalidInputError
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.runtime.base import Array, OutputSpec, Runtime, RuntimeInfo, TensorSpec
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime
from modeldeploy_server.schemas import V2Tensor

pytestmark = pytest.mark.anyio

INFO = ServingInfo("m", "v1", "stable", "file:///m", "")


class UpperRuntime:
    """A made-up model format: upper-cases strings; offers "upper" and its length "size"."""

    info = RuntimeInfo(
        platform="upper",
        format="upper",
        model_class="tests.Upper",
        framework_version="1",
        trained_version=None,
        version_warnings=(),
        load_seconds=0.0,
        predict_path="str.upper",
        classifier=False,
    )
    feature_names = ("text",)
    inputs = (TensorSpec("text", "BYTES", (-1, 1)),)
    outputs = (OutputSpec("upper", "BYTES", (-1,)), OutputSpec("size", "INT64", (-1,)))

    def parameters(self) -> dict[str, Any]:
        return {"alphabet": "latin"}

    def resolve_output(self, name: str, where: str) -> str:
        if name not in ("upper", "size"):
            raise InvalidInputError(f"{where} {name!r}: only upper and size")
        return name

    def check_input(self, x: Array, what: str) -> Array:
        if x.ndim != 2 or x.shape[1] != 1:
            raise InvalidInputError(f"{what} must be one column")
        return x

    def predict(self, x: Array, outputs: tuple[str, ...]) -> list[Array]:
        text = [str(v) for v in x[:, 0]]
        by_name = {
            "upper": np.array([t.upper() for t in text]),
            "size": np.array(list(map(len, text))),
        }
        return [by_name[o] for o in outputs]

    def warm_up(self) -> None:
        pass


async def ready_plane(runtime: Runtime, info: ServingInfo = INFO) -> DataPlane:
    dp = DataPlane(info, Metrics(), max_wait_s=0.0)
    await dp.set_ready(runtime, "")
    return dp


async def test_a_runtime_of_another_format_is_served_by_the_same_dataplane() -> None:
    dp = await ready_plane(UpperRuntime())
    try:
        req = V2Request("7", [Tensor("text", np.array([["ab"], ["c"]], dtype=object))], [], None)
        result = await dp.v2_infer("m", None, req)
        assert [t.name for t in result.outputs] == ["upper"]  # the runtime's default output
        assert result.outputs[0].array.tolist() == ["AB", "C"]
        assert result.id == "7"
        assert result.predict_seconds >= 0
        req.outputs = ["size", "upper", "size"]
        result = await dp.v2_infer("m", "v1", req)
        assert [t.name for t in result.outputs] == ["size", "upper", "size"]
        assert result.outputs[0].array.tolist() == [2, 1]
        with pytest.raises(InvalidInputError, match=r"outputs\[0\].name 'logits': only upper"):
            await dp.v2_infer("m", None, V2Request(None, req.inputs, ["logits"], None))
        records = V1Request(None, [{"text": "xy"}])
        assert (await dp.v1_predict("m", records)).predictions.tolist() == ["XY"]
        meta = dp.v2_model_metadata("m")
        assert meta["platform"] == "upper"
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}]
        assert [o["name"] for o in meta["outputs"]] == ["upper", "size"]
        assert meta["parameters"]["alphabet"] == "latin"
        assert meta["parameters"]["storage_uri"] == "file:///m"
    finally:
        await dp.stop()


async def test_the_result_carries_the_predict_time(model_files: dict[str, Path]) -> None:
    dp = await ready_plane(load_sklearn_runtime(model_files["logreg"], "sklearn"))
    try:
        result = await dp.v1_predict("m", decode_v1(b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'))
        assert result.predictions.tolist() == [0]
        assert 0 < result.predict_seconds < 5
        # The same seconds the predict histogram saw for that one model call.
        assert dp.metrics.predict_seconds._sum.get() == pytest.approx(result.predict_seconds)
    finally:
        await dp.stop()


async def test_predict_proba_mode_applies_to_v1_only(model_files: dict[str, Path]) -> None:
    info = ServingInfo("m", "v1", "stable", "", "", predict_proba_v1=True)
    dp = await ready_plane(load_sklearn_runtime(model_files["forest"], "sklearn"), info)
    try:
        v1 = await dp.v1_predict("m", decode_v1(b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'))
        assert v1.predictions.shape == (1, 3)
        tensor = Tensor("x", np.array([[5.1, 3.5, 1.4, 0.2]]))
        v2 = await dp.v2_infer("m", None, V2Request(None, [tensor], [], None))
        assert [(t.name, t.array.tolist()) for t in v2.outputs] == [("output-0", [0])]
    finally:
        await dp.stop()
    regressor = await ready_plane(load_sklearn_runtime(model_files["regressor"], "sklearn"), info)
    try:
        # Without predict_proba, V1 keeps answering with predictions.
        v1 = await regressor.v1_predict("m", decode_v1(b'{"instances": [[5.1, 3.5, 1.4]]}'))
        assert v1.predictions.shape == (1,)
    finally:
        await regressor.stop()


async def test_a_model_fitted_with_feature_names_leaves_the_warning_filters_alone(
    model_files: dict[str, Path],
) -> None:
    before = list(warnings.filters)
    runtime = load_sklearn_runtime(model_files["named"], "sklearn", fast_forest=False)
    dp = await ready_plane(runtime)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = await dp.v1_predict("m", decode_v1(b'{"instances": [[6.7, 3.0, 5.2, 2.3]]}'))
        assert result.predictions.tolist() == [2]
        assert not [w for w in caught if "feature names" in str(w.message)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runtime.model.estimator.predict(np.array([[6.7, 3.0, 5.2, 2.3]]))
        assert [w for w in caught if "feature names" in str(w.message)]  # what was silenced
    finally:
        await dp.stop()
    assert warnings.filters == before  # nothing was set for the whole process


def test_one_datatype_table_decodes_names_and_documents() -> None:
    documented = V2Tensor.model_json_schema()["properties"]["datatype"]["enum"]
    assert documented == list(V2_DTYPES)
    for name, dtype in V2_DTYPES.items():
        assert v2_datatype(np.zeros(1, dtype=dtype)) == name
    assert v2_datatype(np.array(["a"])) == "BYTES"
