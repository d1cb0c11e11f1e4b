"""Raw tensor bytes <-> numpy: the binary tensor data extension's framing and gRPC's raw contents.

Triton's and KServe's REST clients send V2 tensors as raw little-endian bytes after a JSON header
by default (the "binary tensor data extension": header ``Inference-Header-Content-Length``, each
binary input marked with ``parameters.binary_data_size``), and the OIP gRPC service carries the
same bytes in ``raw_input_contents``/``raw_output_contents``. Both read and write tensors here, so
one function decides what a datatype's bytes mean: fixed-width types go straight through
``np.frombuffer`` (no per-element work, which is why binary is cheaper than JSON), BOOL is one
byte per element, BYTES is each element as a 4-byte little-endian length and its bytes.

Nothing here knows the V2 message; codec.py and the gRPC service place these arrays in one.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from modeldeploy_server.datatypes import V2_DTYPES, v2_datatype
from modeldeploy_server.errors import InvalidInputError, brief

Array = np.ndarray[Any, Any]

# The wire is little-endian whatever the machine: every fixed-width dtype read with "<".
_WIRE: dict[str, np.dtype[Any]] = {
    name: dtype.newbyteorder("<") for name, dtype in V2_DTYPES.items() if name != "BYTES"
}
_LENGTH = struct.Struct("<I")


def element_count(shape: list[int] | tuple[int, ...]) -> int:
    return math.prod(shape)


def _bytes_elements(where: str, raw: memoryview, count: int) -> Array:
    if count > len(raw) // 4:
        # Each element takes at least its 4-byte length: refused before anything is allocated
        # for a shape the bytes can't hold (np.empty of 2**40 objects would end the process).
        raise InvalidInputError(
            f"{where}: {count} BYTES elements can't fit in {len(raw)} bytes (each takes at "
            "least its 4-byte length)"
        )
    out = np.empty(count, dtype=object)
    pos, end = 0, len(raw)
    for k in range(count):
        if pos + 4 > end:
            raise InvalidInputError(
                f"{where}: BYTES data ends inside element {k}'s 4-byte length prefix "
                f"({end} bytes for {count} elements)"
            )
        (length,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInputError(
                f"{where}: BYTES element {k} says it is {length} bytes but only {end - pos} remain"
            )
        out[k] = bytes(raw[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidInputError(
            f"{where}: {end - pos} bytes left over after the {count} BYTES elements the shape "
            "asks for"
        )
    return out


def tensor_from_raw(where: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> Array:
    """The array ``raw`` holds for a tensor of ``datatype`` and ``shape``; InvalidInputError
    naming ``where`` when the byte count doesn't fit. The result may be a read-only view of
    ``raw`` (no copy): the model only reads its input."""
    view = raw if isinstance(raw, memoryview) else memoryview(raw)
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_elements(where, view, count).reshape(shape)
    dtype = _WIRE.get(datatype)
    if dtype is None:
        raise InvalidInputError(
            f"{where}: datatype {brief(datatype)} is not supported; use one of "
            f"{', '.join(V2_DTYPES)}"
        )
    want = count * dtype.itemsize
    if len(view) != want:
        raise InvalidInputError(
            f"{where}: shape {brief(shape)} of {datatype} needs {want} bytes "
            f"({count} x {dtype.itemsize}) but the binary data holds {len(view)}"
        )
    arr = np.frombuffer(view, dtype=dtype)
    if datatype == "BOOL" and arr.size and int(arr.view(np.uint8).max()) > 1:
        raise InvalidInputError(f"{where}: BOOL data must be bytes 0 or 1")
    return arr.reshape(shape)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def raw_from_array(arr: Array) -> tuple[str, bytes]:
    """(datatype, raw bytes) for an output tensor, row-major and little-endian."""
    datatype = v2_datatype(arr)
    if datatype == "BYTES":
        parts: list[bytes] = []
        for value in arr.reshape(-1).tolist():
            data = _as_bytes(value)
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return datatype, b"".join(parts)
    wire = _WIRE[datatype]
    flat = np.ascontiguousarray(arr, dtype=wire)
    return datatype, flat.tobytes()


class RawReader:
    """The binary part of a request body, handed out in input order as inputs claim it."""

    __slots__ = ("_end", "_pos", "_view")

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0
        self._end = len(view)

    def take(self, where: str, size: Any) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(
                f'{where}: "parameters.binary_data_size" must be a non-negative integer, got '
                f"{brief(size)}"
            )
        if self._pos + size > self._end:
            raise InvalidInputError(
                f"{where}: parameters.binary_data_size is {size} bytes but only "
                f"{self._end - self._pos} bytes of binary data are left in the body"
            )
        part = self._view[self._pos : self._pos + size]
        self._pos += size
        return part

    def finish(self) -> None:
        if self._pos != self._end:
            raise InvalidInputError(
                f"the body has {self._end - self._pos} bytes of binary data after the last input "
                "that claims any (parameters.binary_data_size of the inputs, in order, must add "
                "up to the bytes after the JSON header)"
            )


def split_body(body: bytes, header_length: str) -> tuple[bytes, RawReader]:
    """The JSON header and the binary part of a body sent with Inference-Header-Content-Length."""
    # Only ASCII digits are a length: str.isdigit also takes "²", which int() refuses.
    if not (header_length.isascii() and header_length.isdigit()):
        raise InvalidInputError(
            "header Inference-Header-Content-Length must be the JSON header's length in bytes, "
            f"got {brief(header_length)}"
        )
    n = int(header_length)
    if n > len(body):
        raise InvalidInputError(
            f"header Inference-Header-Content-Length is {n} but the body is only {len(body)} "
            "bytes; it must be the length of the JSON part that starts the body"
        )
    view = memoryview(body)
    return body[:n], RawReader(view[n:])
