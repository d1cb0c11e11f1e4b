"""The V1 and V2 messages, and their JSON form: decode bodies into numpy, encode results.

The request and result dataclasses are what the DataPlane takes and returns, whatever carried
them (the gRPC service builds and reads the same ones); this module's functions are the REST wire
format: JSON, and V2 with the binary tensor data extension, where the JSON header names the
tensors and binary.py reads and writes their bytes. This is the hot path, so bodies are parsed
once with orjson and handed to numpy as whole lists: numpy converts and type-checks in C, and we
never validate element by element in Python (nor run pydantic over request bodies). Shapes and
datatypes are checked against the protocol here; whether the shape fits *this* model is the
runtime's job, and which outputs exist is the runtime's too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modeldeploy_server.binary import RawReader, raw_from_array, split_body, tensor_from_raw
from modeldeploy_server.datatypes import V2_DTYPES, v2_datatype
from modeldeploy_server.errors import InferenceError, InvalidInputError, brief, clip

Array = np.ndarray[Any, Any]

# The most dimensions a V2 tensor (its shape, or the nesting of its data) may have: numpy 1 makes
# arrays of at most 32 (numpy 2 of 64, but some of its functions, e.g. ``.flat``, still stop at
# 32), and no model here takes more than a few.
MAX_RANK = 32
# numpy refuses a shape whose element count times the item size (at most 8 bytes for the V2
# datatypes) overflows its index type, even when a zero-length dimension leaves it empty; a shape
# over this is refused here, before any array is made.
_MAX_ELEMENTS = int(np.iinfo(np.intp).max) // 8
# What each datatype's JSON data may hold, for the error that says it doesn't.
_INTEGER_RANGE = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for name, dtype in V2_DTYPES.items()
    if dtype.kind in "iu"
}


_FRAMING_HINT = (
    "; this is not a binary-tensor body either: one needs the header "
    "Inference-Header-Content-Length giving the length of its JSON part"
)


def _load(body: bytes, what: str = "the request body", *, v2: bool = False) -> dict[str, Any]:
    if not body:
        raise InvalidInputError(f"{what} is empty; send a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # A V2 body that looks binary (bytes past ASCII, or inputs declaring binary data) was
        # most likely sent without its framing header: say that, not only "bad JSON".
        binary_like = not body.isascii() or b"binary_data_size" in body
        hint = _FRAMING_HINT if v2 and binary_like else ""
        where = "" if what == "the request body" else f" in {what}"
        # orjson's message says where parsing stopped (line, column), never the input itself.
        raise InvalidInputError(f"malformed JSON{where}: {str(exc)[:200]}{hint}") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"the body must be a JSON object, got {type(doc).__name__}")
    return doc


def rows_to_array(rows: list[Any], what: str) -> np.ndarray[Any, Any]:
    """Turn a JSON list into an ndarray with numpy's own conversion (no per-element Python)."""
    try:
        arr = np.asarray(rows)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInputError(
            f"{what} must be a rectangular list (every row with the same number of values)"
        ) from None
    kind = arr.dtype.kind
    if kind == "O":
        # Mixed numbers and nulls: null is the only JSON spelling of a missing value, so map it
        # to NaN; anything else that still won't become float stays object for the model to judge.
        try:
            return np.asarray(rows, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
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
                parts.append(f"missing {brief(missing)}")
            if unknown:
                parts.append(f"unknown {brief(unknown)}")
            listed = clip(str(list(names)))
            if len(listed) < len(str(list(names))):
                listed += f" ({len(names)} in all: the model metadata's parameters.feature_names)"
            raise InvalidInputError(
                f"instances[{i}] has {', '.join(parts)}; the model expects the features {listed}"
            )
        matrix.append([rec[n] for n in names])
    return rows_to_array(matrix, 'field "instances"')


@dataclass(slots=True)
class Tensor:
    """A named V2 input or output tensor; ``array`` has the tensor's shape."""

    name: str
    array: Array


@dataclass(slots=True)
class V2Request:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str]  # requested output names, in request order; empty = the default output
    parameters: dict[str, Any] | None
    # Binary tensor data extension: answer every output as raw bytes (parameters
    # .binary_data_output), or these requested outputs (outputs[].parameters.binary_data).
    binary_all: bool = False
    binary_outputs: frozenset[str] = frozenset()


@dataclass(slots=True)
class V1Result:
    """A V1 answer. ``predict_seconds`` is the model call that produced it (Server-Timing)."""

    predictions: Array
    predict_seconds: float


@dataclass(slots=True)
class V2Result:
    """An OIP ``$inference_response``, outputs named as requested, plus the model call's time."""

    model_name: str
    model_version: str
    id: str | None
    outputs: list[Tensor]
    predict_seconds: float


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise InvalidInputError(f'{where}: field "{key}" is required') from None


