"""The scikit-learn runtime: a loaded estimator served through the ``Runtime`` interface.

Everything that depends on the model being a scikit-learn estimator lives here, decided once when
the model loads: which callable answers each output (the forest fast path when it verifies, else
the estimator's own method), the input checks its fitted attributes allow (feature count, NaN
policy), which requested output names mean ``predict`` or ``predict_proba``, which exceptions
mean "bad input", and what the V2 metadata says. The DataPlane above sees none of it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modeldeploy_server.datatypes import v2_datatype
from modeldeploy_server.errors import InferenceError, InvalidInputError, brief, clip
from modeldeploy_server.runtime.base import Array, OutputSpec, RuntimeInfo, TensorSpec
from modeldeploy_server.runtime.forest import ForestPredictor, compile_forest, verify
from modeldeploy_server.runtime.sklearn_model import LoadedModel, load_model

log = logging.getLogger(__name__)

Method = Callable[[Array], Any]

PREDICT_OUTPUT = "output-0"
PROBA_OUTPUT = "probabilities"
# Requested output names -> the output computing them. The method names are aliases so a caller
# can say what they mean.
_ALIASES = {
    PREDICT_OUTPUT: PREDICT_OUTPUT,
    "predict": PREDICT_OUTPUT,
    PROBA_OUTPUT: PROBA_OUTPUT,
    "predict_proba": PROBA_OUTPUT,
}
_METHODS = {PREDICT_OUTPUT: "predict", PROBA_OUTPUT: "predict_proba"}

# What an estimator raises for input it can't take (wrong dtype, unknown category, NaN...). They
# become 400s with the model's own message instead of 500s.
_INPUT_ERRORS = (ValueError, TypeError, IndexError, KeyError)


def _without_feature_name_warning(call: Method) -> Method:
    """``call`` without scikit-learn's "X does not have valid feature names" warning.

    The DataPlane orders columns by ``feature_names_in_`` itself and hands over numpy (pandas is
    not in the image), so a model fitted on a DataFrame would warn on every predict. The filter is
    scoped to the call instead of set for the whole process: ``catch_warnings`` saves and restores
    the filters, which is safe here because the batcher never runs two predicts at once.
    """

    def quiet(x: Array) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return call(x)

    return quiet


class SklearnRuntime:
    """A fitted estimator (joblib/pickle or skops) and the callables that serve it.

    ``prepare`` turns the batch matrix into what the estimator itself was fit on (the MLflow
    runtime's DataFrame with named columns); the forest fast path always takes the matrix.
    """

    # Several V2 inputs may also be taken in request order when their names are not the
    # model's feature names (docs/server.md); a runtime with a signature says otherwise.
    named_columns = False

    def __init__(
        self,
        model: LoadedModel,
        forest: ForestPredictor | None = None,
        *,
        prepare: Callable[[Array], Any] | None = None,
    ) -> None:
        self.model = model
        self.forest = forest
        self.feature_names = model.feature_names
        est = model.estimator

        def through(method: Method) -> Method:
            if prepare is None:
                return method
            return lambda x: method(prepare(x))

        calls: dict[str, Method] = {PREDICT_OUTPUT: through(est.predict)}
        if model.has_proba:
            calls[PROBA_OUTPUT] = through(est.predict_proba)
        if forest is not None:
            for name, own in list(calls.items()):
                calls[name] = forest.method(_METHODS[name]) or own
        if model.feature_names is not None:
            calls = {name: _without_feature_name_warning(c) for name, c in calls.items()}
        self._calls = calls

        classes = model.classes
        n_features = model.n_features if model.n_features is not None else -1
        self.inputs = (TensorSpec("input-0", "FP64", (-1, n_features)),)
        outputs = [
            OutputSpec(
                PREDICT_OUTPUT, v2_datatype(classes) if classes is not None else "FP64", (-1,)
            )
        ]
        if model.has_proba:
            n_classes = len(classes) if classes is not None else -1
            outputs.append(OutputSpec(PROBA_OUTPUT, "FP64", (-1, n_classes), probabilities=True))
        self.outputs = tuple(outputs)
        self.info = RuntimeInfo(
            platform="sklearn",
            format=model.format,
            model_class=model.estimator_class,
            framework_version=model.sklearn_version,
            trained_version=model.trained_sklearn_version,
            version_warnings=tuple(model.version_warnings),
            load_seconds=model.load_seconds,
            predict_path=self.predict_path,
            classifier=model.is_classifier,
        )

    @property
    def predict_path(self) -> str:
        """How predictions are computed, for logs and the V2 model metadata."""
        if self.forest is None:
            return "estimator"
        return f"forest fast path: {self.forest.description}"

    def parameters(self) -> dict[str, Any]:
        m = self.model
        params: dict[str, Any] = {
            "estimator": m.estimator_class,
            "format": m.format,
            "sklearn_version": m.sklearn_version,
            "trained_sklearn_version": m.trained_sklearn_version,
            "sklearn_version_warnings": m.version_warnings,
            "accepts_nan": m.allow_nan,
            "predict_path": self.predict_path,
        }
        if m.feature_names is not None:
            params["feature_names"] = list(m.feature_names)
        if m.classes is not None:
            params["classes"] = m.classes.tolist()
        return params

    def resolve_output(self, name: str, where: str) -> str:
        output = _ALIASES.get(name)
        if output is None:
            offered = " and ".join(f'"{o}" ({_METHODS[o]})' for o in self._calls)
            raise InvalidInputError(
                f"{where} {brief(name)} is unknown; this model offers {offered}"
            )
        if output not in self._calls:
            raise InvalidInputError(
                f"output {output!r} needs {_METHODS[output]}, which "
                f"{self.model.estimator_class.rsplit('.', 1)[-1]} does not offer"
            )
        return output

    def check_input(self, x: Array, what: str) -> Array:
        """Shape and value checks that name the expected shape; cheap whole-array operations."""
        nf = self.model.n_features
        if x.ndim == 1:
            if nf == 1:
                x = x.reshape(-1, 1)
            else:
                expect = f"[N, {nf}]" if nf is not None else "[N, features]"
                raise InvalidInputError(
                    f"{what} has shape {list(x.shape)} but the model expects shape {expect}: "
                    "a list of rows, each a list of feature values"
                )
        if x.ndim != 2:
            expect = f"[N, {nf}]" if nf is not None else "[N, features]"
            raise InvalidInputError(
                f"{what} has shape {list(x.shape)} but the model expects shape {expect}"
            )
        if x.shape[0] == 0:
            raise InvalidInputError(f"{what} holds no rows")
        if nf is not None and x.shape[1] != nf:
            raise InvalidInputError(
                f"{what} has shape {list(x.shape)} but the model expects shape [N, {nf}] "
                f"({nf} features per row, got {x.shape[1]})"
            )
        if x.dtype.kind == "f":
            finite = np.isfinite(x)
            if not finite.all():
                bad = np.argwhere(~finite)[0].tolist()
                if np.isinf(x).any():
                    raise InvalidInputError(f"{what} holds an infinite value at {bad}")
                if not self.model.allow_nan:
                    raise InvalidInputError(
                        f"{what} holds a missing value (null/NaN) at {bad}, and this model "
                        "does not accept missing values"
                    )
        return x

    def predict(self, x: Array, outputs: tuple[str, ...]) -> list[Array]:
        results = []
        for name in outputs:
            try:
                result = np.asarray(self._calls[name](x))
            except _INPUT_ERRORS as exc:
                # The model's own words, cut short: they may quote the whole input.
                raise InvalidInputError(f"the model rejected the input: {clip(str(exc))}") from None
            if result.shape[:1] != x.shape[:1]:
                raise InferenceError(
                    f"{_METHODS[name]} returned {result.shape[0] if result.ndim else 0} rows for "
                    f"{x.shape[0]} inputs"
                )
            results.append(result)
        return results

    def warm_up(self) -> None:
        if self.model.n_features is None:
            return
        try:
            self._calls[PREDICT_OUTPUT](np.zeros((1, self.model.n_features)))
        except Exception as exc:  # a model that needs strings can't take zeros; that's fine
            log.debug("warm-up predict skipped: %s", exc)


def _checked_forest(est: Any, path: Path) -> ForestPredictor | None:
    """The forest fast path for ``est`` if it has one and it matches the estimator exactly."""
    predictor = compile_forest(est)
    if predictor is None:
        return None
    try:
        mismatch = verify(est, predictor)
    except Exception as exc:  # the estimator's own predict failed on probe rows
        mismatch = f"probing failed ({type(exc).__name__}: {exc})"
    if mismatch is not None:
        log.warning(
            "%s: not using the forest fast path, it differs from scikit-learn's own predict "
            "(%s); serving through the estimator",
            path.name,
            mismatch,
        )
        return None
    log.info(
        "%s: %s, checked against the estimator's own predict", path.name, predictor.description
    )
    return predictor


def load_sklearn_runtime(
    path: Path,
    fmt: Literal["sklearn", "skops"],
    *,
    extra_trusted: tuple[str, ...] = (),
    fast_forest: bool = True,
) -> SklearnRuntime:
    """Load ``path`` and choose, once, how it is served; StartupError if it can't be."""
    started = time.perf_counter()
    model = load_model(path, fmt, extra_trusted=extra_trusted)
    return serve_model(model, started=started, fast_forest=fast_forest)


def serve_model(
    model: LoadedModel,
    *,
    started: float,
    fast_forest: bool = True,
    prepare: Callable[[Array], Any] | None = None,
) -> SklearnRuntime:
    """The runtime for a loaded model, with the forest fast path when it verifies."""
    forest = _checked_forest(model.estimator, model.path) if fast_forest else None
    # The load time people see includes checking the fast path: both happen before ready.
    return SklearnRuntime(
        replace(model, load_seconds=time.perf_counter() - started), forest, prepare=prepare
    )
