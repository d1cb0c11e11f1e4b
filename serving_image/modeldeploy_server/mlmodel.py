"""The ``MLmodel`` file MLflow writes beside a model, read and checked once.

Two sides need it: storage, to know which file of an MLflow directory is the model (the only one
worth downloading, and the one ``MODEL_SHA256`` covers), and the MLflow runtime, for how to load
it (serialization format, trusted skops types), which scikit-learn saved it and what its
signature calls the columns. It is a leaf (YAML and JSON, no numpy) so that storage may read it
without importing the model loader. Every problem is a StartupError that names the file, the
field and what was expected, because it becomes the pod's termination message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal, cast

import yaml

from modeldeploy_server.errors import StartupError

Serialization = Literal["skops", "cloudpickle", "pickle"]
SERIALIZATIONS: tuple[Serialization, ...] = ("skops", "cloudpickle", "pickle")
# MLflow's column types (mlflow.types.DataType). Array, object and map columns have no tensor of
# the Open Inference Protocol to travel in, so they are refused rather than guessed at.
COLUMN_TYPES = ("boolean", "integer", "long", "float", "double", "string", "binary", "datetime")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One entry of a signature's ``inputs`` or ``outputs``: a named column or a tensor."""

    name: str | None
    type: str  # one of COLUMN_TYPES, or "tensor"
    required: bool = True
    dtype: str | None = None  # a tensor's numpy dtype name
    shape: tuple[int, ...] | None = None  # a tensor's shape, -1 for any size


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...]

    @property
    def columns(self) -> tuple[ColumnSpec, ...] | None:
        """The input columns when the inputs are named columns (a DataFrame), else None."""
        if self.inputs and all(c.type != "tensor" for c in self.inputs):
            return self.inputs
        return None


@dataclass(frozen=True, slots=True)
class MLmodel:
    """What the server uses of an MLmodel file (the ``sklearn`` flavor and the signature)."""

    where: str  # how messages name the file
    pickled_model: str  # relative to the MLmodel's directory
    serialization_format: Serialization
    sklearn_version: str | None
    skops_trusted_types: tuple[str, ...]
    python_version: str | None
    mlflow_version: str | None
    run_id: str | None
    model_uuid: str | None
    signature: Signature | None
    flavors: tuple[str, ...]


def _bad(where: str, message: str, reason: str = "bad_mlmodel") -> StartupError:
    return StartupError(f"{where}: {message}", reason=reason)


def _optional_str(doc: dict[str, Any], key: str, field: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # YAML reads an unquoted 1.10 as a number
    if not isinstance(value, str):
        raise _bad(where, f"{field} must be a string, got {type(value).__name__}")
    return value


def _mapping(value: Any, field: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, f"{field} must be a mapping, got {type(value).__name__}")
    return cast(dict[str, Any], value)


def _spec(entry: Any, field: str, where: str) -> ColumnSpec:
    spec = _mapping(entry, field, where)
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(where, f"{field}.name must be a string, got {type(name).__name__}")
    kind = spec.get("type")
    required = spec.get("required", True)
    if not isinstance(required, bool):
        raise _bad(where, f"{field}.required must be true or false")
    if kind == "tensor":
        tensor = _mapping(spec.get("tensor-spec"), f"{field}.tensor-spec", where)
        dtype, shape = tensor.get("dtype"), tensor.get("shape")
        if not isinstance(dtype, str):
            raise _bad(where, f"{field}.tensor-spec.dtype must be a numpy dtype name")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise _bad(where, f"{field}.tensor-spec.shape must be a list of sizes (-1 = any)")
        return ColumnSpec(name, "tensor", required, dtype, tuple(shape))
    if kind not in COLUMN_TYPES:
        shown = json.dumps(kind) if not isinstance(kind, str) else repr(kind)
        raise _bad(
            where,
            f"{field}.type is {shown[:80]}, which the server does not take: a column must be "
            f"one of {', '.join(COLUMN_TYPES)} (or the whole input one tensor)",
            reason="unsupported_signature",
        )
    if name is None:
        raise _bad(where, f"{field} is a {kind} column without a name")
    return ColumnSpec(name, kind, required)


def _specs(doc: dict[str, Any], key: str, where: str) -> tuple[ColumnSpec, ...]:
    field = f"signature.{key}"
    raw = doc.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, str):
        raise _bad(
            where, f"{field} must be the JSON string MLflow writes, got {type(raw).__name__}"
        )
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad(where, f"{field} is not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise _bad(where, f"{field} must be a JSON list of column or tensor specs")
    specs = tuple(_spec(e, f"{field}[{i}]", where) for i, e in enumerate(entries))
    tensors = [s for s in specs if s.type == "tensor"]
    if tensors and len(tensors) != len(specs):
        raise _bad(where, f"{field} mixes tensors and columns", reason="unsupported_signature")
    if key == "inputs" and len(tensors) > 1:
        raise _bad(
            where,
            f"{field} holds {len(tensors)} tensors; the server takes one input matrix or named "
            "columns",
            reason="unsupported_signature",
        )
    names = [s.name for s in specs if s.name is not None]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _bad(where, f"{field} names the column {dup!r} twice")
    return specs


def _signature(value: Any, where: str) -> Signature | None:
    if value is None:
        return None
    doc = _mapping(value, "signature", where)
    inputs = _specs(doc, "inputs", where)
    outputs = _specs(doc, "outputs", where)
    if not inputs and not outputs:
        return None
    return Signature(inputs, outputs)


def _pickled_model(flavor: dict[str, Any], where: str) -> str:
    field = "flavors.sklearn.pickled_model"
    value = flavor.get("pickled_model")
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, f"{field} must name the model file (e.g. model.skops), got {value!r}")
    path = PurePosixPath(value)
    # The name comes from a file anyone may have edited: it must stay inside the directory.
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        raise _bad(
            where, f"{field} must be a file name inside the MLmodel's directory, got {value!r}"
        )
    return str(path)