def _parameters(params: Any, where: str) -> dict[str, Any] | None:
    """``params`` if it is the OIP's ``$parameters``: an object whose values are strings,
    numbers or booleans. Nothing else is read from it here, but the caller should hear that a
    parameter they sent can't mean anything (and a value nested a thousand deep is refused)."""
    if params is None:
        return None
    if not isinstance(params, dict):
        raise InvalidInputError(f'{where}: "parameters" must be an object, got {brief(params)}')
    for key, value in params.items():
        if not isinstance(value, str | int | float):  # bool is an int
            raise InvalidInputError(
                f'{where}: "parameters.{clip(key, 40)}" must be a string, number or boolean, '
                f"got {brief(value)}"
            )
    return params


def _flag(params: Any, key: str, where: str) -> bool:
    if params is None:
        return False
    if not isinstance(params, dict):
        raise InvalidInputError(f'{where}: "parameters" must be an object, got {brief(params)}')
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f'{where}: "parameters.{key}" must be true or false')
    return value


def check_shape(where: str, shape: Any) -> list[int]:
    """``shape`` if numpy can make an array of it; InvalidInputError naming ``where`` if not.

    A tensor's header must pass it before an array is made or bytes are read for it, whichever
    transport carried it (a JSON or binary tensor here): numpy raises ValueError, which is no
    400, for a shape past its dimension limit or one whose size overflows with no elements."""
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInputError(
            f'{where}: "shape" must be a list of non-negative integers, got {brief(shape)}'
        )
    if len(shape) > MAX_RANK:
        raise InvalidInputError(
            f'{where}: "shape" has {len(shape)} dimensions; at most {MAX_RANK} are supported'
        )
    if math.prod(d for d in shape if d) > _MAX_ELEMENTS:
        raise InvalidInputError(
            f'{where}: "shape" {brief(shape)} describes more elements than an array can hold'
        )
    return shape


def _integers(datatype: str) -> str:
    lo, hi = _INTEGER_RANGE[datatype]
    return f"expected integers from {lo} to {hi}"


def _not_of(where: str, datatype: str, problem: str, data: Any) -> InvalidInputError:
    return InvalidInputError(
        f"{where}: data can't be read as {datatype}: {problem}, got {brief(data)}"
    )


def _data_problem(datatype: str, found: Array) -> str | None:
    """Why ``found`` (the data as numpy read it, whatever its type) is not ``datatype``'s JSON
    form, or None. Whole-array checks; only BYTES and data with nulls look at each element."""
    kind = found.dtype.kind
    if datatype == "BYTES":
        if all(v is None or isinstance(v, str) for v in found.reshape(-1).tolist()):
            return None
        return "expected strings"
    if not found.size:
        return None
    if datatype == "BOOL":
        if kind == "b" or (kind in "iu" and found.min() >= 0 and found.max() <= 1):
            return None
        return "expected true or false (or 0 and 1)"
    if datatype in _INTEGER_RANGE:
        lo, hi = _INTEGER_RANGE[datatype]
        if kind in "biu" and lo <= int(found.min()) and int(found.max()) <= hi:
            return None
        # Floats: whole ones (2.0), or integers numpy could only hold together as floats
        # (2**64 - 1 beside 0); the conversion from the JSON values checks the range exactly.
        if kind == "f" and bool((found == np.trunc(found)).all()):
            return None
        return _integers(datatype)
    # FP16/FP32/FP64: numbers; null (which makes numpy's guess an object array) is NaN.
    if kind in "biuf" or (
        kind == "O"
        and all(v is None or isinstance(v, int | float) for v in found.reshape(-1).tolist())
    ):
        return None
    return "expected numbers (null for a missing value)"


def _typed_array(where: str, datatype: str, data: Any) -> Array:
    """JSON ``data`` as an array of ``datatype``; InvalidInputError naming ``where`` for data
    that is not of that type (numpy alone would turn "1" or 1.5 into an INT32 1, "a" into True)."""
    try:
        found = np.asarray(data, dtype=object if datatype == "BYTES" else None)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(
            f"{where}: data can't be read as {datatype}: {clip(str(exc))}"
        ) from None
    if found.ndim > MAX_RANK:
        raise InvalidInputError(
            f"{where}: data nests lists {found.ndim} deep; at most {MAX_RANK} are supported"
        )
    problem = _data_problem(datatype, found)
    if problem is not None:
        raise _not_of(where, datatype, problem, data)
    dtype = V2_DTYPES[datatype]
    if datatype in _INTEGER_RANGE and found.dtype.kind == "f":
        try:
            return np.asarray(data, dtype=dtype)  # OverflowError out of the datatype's range
        except OverflowError:
            raise _not_of(where, datatype, _integers(datatype), data) from None
    if found.dtype.kind == "O" and datatype != "BYTES":
        # Numbers and nulls: converting the list itself maps null to NaN.
        return np.asarray(data, dtype=dtype)
    # Overflow (e.g. 7e4 as FP16) becomes inf, which the runtime reports as a 400.
    with np.errstate(over="ignore"):
        return found.astype(dtype, copy=False)


