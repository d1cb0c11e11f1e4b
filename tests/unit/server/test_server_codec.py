"""The V1/V2 codecs: what becomes which numpy array, and which bodies are refused and how."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from modeldeploy_server.codec import (
    MAX_RANK,
    decode_v1,
    decode_v2,
    encode_json,
    records_to_array,
    v2_tensor,
)
from modeldeploy_server.datatypes import V2_DTYPES, v2_datatype
from modeldeploy_server.errors import InvalidInputError


def body(obj: object) -> bytes:
    return orjson.dumps(obj)


class TestV1:
    def test_rows_become_a_float_matrix(self) -> None:
        req = decode_v1(body({"instances": [[1, 2.5], [3, 4]]}))
        assert req.instances is not None
        assert req.instances.shape == (2, 2)
        assert req.instances.dtype.kind == "f"

    def test_kserve_inputs_key_is_accepted(self) -> None:
        req = decode_v1(body({"inputs": [[1, 2]]}))
        assert req.instances is not None
        assert req.instances.tolist() == [[1, 2]]

    def test_null_is_a_missing_value(self) -> None:
        req = decode_v1(body({"instances": [[1.0, None]]}))
        assert req.instances is not None
        assert req.instances.dtype == np.float64
        assert math.isnan(req.instances[0, 1])

    def test_strings_keep_numbers_as_numbers(self) -> None:
        req = decode_v1(body({"instances": [[1, "a"]]}))
        assert req.instances is not None
        assert req.instances.dtype == object
        assert req.instances[0].tolist() == [1, "a"]

    def test_ragged_rows_are_refused(self) -> None:
        with pytest.raises(InvalidInputError, match="rectangular"):
            decode_v1(body({"instances": [[1, 2], [3]]}))

    def test_records_are_kept_for_the_model_to_order(self) -> None:
        req = decode_v1(body({"instances": [{"b": 2, "a": 1}]}))
        assert req.records == [{"b": 2, "a": 1}]
        assert records_to_array(req.records, ("a", "b")).tolist() == [[1, 2]]

    def test_records_name_missing_and_unknown_features(self) -> None:
        with pytest.raises(InvalidInputError) as err:
            records_to_array([{"a": 1, "c": 3}], ("a", "b"))
        assert "missing ['b']" in err.value.message
        assert "unknown ['c']" in err.value.message

    def test_mixed_objects_and_lists_are_refused(self) -> None:
        with pytest.raises(InvalidInputError, match="mixes"):
            decode_v1(body({"instances": [{"a": 1}, [1]]}))

    @pytest.mark.parametrize(
        ("raw", "fragment"),
        [
            (b"", "empty"),
            (b"{not json", "malformed JSON"),
            (b"[1, 2]", "JSON object"),
            (b'{"rows": [[1]]}', '"instances" is required'),
            (b'{"instances": []}', "non-empty"),
            (b'{"instances": 3}', "non-empty"),
        ],
    )
    def test_bad_bodies_say_what_is_wrong(self, raw: bytes, fragment: str) -> None:
        with pytest.raises(InvalidInputError, match=fragment):
            decode_v1(raw)


def tensor(**over: object) -> dict[str, object]:
    t: dict[str, object] = {
        "name": "x",
        "shape": [2, 2],
        "datatype": "FP32",
        "data": [1, 2, 3, 4],
    }
    t.update(over)
    return t


class TestV2:
    def test_flat_data_is_reshaped(self) -> None:
        req = decode_v2(body({"inputs": [tensor()]}))
        arr = req.inputs[0].array
        assert arr.dtype == np.float32
        assert arr.tolist() == [[1, 2], [3, 4]]
        assert req.outputs == []
        assert req.id is None

    def test_nested_data_matches_shape(self) -> None:
        req = decode_v2(body({"id": "r1", "inputs": [tensor(data=[[1, 2], [3, 4]])]}))
        assert req.inputs[0].array.shape == (2, 2)
        assert req.id == "r1"

    @pytest.mark.parametrize(
        ("datatype", "dtype"),
        [("FP64", np.float64), ("INT32", np.int32), ("INT64", np.int64), ("BOOL", np.bool_)],
    )
    def test_datatypes(self, datatype: str, dtype: type) -> None:
        req = decode_v2(body({"inputs": [tensor(datatype=datatype, data=[1, 0, 1, 0])]}))
        assert req.inputs[0].array.dtype == dtype

    @pytest.mark.parametrize(
        ("datatype", "data", "expected"),
        [
            ("BOOL", [True, False], [True, False]),
            ("BOOL", [1, 0], [True, False]),  # as in the binary form, one byte 0 or 1
            ("INT8", [-128, 127], [-128, 127]),
            ("INT32", [2.0, -3.0], [2, -3]),  # whole numbers some JSON writers give a ".0"
            ("UINT64", [2**64 - 1, 0], [2**64 - 1, 0]),
            ("FP32", [1, True], [1.0, 1.0]),
            ("FP16", [7e4, 1], [math.inf, 1.0]),  # overflow is inf: the runtime refuses it
            ("BYTES", ["a", None], ["a", None]),  # null: a missing string
        ],
    )
    def test_data_of_the_datatype_is_read_as_it(
        self, datatype: str, data: list[object], expected: list[object]
    ) -> None:
        req = decode_v2(body({"inputs": [tensor(shape=[2], datatype=datatype, data=data)]}))
        assert req.inputs[0].array.dtype == V2_DTYPES[datatype]
        assert req.inputs[0].array.tolist() == expected

    def test_null_is_nan_in_floating_point_data(self) -> None:
        req = decode_v2(body({"inputs": [tensor(shape=[2], datatype="FP64", data=[1.5, None])]}))
        assert math.isnan(req.inputs[0].array[1])

    def test_the_most_dimensions_numpy_makes_everywhere_are_accepted(self) -> None:
        shape = [1] * MAX_RANK
        assert decode_v2(body({"inputs": [tensor(shape=shape, data=[1])]})).inputs[0].array.ndim
        with pytest.raises(InvalidInputError, match=f"at most {MAX_RANK}"):
            decode_v2(body({"inputs": [tensor(shape=[*shape, 1], data=[1])]}))

    def test_an_empty_tensor_of_any_datatype_is_read(self) -> None:
        for datatype in V2_DTYPES:
            doc = {"inputs": [tensor(shape=[0, 4], datatype=datatype, data=[])]}
            assert decode_v2(body(doc)).inputs[0].array.shape == (0, 4)

    def test_parameters_are_kept_when_they_are_the_oip_kind(self) -> None:
        params = {"content_type": "np", "priority": 2, "ratio": 0.5, "binary_data_output": False}
        req = decode_v2(body({"inputs": [tensor(parameters={"note": "x"})], "parameters": params}))
        assert req.parameters == params

    def test_requested_outputs_are_kept_in_order(self) -> None:
        req = decode_v2(
            body(
                {"inputs": [tensor()], "outputs": [{"name": "probabilities"}, {"name": "output-0"}]}
            )
        )
        assert req.outputs == ["probabilities", "output-0"]

    @pytest.mark.parametrize(
        ("doc", "fragment"),
        [
            ({"inputs": []}, '"inputs" is required'),
            ({"inputs": [tensor(shape=[3, 2])]}, r"shape \[3, 2\] needs 6 values but data holds 4"),
            ({"inputs": [tensor(datatype="FP8")]}, "datatype 'FP8' is not supported"),
            ({"inputs": [tensor(data=["a", "b", "c", "d"])]}, "can't be read as FP32"),
            ({"inputs": [tensor(shape=[-1, 2])]}, "non-negative integers"),
            ({"inputs": [{"name": "x", "shape": [1]}]}, 'field "datatype" is required'),
            ({"inputs": [tensor()], "outputs": [{"name": 3}]}, "outputs.0. must be an object"),
            ({"inputs": [tensor()], "outputs": ["output-0"]}, 'with a string "name"'),
            ({"inputs": [tensor()], "outputs": {"name": "x"}}, '"outputs" must be a list'),
            ({"inputs": [tensor()], "id": 7}, 'field "id" must be a string, got 7'),
            ({"inputs": [tensor(shape=[0, 2**62], data=[])]}, "more elements than an array"),
            ({"inputs": [tensor(datatype="INT32", data=[1.5, 2, 3, 4])]}, "from -2147483648"),
            ({"inputs": [tensor(datatype="BOOL", data=["a", "", "b", "c"])]}, "true or false"),
            ({"inputs": [tensor(datatype="BYTES")]}, r"expected strings, got \[1, 2, 3, 4\]"),
            ({"inputs": [tensor(data=["1", "2", "3", "4"])]}, "expected numbers"),
            ({"inputs": [tensor(parameters={"a": [1]})]}, r'inputs\[0\]: "parameters.a" must be'),
            ({"inputs": [tensor()], "parameters": {"a": {}}}, '"parameters.a" must be a string'),
        ],
    )
    def test_bad_requests(self, doc: dict[str, object], fragment: str) -> None:
        with pytest.raises(InvalidInputError, match=fragment):
            decode_v2(body(doc))


class TestEncoding:
    def test_v2_tensor_is_flat_with_shape(self) -> None:
        out = v2_tensor("probabilities", np.array([[0.5, 0.5], [1.0, 0.0]]))
        assert out["shape"] == [2, 2]
        assert out["datatype"] == "FP64"
        assert orjson.loads(encode_json(out))["data"] == [0.5, 0.5, 1.0, 0.0]

    def test_string_labels_travel_as_bytes(self) -> None:
        out = v2_tensor("output-0", np.array(["setosa", "virginica"]))
        assert out["datatype"] == "BYTES"
        assert out["data"] == ["setosa", "virginica"]

    @pytest.mark.parametrize(
        ("arr", "name"),
        [
            (np.array([1], dtype=np.int64), "INT64"),
            (np.array([1], dtype=np.int32), "INT32"),
            (np.array([1.0], dtype=np.float32), "FP32"),
            (np.array([True]), "BOOL"),
        ],
    )
    def test_datatype_names(self, arr: np.ndarray, name: str) -> None:  # type: ignore[type-arg]
        assert v2_datatype(arr) == name

    def test_numpy_values_and_object_arrays_encode(self) -> None:
        doc = {"a": np.int64(3), "b": np.array(["x", 1], dtype=object), "c": np.arange(3)}
        assert orjson.loads(encode_json(doc)) == {"a": 3, "b": ["x", 1], "c": [0, 1, 2]}