def _serialization(flavor: dict[str, Any], pickled: str, where: str) -> Serialization:
    value = flavor.get("serialization_format")
    if value is None:
        # Files older than the field: skops had not been added yet, cloudpickle was the default.
        return "skops" if pickled.endswith(".skops") else "cloudpickle"
    if value not in SERIALIZATIONS:
        raise _bad(
            where,
            f"flavors.sklearn.serialization_format is {value!r}; the server loads "
            f"{', '.join(SERIALIZATIONS)}",
            reason="unsupported_flavor",
        )
    return cast(Serialization, value)


def _trusted(flavor: dict[str, Any], where: str) -> tuple[str, ...]:
    value = flavor.get("skops_trusted_types")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _bad(where, "flavors.sklearn.skops_trusted_types must be a list of type names")
    return tuple(value)


def parse_mlmodel(text: bytes | str, where: str) -> MLmodel:
    """The MLmodel file's content as the server uses it; StartupError naming the field."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise _bad(
            where,
            f"not valid YAML{at} ({getattr(exc, 'problem', None) or exc}); it should be "
            "the file mlflow.sklearn.save_model/log_model wrote",
        ) from None
    except UnicodeDecodeError:
        raise _bad(where, "not a text file; it should be the YAML file MLflow writes") from None
    doc = _mapping(doc, "the file", where)
    flavors = _mapping(doc.get("flavors"), "flavors", where)
    if "sklearn" not in flavors:
        raise _bad(
            where,
            f"flavors has no sklearn flavor (it has {', '.join(map(str, flavors)) or 'none'}); "
            "the server serves models saved with mlflow.sklearn.save_model or log_model",
            reason="unsupported_flavor",
        )
    flavor = _mapping(flavors["sklearn"], "flavors.sklearn", where)
    pickled = _pickled_model(flavor, where)
    pyfunc = flavors.get("python_function")
    python_version = (
        _optional_str(pyfunc, "python_version", "flavors.python_function.python_version", where)
        if isinstance(pyfunc, dict)
        else None
    )
    return MLmodel(
        where=where,
        pickled_model=pickled,
        serialization_format=_serialization(flavor, pickled, where),
        sklearn_version=_optional_str(
            flavor, "sklearn_version", "flavors.sklearn.sklearn_version", where
        ),
        skops_trusted_types=_trusted(flavor, where),
        python_version=python_version,
        mlflow_version=_optional_str(doc, "mlflow_version", "mlflow_version", where),
        run_id=_optional_str(doc, "run_id", "run_id", where),
        model_uuid=_optional_str(doc, "model_uuid", "model_uuid", where),
        signature=_signature(doc.get("signature"), where),
        flavors=tuple(str(f) for f in flavors),
    )


def missing_model_file(mlmodel: MLmodel, where: str) -> StartupError:
    """The failure for an MLmodel whose model file is not beside it."""
    return StartupError(
        f"{mlmodel.where}: flavors.sklearn.pickled_model names {mlmodel.pickled_model}, but there "
        f"is no such file at {where}; upload the whole directory MLflow wrote",
        reason="artifact_missing",
    )