def _decode_tensor(i: int, inp: Any, raw: RawReader | None) -> Tensor:
    where = f"inputs[{i}]"
    if not isinstance(inp, dict):
        raise InvalidInputError(f"{where} must be an object with name, shape, datatype and data")
    name = _field(inp, "name", where)
    shape = _field(inp, "shape", where)
    datatype = _field(inp, "datatype", where)
    params = _parameters(inp.get("parameters"), where)
    size = params.get("binary_data_size") if params is not None else None
    if size is None:
        data = _field(inp, "data", where)
    elif raw is None:
        raise InvalidInputError(
            f"{where} has parameters.binary_data_size but the request carries no binary data: "
            "send the header Inference-Header-Content-Length with the length of the JSON part"
        )
    elif "data" in inp:
        raise InvalidInputError(
            f'{where} has both "data" and parameters.binary_data_size; send one of them'
        )
    if not isinstance(name, str):
        raise InvalidInputError(f'{where}: "name" must be a string, got {brief(name)}')
    shape = check_shape(where, shape)
    if not isinstance(datatype, str) or datatype not in V2_DTYPES:
        raise InvalidInputError(
            f"{where}: datatype {brief(datatype)} is not supported; use one of "
            f"{', '.join(V2_DTYPES)}"
        )
    want = math.prod(shape)
    if size is not None:
        assert raw is not None
        chunk = raw.take(where, size)
        return Tensor(name, tensor_from_raw(where, datatype, shape, chunk))
    if not isinstance(data, list):
        data = [data]
    arr = _typed_array(where, datatype, data)
    if arr.size != want:
        raise InvalidInputError(
            f"{where}: shape {brief(shape)} needs {want} values but data holds {arr.size}"
        )
    if arr.shape != tuple(shape):
        arr = arr.reshape(shape)
    return Tensor(name, arr)


def decode_v2(body: bytes, header_length: str | None = None) -> V2Request:
    """An OIP ``$inference_request``; flat (row-major) or nested ``data`` both work.

    With ``header_length`` (the Inference-Header-Content-Length header) the body is a JSON
    header of that many bytes followed by the binary data of the inputs that declare
    ``parameters.binary_data_size``, in input order.
    """
    raw: RawReader | None = None
    if header_length is None:
        doc = _load(body, v2=True)
    else:
        header, raw = split_body(body, header_length)
        doc = _load(header, "the JSON header (the first Inference-Header-Content-Length bytes)")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError(
            'field "inputs" is required: a non-empty list of tensors '
            '{"name", "shape", "datatype", "data"}'
        )
    decoded = [_decode_tensor(i, inp, raw) for i, inp in enumerate(inputs)]
    if raw is not None:
        raw.finish()
    outputs: list[str] = []
    binary: set[str] = set()
    requested = doc.get("outputs")
    if requested is not None:
        if not isinstance(requested, list):
            raise InvalidInputError('field "outputs" must be a list of {"name": ...} objects')
        for j, out in enumerate(requested):
            # Which names exist is the model's to say (its runtime checks them); here only form.
            name = out.get("name") if isinstance(out, dict) else None
            if not isinstance(name, str):
                raise InvalidInputError(
                    f'outputs[{j}] must be an object with a string "name", got {brief(out)}'
                )
            outputs.append(name)
            out_params = _parameters(out.get("parameters"), f"outputs[{j}]")
            if _flag(out_params, "binary_data", f"outputs[{j}]"):
                binary.add(name)
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InvalidInputError(f'field "id" must be a string, got {brief(req_id)}')
    params = _parameters(doc.get("parameters"), "the request")
    return V2Request(
        id=req_id,
        inputs=decoded,
        outputs=outputs,
        parameters=params,
        binary_all=_flag(params, "binary_data_output", "the request"),
        binary_outputs=frozenset(binary),
    )


def v2_tensor(name: str, arr: Array) -> dict[str, Any]:
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


def _inference_json(doc: dict[str, Any]) -> bytes:
    """An answer as JSON. Output JSON can't hold is the model's doing: say so (a 500)."""
    try:
        return encode_json(doc)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InferenceError(
            f"the model's output cannot be written as JSON ({exc}); its predict must return "
            "numbers, strings or booleans"
        ) from None


def encode_v1(result: V1Result) -> bytes:
    return _inference_json({"predictions": result.predictions})


def encode_v2(
    result: V2Result, *, binary_all: bool = False, binary_outputs: frozenset[str] = frozenset()
) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON part when outputs travel as binary (the
    value of the response's Inference-Header-Content-Length; None for a plain JSON body)."""
    doc: dict[str, Any] = {
        "model_name": result.model_name,
        "model_version": result.model_version,
    }
    if result.id is not None:
        doc["id"] = result.id
    if not binary_all and not binary_outputs:
        doc["outputs"] = [v2_tensor(t.name, t.array) for t in result.outputs]
        return _inference_json(doc), None
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for t in result.outputs:
        if binary_all or t.name in binary_outputs:
            datatype, data = raw_from_array(t.array)
            tensors.append(
                {
                    "name": t.name,
                    "datatype": datatype,
                    "shape": list(t.array.shape),
                    "parameters": {"binary_data_size": len(data)},
                }
            )
            blobs.append(data)
        else:
            tensors.append(v2_tensor(t.name, t.array))
    doc["outputs"] = tensors
    header = _inference_json(doc)
    return b"".join((header, *blobs)), len(header)
