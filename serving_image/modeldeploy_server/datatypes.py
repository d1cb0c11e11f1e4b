"""The Open Inference Protocol's tensor datatypes and the numpy dtype of each, in one table.

Decoding a V2 request, naming an output's datatype, describing a model's tensors in its metadata
and documenting the bodies in OpenAPI all read this table, so a datatype added here is accepted,
produced and documented at once (a binary-tensor or gRPC codec will read it too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# OIP tensor datatypes (required_api.md "Tensor Data Types") -> the numpy dtype each decodes to.
# Order is the documented one; it is also the order error messages list them in.
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
DATATYPES: tuple[str, ...] = tuple(V2_DTYPES)

# The output direction, derived from the same table: numpy (kind, itemsize) -> datatype name.
# Strings and Python objects have no fixed-width entry and travel as BYTES.
_BY_KIND: dict[tuple[str, int], str] = {
    (dtype.kind, dtype.itemsize): name for name, dtype in V2_DTYPES.items() if name != "BYTES"
}


def v2_datatype(arr: np.ndarray[Any, Any]) -> str:
    """The OIP datatype for an array; strings and objects travel as BYTES."""
    return _BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize), "BYTES")
