"""The binary tensor data extension: raw tensor bytes both ways, and the REST framing around them.

Round trips for every OIP datatype (hypothesis over shapes and values), the exact byte layout
Triton documents (little-endian, BOOL one byte, BYTES 4-byte length prefixes), and framings that
don't add up, each refused with a message naming the input and what the bytes should have been.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from modeldeploy_server.binary import raw_from_array, split_body, tensor_from_raw
from modeldeploy_server.codec import Tensor, V2Result, decode_v2, encode_v2
from modeldeploy_server.datatypes import V2_DTYPES
from modeldeploy_server.errors import InvalidInputError

FIXED = [name for name in V2_DTYPES if name != "BYTES"]


def framed(inputs: list[dict[str, Any]], blobs: list[bytes], **doc: Any) -> tuple[bytes, str]:
    header = orjson.dumps({"inputs": inputs, **doc})
    return header + b"".join(blobs), str(len(header))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(FIXED))
def test_every_fixed_width_datatype_round_trips(data: st.DataObject, datatype: str) -> None:
    dtype = V2_DTYPES[datatype]
    arr = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)))
    name, raw = raw_from_array(arr)
    assert name == datatype
    assert len(raw) == arr.size * dtype.itemsize
    back = tensor_from_raw("inputs[0]", datatype, list(arr.shape), raw)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == dtype


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.binary(max_size=20), min_size=1, max_size=12))
def test_bytes_round_trip_with_length_prefixes(values: list[bytes]) -> None:
    arr = np.array([*values, b""], dtype=object)[:-1]  # keep object dtype even for one value
    name, raw = raw_from_array(arr)
    assert name == "BYTES"
    assert raw == b"".join(struct.pack("<I", len(v)) + v for v in values)
    back = tensor_from_raw("inputs[0]", "BYTES", [len(values)], raw)
    assert back.tolist() == values


def test_the_wire_is_little_endian_whatever_the_array() -> None:
    big = np.array([1, 256], dtype=">i4")
    assert raw_from_array(big) == ("INT32", b"\x01\x00\x00\x00\x00\x01\x00\x00")
    assert raw_from_array(np.array([True, False])) == ("BOOL", b"\x01\x00")
    # Strings (e.g. class labels) travel as UTF-8 BYTES.
    assert raw_from_array(np.array(["setosa"]))[1] == b"\x06\x00\x00\x00setosa"


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP64", [1, 4], b"\0" * 24, "needs 32 bytes (4 x 8) but the binary data holds 24"),
        ("INT32", [2], b"\0" * 9, "needs 8 bytes"),
        ("BOOL", [2], b"\x01\x02", "BOOL data must be bytes 0 or 1"),
        ("BYTES", [2], struct.pack("<I", 1) + b"abcd", "ends inside element 1's 4-byte length"),
        ("BYTES", [2**40], b"\0" * 4, "1099511627776 BYTES elements can't fit in 4 bytes"),
        ("BYTES", [1], struct.pack("<I", 9) + b"abc", "says it is 9 bytes but only 3 remain"),
        ("BYTES", [1], struct.pack("<I", 1) + b"ab", "1 bytes left over"),
        ("BF16", [1], b"\0\0", "datatype 'BF16' is not supported"),
    ],
)
def test_raw_bytes_that_do_not_fit_name_the_input(
    datatype: str, shape: list[int], raw: bytes, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=r"^inputs\[3\]: ") as info:
        tensor_from_raw("inputs[3]", datatype, shape, raw)
    assert message in info.value.message


def test_decode_mixes_binary_and_json_inputs_in_order() -> None:
    a = np.arange(4.0)
    c = np.array([7, 8], dtype=np.int64)
    body, length = framed(
        [
            {"name": "a", "shape": [4], "datatype": "FP64", "parameters": {"binary_data_size": 32}},
            {"name": "b", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]},
            {
                "name": "c",
                "shape": [2],
                "datatype": "INT64",
                "parameters": {"binary_data_size": 16},
            },
        ],
        [a.tobytes(), c.tobytes()],
        id="r-1",
        outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}],
    )
    req = decode_v2(body, length)
    assert [t.name for t in req.inputs] == ["a", "b", "c"]
    np.testing.assert_array_equal(req.inputs[0].array, a)
    np.testing.assert_array_equal(req.inputs[1].array, [1.5, 2.5])
    np.testing.assert_array_equal(req.inputs[2].array, c)
    assert req.id == "r-1"
    assert req.binary_outputs == frozenset({"probabilities"})
    assert not req.binary_all


@pytest.mark.parametrize(
    ("inputs", "blobs", "length", "message"),
    [
        (
            [
                {
                    "name": "x",
                    "shape": [1],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 8},
                }
            ],
            [b"\0" * 16],
            None,
            "8 bytes of binary data after the last input",
        ),
        (
            [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 16},
                }
            ],
            [b"\0" * 8],
            None,
            "inputs[0]: parameters.binary_data_size is 16 bytes but only 8 bytes",
        ),
        (
            [
                {
                    "name": "x",
                    "shape": [1],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": -1},
                }
            ],
            [],
            None,
            'inputs[0]: "parameters.binary_data_size" must be a non-negative integer, got -1',
        ),
        (
            [
                {
                    "name": "x",
                    "shape": [1],
                    "datatype": "FP64",
                    "data": [1.0],
                    "parameters": {"binary_data_size": 8},
                }
            ],
            [b"\0" * 8],
            None,
            'inputs[0] has both "data" and parameters.binary_data_size',
        ),
        ([], [], "10000", "Inference-Header-Content-Length is 10000 but the body is only"),
        ([], [], "12abc", "must be the JSON header's length in bytes, got '12abc'"),
    ],
)
def test_framings_that_do_not_add_up(
    inputs: list[dict[str, Any]], blobs: list[bytes], length: str | None, message: str
) -> None:
    body, header_length = framed(inputs, blobs)
    with pytest.raises(InvalidInputError) as info:
        decode_v2(body, length or header_length)
    assert message in info.value.message


def test_binary_data_size_without_the_header_says_what_is_missing() -> None:
    doc = {
        "inputs": [
            {"name": "x", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
        ]
    }
    with pytest.raises(InvalidInputError, match="send the header Inference-Header-Content-Length"):
        decode_v2(orjson.dumps(doc))
    # The usual mistake, bytes appended to the JSON with no header: not only "malformed JSON".
    with pytest.raises(InvalidInputError, match="not a binary-tensor body either"):
        decode_v2(orjson.dumps(doc) + np.ones(1).tobytes())


def test_the_json_header_must_be_json() -> None:
    with pytest.raises(InvalidInputError, match="malformed JSON in the JSON header"):
        decode_v2(b'{"inputs": [' + b"\0" * 8, "12")


def _result() -> V2Result:
    return V2Result(
        "iris",
        "v1",
        "r-1",
        [Tensor("output-0", np.array([0, 2])), Tensor("probabilities", np.eye(2, 3))],
        0.001,
    )


def test_encode_binary_outputs_frames_them_after_the_json_header() -> None:
    body, length = encode_v2(_result(), binary_all=True)
    assert length is not None
    header, reader = split_body(body, str(length))
    doc = orjson.loads(header)
    assert doc["outputs"][0] == {
        "name": "output-0",
        "datatype": "INT64",
        "shape": [2],
        "parameters": {"binary_data_size": 16},
    }
    labels = tensor_from_raw("out", "INT64", [2], reader.take("out", 16))
    proba = tensor_from_raw("out", "FP64", [2, 3], reader.take("out", 48))
    reader.finish()
    np.testing.assert_array_equal(labels, [0, 2])
    np.testing.assert_array_equal(proba, np.eye(2, 3))


def test_encode_binary_only_the_outputs_asked_for() -> None:
    body, length = encode_v2(_result(), binary_outputs=frozenset({"probabilities"}))
    assert length is not None
    doc = orjson.loads(body[:length])
    assert doc["outputs"][0]["data"] == [0, 2]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 48}
    assert len(body) == length + 48
    # Nothing asked for binary: plain JSON, no framing.
    plain, none = encode_v2(_result())
    assert none is None
    assert orjson.loads(plain)["outputs"][1]["data"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_binary_flags_must_be_booleans() -> None:
    doc = {
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}],
        "parameters": {"binary_data_output": "yes"},
    }
    with pytest.raises(InvalidInputError, match=r'"parameters\.binary_data_output" must be true'):
        decode_v2(orjson.dumps(doc))


@pytest.mark.anyio
async def test_the_http_answer_carries_the_framing_headers(make_client: Any) -> None:
    client, _ = await make_client()
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    body, length = framed(
        [
            {
                "name": "x",
                "shape": [2, 4],
                "datatype": "FP64",
                "parameters": {"binary_data_size": 64},
            }
        ],
        [x.tobytes()],
        parameters={"binary_data_output": True},
    )
    r = await client.post(
        "/v2/models/iris/infer",
        content=body,
        headers={
            "Inference-Header-Content-Length": length,
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    out = orjson.loads(r.content[:n])["outputs"][0]
    assert out["parameters"]["binary_data_size"] == 16
    labels = tensor_from_raw("output-0", out["datatype"], out["shape"], r.content[n:])
    assert labels.tolist() == [0, 2]
    # V1 has no binary form: the header there is a mistake, and the answer says where to go.
    r = await client.post(
        "/v1/models/iris:predict", content=body, headers={"Inference-Header-Content-Length": length}
    )
    assert r.status_code == 400
    assert "/v2/models/iris/infer" in r.json()["error"]
