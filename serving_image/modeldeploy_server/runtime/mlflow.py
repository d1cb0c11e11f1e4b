"""The MLflow runtime: a scikit-learn model from a directory MLflow wrote, served as its MLmodel
describes it.

The estimator is loaded and served by the scikit-learn runtime (the same checks, outputs and
forest fast path); what this adds is what only the MLmodel knows: how the file was serialized
and which skops types its author trusted, which scikit-learn saved it (a major-version mismatch
is refused, a minor one reported), and the signature: its column names and types become the V2
metadata inputs, the names V1 objects and per-column V2 inputs are accepted by, and the typed
DataFrame a model fit on a DataFrame (a Pipeline selecting columns by name) gets to predict on.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_server.datatypes import V2_DTYPES, v2_datatype
from modeldeploy_server.errors import InvalidInputError, StartupError, brief, clip
from modeldeploy_server.mlmodel import ColumnSpec, MLmodel
from modeldeploy_server.runtime.base import Array, OutputSpec, TensorSpec
from modeldeploy_server.runtime.sklearn import (
    PREDICT_OUTPUT,
    PROBA_OUTPUT,
    SklearnRuntime,
    serve_model,
)
from modeldeploy_server.runtime.sklearn_model import load_model

log = logging.getLogger(__name__)

# MLflow column type -> the OIP datatype its V2 input carries. Dates travel as ISO strings.
V2_BY_COLUMN = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
# The dtype of each numeric column in the DataFrame, as MLflow's own schema enforcement makes it:
# the numpy dtype of the column's V2 datatype (strings, bytes and dates stay objects).
_NUMPY_BY_COLUMN: dict[str, np.dtype[Any]] = {
    column: V2_DTYPES[v2] for column, v2 in V2_BY_COLUMN.items() if v2 != "BYTES"
}
_WHOLE = frozenset({"integer", "long"})
# Requested output names the scikit-learn runtime knows, besides the signature's own name.
_INNER_NAMES = {
    PREDICT_OUTPUT: PREDICT_OUTPUT,
    "predict": PREDICT_OUTPUT,
    PROBA_OUTPUT: PROBA_OUTPUT,
    "predict_proba": PROBA_OUTPUT,
}


def _major(version: str) -> int | None:
    head = version.strip().split(".", 1)[0]
    return int(head) if head.isdigit() else None


def sklearn_version_warning(mlmodel: MLmodel, model_file: str, running: str) -> str | None:
    """None when the MLmodel's scikit-learn is the server's; a sentence for another minor
    version; StartupError for another major version, whose pickled internals differ."""
    trained = mlmodel.sklearn_version
    if trained is None or trained == running:
        return None
    t, r = _major(trained), _major(running)
    if t is not None and r is not None and t != r:
        raise StartupError(
            f"refusing to load {model_file}: {mlmodel.where} says it was saved with "
            f"scikit-learn {trained} (flavors.sklearn.sklearn_version) but the server runs "
            f"scikit-learn {running}; a model from another major version is not served: "
            f"re-save it with scikit-learn {r}.x or serve it from an image with scikit-learn "
            f"{trained}",
            reason="sklearn_version",
        )
    return f"{model_file} was saved with scikit-learn {trained} but the server runs {running}"


def _tensor_input(spec: ColumnSpec, where: str) -> TensorSpec:
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:
        raise StartupError(
            f"{where}: signature.inputs[0].tensor-spec.dtype {spec.dtype!r} is not a numpy dtype",
            reason="bad_mlmodel",
        ) from None
    return TensorSpec(spec.name or "input-0", v2_datatype(np.empty(0, dtype)), spec.shape or (-1,))


def frame_builder(
    names: tuple[str, ...], types: tuple[str, ...] | None, fit_order: tuple[str, ...]
) -> Callable[[Array], Any]:
    """The batch matrix (columns in ``names`` order) -> a DataFrame typed by the signature,
    its columns in the order the model was fit with."""
    import pandas as pd

    reorder = list(fit_order) if fit_order != names else None

    def frame(x: Array) -> Any:
        if types is None:
            df = pd.DataFrame(x, columns=list(names)).infer_objects()
        else:
            data: dict[str, Any] = {}
            for j, (name, kind) in enumerate(zip(names, types, strict=True)):
                col = x[:, j]
                if kind in _NUMPY_BY_COLUMN:
                    data[name] = col.astype(_NUMPY_BY_COLUMN[kind])
                elif kind == "datetime":
                    data[name] = pd.to_datetime(col)  # ValueError (a 400) if one doesn't parse
                else:
                    data[name] = col.astype(object)
            df = pd.DataFrame(data, columns=list(names))
        return df[reorder] if reorder is not None else df

    return frame


class MlflowRuntime:
    """A scikit-learn model from an MLflow directory, named and typed by its signature."""

    def __init__(self, mlmodel: MLmodel, inner: SklearnRuntime, warnings: tuple[str, ...]) -> None:
        self.mlmodel = mlmodel
        self.inner = inner
        signature = mlmodel.signature
        self._columns = signature.columns if signature is not None else None
        cols = self._columns
        self.named_columns = cols is not None
        if cols is not None:
            self.feature_names: tuple[str, ...] | None = tuple(str(c.name) for c in cols)
            self.inputs = tuple(TensorSpec(str(c.name), V2_BY_COLUMN[c.type], (-1,)) for c in cols)
        else:
            self.feature_names = inner.feature_names
            tensors = signature.inputs if signature is not None else ()
            self.inputs = (_tensor_input(tensors[0], mlmodel.where),) if tensors else inner.inputs
        self._all_numeric = cols is not None and all(c.type in _NUMPY_BY_COLUMN for c in cols)
        self._strict = [
            j for j, c in enumerate(cols or ()) if c.type in _WHOLE or c.type == "boolean"
        ]
        # The signature's name for the predictions, when it gives exactly one.
        outs = signature.outputs if signature is not None else ()
        named = outs[0].name if len(outs) == 1 else None
        self._default = named if named and named not in _INNER_NAMES else PREDICT_OUTPUT
        first, *rest = inner.outputs
        self.outputs: tuple[OutputSpec, ...] = (replace(first, name=self._default), *rest)
        facts = inner.info
        self.info = replace(
            facts,
            platform="mlflow",
            format="mlflow",
            trained_version=mlmodel.sklearn_version or facts.trained_version,
            version_warnings=tuple(dict.fromkeys((*warnings, *facts.version_warnings))),
        )

    def parameters(self) -> dict[str, Any]:
        m = self.mlmodel
        params = self.inner.parameters()
        params.update(
            {
                "format": "mlflow",
                "serialization_format": m.serialization_format,
                "mlmodel": m.where,
                "flavors": list(m.flavors),
                "trained_sklearn_version": self.info.trained_version,
                "sklearn_version_warnings": list(self.info.version_warnings),
                "python_version": platform.python_version(),
            }
        )
        optional = {
            "trained_python_version": m.python_version,
            "mlflow_version": m.mlflow_version,
            "run_id": m.run_id,
            "model_uuid": m.model_uuid,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        if m.serialization_format == "skops":
            params["skops_trusted_types"] = list(m.skops_trusted_types)
        if self.feature_names is not None:
            params["feature_names"] = list(self.feature_names)
        if m.signature is not None:
            params["signature_inputs"] = [_describe(c) for c in m.signature.inputs]
            params["signature_outputs"] = [_describe(c) for c in m.signature.outputs]
        return params

    def resolve_output(self, name: str, where: str) -> str:
        target = PREDICT_OUTPUT if name == self._default else _INNER_NAMES.get(name)
        if target is None:
            offered = " and ".join(f'"{o.name}"' for o in self.outputs)
            raise InvalidInputError(
                f"{where} {brief(name)} is unknown; this model offers {offered} (also named "
                '"predict" and "predict_proba")'
            )
        self.inner.resolve_output(target, where)  # a 400 when there is no predict_proba
        return self._default if target == PREDICT_OUTPUT else PROBA_OUTPUT

    def predict(self, x: Array, outputs: tuple[str, ...]) -> list[Array]:
        inner = tuple(PREDICT_OUTPUT if o == self._default else o for o in outputs)
        return self.inner.predict(x, inner)

    def warm_up(self) -> None:
        self.inner.warm_up()

    # ---- input checks against the signature's columns -------------------------------------

    def check_input(self, x: Array, what: str) -> Array:
        cols = self._columns
        if cols is None:
            return self.inner.check_input(x, what)
        n = len(cols)
        if x.ndim == 1 and n == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != n:
            raise InvalidInputError(
                f"{what} has shape {list(x.shape)} but the model takes {n} columns "
                f"{clip(str(list(self.feature_names or ())))}: rows of {n} values in that "
                "order, objects keyed by those names, or one V2 input per column"
            )
        if x.shape[0] == 0:
            raise InvalidInputError(f"{what} holds no rows")
        if self._all_numeric:
            if x.dtype.kind not in "biuf":
                for j, c in enumerate(cols):
                    self._no_text(x[:, j], c, what)
            try:
                x = x.astype(np.float64, copy=False)
            except (TypeError, ValueError):
                raise InvalidInputError(f"{what} holds values that are not numbers") from None
            self._check_numeric(x, what)
            return self.inner.check_input(x, what)  # NaN policy and infinities
        out = np.empty(x.shape, dtype=object)
        for j, c in enumerate(cols):
            out[:, j] = self._column(x[:, j], j, c, what)
        return out

    def _no_text(self, col: Array, c: ColumnSpec, what: str) -> None:
        if col.dtype.kind in "OUS":
            for i, v in enumerate(col):
                if isinstance(v, (str, bytes)):
                    raise InvalidInputError(
                        f"{what}: column {c.name!r} ({c.type}) holds the string {brief(v)} at "
                        f"row {i}; it takes numbers"
                    )

    def _check_numeric(self, x: Array, what: str) -> None:
        # Floats are left to the scikit-learn runtime's NaN policy; these columns are stricter.
        cols = self._columns
        assert cols is not None
        for j in self._strict:
            self._check_column_numbers(x[:, j], cols[j], what)

    def _column(self, col: Array, j: int, c: ColumnSpec, what: str) -> Array:
        """One column of a mixed matrix, checked and made the kind the DataFrame wants."""
        if c.type in _NUMPY_BY_COLUMN:
            self._no_text(col, c, what)
            try:
                values = np.asarray(col, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"{what}: column {c.name!r} ({c.type}) holds a value that is not a number"
                ) from None
            self._check_column_numbers(values, c, what)
            return values.astype(object)
        values = np.empty(len(col), dtype=object)
        for i, v in enumerate(col):
            if isinstance(v, bytes) and c.type != "binary":
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInputError(
                        f"{what}: column {c.name!r} ({c.type}) holds bytes at row {i} that are "
                        "not UTF-8"
                    ) from None
            if v is None and not c.required:
                values[i] = None
                continue
            if not isinstance(v, (str, bytes)):
                shown = "a missing value (null)" if v is None else brief(v)
                raise InvalidInputError(
                    f"{what}: column {c.name!r} ({c.type}) holds {shown} at row {i}; it takes "
                    "strings"
                )
            values[i] = v
        return values

    def _check_column_numbers(self, values: Array, c: ColumnSpec, what: str) -> None:
        if c.type in _WHOLE:
            bad = ~np.isfinite(values) | (values != np.round(values))
            expected = "whole numbers, never missing"
        elif c.type == "boolean":
            bad = (values != 0) & (values != 1)
            expected = "true/false (or 0/1)"
        else:
            bad = np.isinf(values)
            if not self.inner.model.allow_nan:
                bad |= np.isnan(values)
            expected = "finite numbers" + (
                "" if self.inner.model.allow_nan else " (this model accepts no missing values)"
            )
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidInputError(
                f"{what}: column {c.name!r} ({c.type}) holds {brief(float(values[i]))} at row "
                f"{i}; it takes {expected}"
            )


def _describe(c: ColumnSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": c.type}
    if c.name is not None:
        out["name"] = c.name
    if c.type == "tensor":
        out["dtype"] = c.dtype
        out["shape"] = list(c.shape or ())
    else:
        out["required"] = c.required
    return out


def _check_signature(mlmodel: MLmodel, names: tuple[str, ...], model: Any, file: str) -> None:
    """The signature's columns must be the ones the model was fit on, or every request the
    signature allows would fail in the model."""
    fit = model.feature_names
    if fit is not None and set(fit) != set(names):
        missing = [n for n in fit if n not in set(names)]
        extra = [n for n in names if n not in set(fit)]
        raise StartupError(
            f"{mlmodel.where}: signature.inputs names the columns {clip(str(list(names)))}, but "
            f"{file} was fit on {clip(str(list(fit)))} (signature lacks {brief(missing)}, has "
            f"extra {brief(extra)}); log the model with a signature inferred from its training "
            "data",
            reason="bad_mlmodel",
        )
    if model.n_features is not None and model.n_features != len(names):
        raise StartupError(
            f"{mlmodel.where}: signature.inputs lists {len(names)} columns but {file} was fit "
            f"on {model.n_features} features; log the model with a signature inferred from its "
            "training data",
            reason="bad_mlmodel",
        )


def load_mlflow_runtime(
    mlmodel: MLmodel,
    model_file: Path,
    *,
    extra_trusted: tuple[str, ...] = (),
    fast_forest: bool = True,
) -> MlflowRuntime:
    """Load the model file an MLmodel names; StartupError naming the file and field if not."""
    import sklearn

    started = time.perf_counter()
    warning = sklearn_version_warning(mlmodel, model_file.name, sklearn.__version__)
    if warning is not None:
        log.warning(
            "%s; predictions may differ, re-save the model with scikit-learn %s",
            warning,
            sklearn.__version__,
        )
    # The skops types the model's author trusted when saving it, and nothing beyond them but
    # our own allow-list and what SKOPS_TRUSTED_TYPES adds on purpose.
    trusted = (*mlmodel.skops_trusted_types, *extra_trusted)
    model = load_model(
        model_file, "sklearn", extra_trusted=trusted, serialization=mlmodel.serialization_format
    )
    signature = mlmodel.signature
    cols = signature.columns if signature is not None else None
    prepare = None
    if cols is not None:
        names = tuple(str(c.name) for c in cols)
        _check_signature(mlmodel, names, model, model_file.name)
        if model.feature_names is not None:
            prepare = frame_builder(names, tuple(c.type for c in cols), model.feature_names)
    elif model.feature_names is not None:
        prepare = frame_builder(model.feature_names, None, model.feature_names)
    inner = serve_model(model, started=started, fast_forest=fast_forest, prepare=prepare)
    runtime = MlflowRuntime(mlmodel, inner, (warning,) if warning else ())
    runtime.info = replace(runtime.info, load_seconds=time.perf_counter() - started)
    return runtime
