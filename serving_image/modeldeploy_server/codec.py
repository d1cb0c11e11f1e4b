"""Decode KServe V1 and Open Inference Protocol V2 bodies into numpy, and encode results.

This is the hot path, so bodies are parsed once with orjson and handed to numpy as whole lists:
numpy converts and type-checks in C, and we never validate element by element in Python (nor run
pydantic over request bodies). Shapes and datatypes are checked against the protocol here; whether
the shape fits *this* model is the DataPlane's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modeldeploy_server.errors import InvalidInputError

# OIP tensor datatypes (required_api.md "Tensor Data Types") and the numpy dtype each decodes to.
V2_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

# Output side: numpy kind/itemsize back to an OIP datatype name.
_KIND_TO_V2 = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}

PREDICT_OUTPUT = "output-0"
PROBA_OUTPUT = "probabilities"
# Requested output names -> model method. The aliases let a caller say what they mean.
OUTPUT_METHODS: dict[str, str] = {
    PREDICT_OUTPUT: "predict",
    "predict": "predict",
    PROBA_OUTPUT: "predict_proba",
    "predict_proba": "predict_proba",
}


def v2_datatype(arr: np.ndarray[Any, Any]) -> str:
    """The OIP datatype for an output array; strings and objects travel as BYTES."""
    return _KIND_TO_V2.get((arr.dtype.kind, arr.dtype.itemsize), "BYTES")


def _load(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidInputError("the request body is empty; send a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"the body must be a JSON object, got {type(doc).__name__}")
    return doc


def rows_to_array(rows: list[Any], what: str) -> np.ndarray[Any, Any]:
    """Turn a JSON list into an ndarray with numpy's own conversion (no per-element Python)."""
    try:
        arr = np.asarray(rows)
    except (ValueError, TypeError):
        raise InvalidInputError(
            f"{what} must be a rectangular list (every row with the same number of values)"
        ) from None
    kind = arr.dtype.kind
    if kind == "O":
        # Mixed numbers and nulls: null is the only JSON spelling of a missing value, so map it
        # to NaN; anything else that still won't become float stays object for the model to judge.
        try:
            return np.asarray(rows, dtype=np.float64)
        except (ValueError, TypeError):
            if arr.ndim == 1 and any(isinstance(r, list) for r in rows):
                raise InvalidInputError(
                    f"{what} must be a rectangular list (every row with the same number of values)"
                ) from None
            return arr
    if kind in "US":
        # numpy would turn [1, "a"] into all-strings; object keeps the numbers numbers.
        return np.asarray(rows, dtype=object)
    return arr


@dataclass(slots=True)
class V1Request:
    """A decoded V1 predict body: a matrix, or dict rows when the caller used feature names."""

    instances: np.ndarray[Any, Any] | None
    records: list[dict[str, Any]] | None


def decode_v1(body: bytes) -> V1Request:
    """``{"instances": [...]}`` (or KServe's alternative ``{"inputs": [...]}``)."""
    doc = _load(body)
    instances = doc.get("instances")
    if instances is None:
        instances = doc.get("inputs")
    if instances is None:
        raise InvalidInputError(
            'field "instances" is required: send {"instances": [[f1, f2, ...], ...]}'
        )
    if not isinstance(instances, list) or not instances:
        raise InvalidInputError('field "instances" must be a non-empty list of rows')
    if isinstance(instances[0], dict):
        if not all(isinstance(r, dict) for r in instances):
            raise InvalidInputError('field "instances" mixes objects and lists; use one form')
        return V1Request(None, instances)
    return V1Request(rows_to_array(instances, 'field "instances"'), None)


def records_to_array(records: list[dict[str, Any]], names: tuple[str, ...]) -> np.ndarray[Any, Any]:
    """Order dict rows by the model's ``feature_names_in_``; name what is missing or unknown."""
    expected = set(names)
    matrix: list[list[Any]] = []
    for i, rec in enumerate(records):
        if len(rec) != len(names) or not expected.issuperset(rec):
            missing = sorted(expected.difference(rec))
            unknown = sorted(set(rec).difference(expected))
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise InvalidInputError(
                f"instances[{i}] has {', '.join(parts)}; the model expects the features "
                f"{list(names)}"
            )
        matrix.append([rec[n] for n in names])
    return rows_to_array(matrix, 'field "instances"')


@dataclass(slots=True)
class V2Input:
    name: str
    array: np.ndarray[Any, Any]


@dataclass(slots=True)
class V2Request:
    id: str | None
    inputs: list[V2Input]
    outputs: list[str]  # requested output names, in request order; empty = the default output
    parameters: dict[str, Any] | None


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise InvalidInputError(f'{where}: field "{key}" is required') from None


def _decode_tensor(i: int, inp: Any) -> V2Input:
    where = f"inputs[{i}]"
    if not isinstance(inp, dict):
        raise InvalidInputError(f"{where} must be an object with name, shape, datatype and data")
    name = _field(inp, "name", where)
    shape = _field(inp, "shape", where)
    datatype = _field(inp, "datatype", where)
    data = _field(inp, "data", where)
    if not isinstance(name, str):
        raise InvalidInputError(f'{where}: "name" must be a string')
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInputError(
            f'{where}: "shape" must be a list of non-negative integers, got {shape}'
        )
    dtype = V2_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(
            f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(V2_DTYPES)}"
        )
    if not isinstance(data, list):
        data = [data]
    try:
        # Overflow (e.g. 7e4 as FP16) becomes inf, which the DataPlane reports as a 400.
        with np.errstate(over="ignore"):
            arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(f"{where}: data can't be read as {datatype}: {exc}") from None
    want = math.prod(shape)
    if arr.size != want:
        raise InvalidInputError(
            f"{where}: shape {shape} needs {want} values but data holds {arr.size}"
        )
    if arr.shape != tuple(shape):
        arr = arr.reshape(shape)
    return V2Input(name, arr)


def decode_v2(body: bytes) -> V2Request:
    """An OIP ``$inference_request``; flat (row-major) or nested ``data`` both work."""
    doc = _load(body)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError(
            'field "inputs" is required: a non-empty list of tensors '
            '{"name", "shape", "datatype", "data"}'
        )
    decoded = [_decode_tensor(i, inp) for i, inp in enumerate(inputs)]
    outputs: list[str] = []
    requested = doc.get("outputs")
    if requested is not None:
        if not isinstance(requested, list):
            raise InvalidInputError('field "outputs" must be a list of {"name": ...} objects')
        for j, out in enumerate(requested):
            name = out.get("name") if isinstance(out, dict) else None
            if name not in OUTPUT_METHODS:
                raise InvalidInputError(
                    f"outputs[{j}].name {name!r} is unknown; this model offers "
                    f'"{PREDICT_OUTPUT}" (predict) and "{PROBA_OUTPUT}" (predict_proba)'
                )
            outputs.append(name)
    req_id = doc.get("id")
    params = doc.get("parameters")
    return V2Request(
        id=str(req_id) if req_id is not None else None,
        inputs=decoded,
        outputs=outputs,
        parameters=params if isinstance(params, dict) else None,
    )


def v2_tensor(name: str, arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    """An OIP output tensor with flat, row-major data (what Triton and KServe send)."""
    datatype = v2_datatype(arr)
    flat = arr.reshape(-1)
    data: Any = flat if datatype != "BYTES" else [str(v) for v in flat.tolist()]
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def encode_json(obj: Any) -> bytes:
    """orjson writes contiguous numeric arrays natively; other numpy values go through tolist."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
