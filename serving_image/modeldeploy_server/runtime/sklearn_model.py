"""Load a scikit-learn model from a local file, once, and describe what it accepts.

Loading is kept apart from downloading (the storage package) so this module never touches the
network and can be tested on files alone; how the loaded estimator is served (validation, outputs,
the forest fast path) is the runtime's business (runtime/sklearn.py), not the loader's.

``sklearn`` means joblib/pickle, which executes arbitrary code from the file: only use it for
artifacts you trust. ``skops`` is the safe format; it refuses any type that is neither trusted by
skops itself nor in our explicit allow-list, and says which. MLflow directories add
``cloudpickle`` and plain ``pickle`` (their MLmodel says which was used), as trusted as joblib.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modeldeploy_server.errors import StartupError
from modeldeploy_server.formats import SKOPS_SUFFIXES

log = logging.getLogger(__name__)

# How a file is deserialized: "joblib" reads joblib dumps and plain pickles (format sklearn);
# cloudpickle and pickle are what MLflow's MLmodel may name besides skops.
Serialization = Literal["skops", "joblib", "cloudpickle", "pickle"]
# Each one as messages name it, and the call that writes such a file.
_SERIALIZATIONS: dict[str, tuple[str, str]] = {
    "skops": ("skops", "skops.io.dump"),
    "joblib": ("joblib/pickle", "joblib.dump"),
    "cloudpickle": ("cloudpickle", "cloudpickle.dump (mlflow.sklearn.save_model)"),
    "pickle": ("pickle", "pickle.dump (mlflow.sklearn.save_model)"),
}

# Types skops does not trust on its own but which are plain scikit-learn/numpy internals holding
# fitted state (found by dumping the common estimators). Anything else must be named by the user
# in SKOPS_TRUSTED_TYPES, which is a deliberate decision to trust that code.
SKOPS_ALLOWED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.utils._bunch.Bunch",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.LogLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
    }
)


@dataclass(slots=True)
class LoadedModel:
    """The estimator plus the facts the runtime needs to validate input and describe it."""

    estimator: Any
    path: Path
    format: str  # how it was deserialized: sklearn (joblib), skops, cloudpickle or pickle
    estimator_class: str
    n_features: int | None
    feature_names: tuple[str, ...] | None
    classes: np.ndarray[Any, Any] | None
    has_proba: bool
    allow_nan: bool
    sklearn_version: str
    trained_sklearn_version: str | None
    version_warnings: list[str] = field(default_factory=list)
    load_seconds: float = 0.0

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def version_mismatch(self) -> bool:
        return bool(self.version_warnings)


def _describe(est: Any) -> tuple[int | None, tuple[str, ...] | None, Any, bool, bool]:
    n = getattr(est, "n_features_in_", None)
    names = getattr(est, "feature_names_in_", None)
    classes = getattr(est, "classes_", None)
    if classes is not None and not isinstance(classes, np.ndarray):
        classes = np.asarray(classes)
    if classes is not None and classes.ndim != 1:
        classes = None  # multi-output classifiers: report predictions, not per-class counts
    try:
        allow_nan = bool(est.__sklearn_tags__().input_tags.allow_nan)
    except Exception:
        allow_nan = False
    return (
        int(n) if n is not None else None,
        tuple(str(x) for x in names) if names is not None else None,
        classes,
        hasattr(est, "predict_proba"),
        allow_nan,
    )


def _untrusted_message(path: Path, untrusted: list[str]) -> str:
    return (
        f"refusing to load {path.name}: the skops file contains types outside the allow-list "
        f"({', '.join(untrusted)}); if you trust where this model came from, add them to "
        "SKOPS_TRUSTED_TYPES (comma-separated) in spec.server.env"
    )


def _load_skops(path: Path, extra_trusted: tuple[str, ...]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise StartupError(
            f"could not read {path.name} as a skops file ({type(exc).__name__}: {exc}); "
            "save it with skops.io.dump(model, path)",
            reason="unreadable_model",
        ) from exc
    allowed = SKOPS_ALLOWED_TYPES.union(extra_trusted)
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise StartupError(_untrusted_message(path, refused), reason="untrusted_types")
    return sio.load(path, trusted=list(untrusted))


def _load_pickle(path: Path, serialization: Serialization) -> Any:
    if serialization == "cloudpickle":
        import cloudpickle

        with path.open("rb") as f:
            return cloudpickle.load(f)
    if serialization == "pickle":
        with path.open("rb") as f:
            return pickle.load(f)  # trusted artifacts only, as joblib.load below
    import joblib

    # joblib.load reads joblib dumps and plain pickles alike (as KServe's sklearnserver does).
    return joblib.load(path)


def load_model(
    path: Path,
    fmt: Literal["sklearn", "skops"],
    *,
    extra_trusted: tuple[str, ...] = (),
    serialization: Serialization | None = None,
) -> LoadedModel:
    """Load ``path`` or raise StartupError with a sentence a person can act on.

    ``serialization`` (an MLmodel's word) overrides what ``fmt`` and the file's suffix imply.
    """
    import time

    import sklearn

    started = time.perf_counter()
    if serialization is None:
        skops_file = fmt == "skops" or path.suffix in SKOPS_SUFFIXES
        serialization = "skops" if skops_file else "joblib"
    use_skops = serialization == "skops"
    kind, writer = _SERIALIZATIONS[serialization]
    if fmt == "skops" and path.suffix not in SKOPS_SUFFIXES:
        raise StartupError(
            f"format is skops but the artifact is {path.name}; upload a .skops file "
            "(skops.io.dump) or set spec.model.format: sklearn",
            reason="wrong_format",
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est = (
                _load_skops(path, extra_trusted) if use_skops else _load_pickle(path, serialization)
            )
        except StartupError:
            raise
        except ModuleNotFoundError as exc:
            raise StartupError(
                f"{path.name} needs the Python module {exc.name!r}, which is not installed in the "
                "server image; serve only scikit-learn objects or build an image with it",
                reason="unreadable_model",
            ) from exc
        except Exception as exc:
            # Corrupt pickles fail in many ways: UnpicklingError, EOFError, ValueError, even
            # MemoryError when a garbage frame header claims exabytes.
            raise StartupError(
                f"could not load {path.name} as a {kind} model ({type(exc).__name__}: {exc}); "
                f"the file is corrupt or not a model saved with {writer}",
                reason="unreadable_model",
            ) from exc
    # One InconsistentVersionWarning arrives per pickled estimator (a forest has one per tree),
    # so fold them into one line per estimator class.
    mismatched: dict[str, str] = {}
    for w in caught:
        category = w.category.__name__
        if category == "InconsistentVersionWarning":
            original = str(getattr(w.message, "original_sklearn_version", "unknown"))
            estimator_name = str(getattr(w.message, "estimator_name", "estimator"))
            mismatched.setdefault(estimator_name, original)
        elif not issubclass(w.category, DeprecationWarning):
            log.warning("while loading %s: %s: %s", path.name, category, w.message)
    version_warnings = [
        f"{name} was saved with scikit-learn {orig} but the server runs {sklearn.__version__}"
        for name, orig in mismatched.items()
    ]
    trained: str | None = next(iter(mismatched.values()), None)
    for line in version_warnings:
        log.warning(
            "InconsistentVersionWarning: %s; predictions may differ, re-save the model with "
            "scikit-learn %s",
            line,
            sklearn.__version__,
        )
    if not callable(getattr(est, "predict", None)):
        raise StartupError(
            f"{path.name} holds a {type(est).__module__}.{type(est).__name__}, not a fitted "
            "estimator with predict(); save the fitted model object itself",
            reason="not_an_estimator",
        )
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(est)
    except NotFittedError as exc:  # before the generic case: it subclasses AttributeError
        raise StartupError(
            f"{path.name} holds an unfitted {type(est).__name__}; call fit() before saving it",
            reason="not_fitted",
        ) from exc
    except (TypeError, AttributeError, ValueError):
        pass  # not a scikit-learn estimator in the strict sense; trust that predict works
    n, names, classes, has_proba, allow_nan = _describe(est)
    if trained is None:
        trained = sklearn.__version__  # no warning: unpickling found the same version
    return LoadedModel(
        estimator=est,
        path=path,
        format="sklearn" if serialization == "joblib" else serialization,
        estimator_class=f"{type(est).__module__}.{type(est).__qualname__}",
        n_features=n,
        feature_names=names,
        classes=classes,
        has_proba=has_proba,
        allow_nan=allow_nan,
        sklearn_version=sklearn.__version__,
        trained_sklearn_version=trained,
        version_warnings=version_warnings,
        load_seconds=time.perf_counter() - started,
    )
