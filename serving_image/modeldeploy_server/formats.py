"""What each model format looks like in storage: the file names that can hold it.

An MLflow model is a directory whose ``MLmodel`` file names the model file (``mlmodel.py`` reads
it); the directory is recognised by that file, under ``format: mlflow`` and ``format: sklearn``.

Both the storage module (which file under a prefix is the model, what to call a download whose
URL has no telling name) and the runtime that loads it need these facts. Keeping them in a leaf
module lets storage choose files without importing the model loader (an import-linter contract).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelFormat:
    """One value of ``spec.model.format`` as storage sees it."""

    name: str
    suffixes: tuple[str, ...]  # a file ending in one of these may be the model
    default_file: str  # the name for a download whose URL ends in none of them
    kinds: str  # the suffixes as a person reads them, for error messages


SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")

MLMODEL_FILE = "MLmodel"
FORMATS: dict[str, ModelFormat] = {
    # joblib/pickle; a .skops file found under a sklearn prefix is loaded with skops.
    "sklearn": ModelFormat(
        "sklearn",
        (*PICKLE_SUFFIXES, *SKOPS_SUFFIXES),
        "model.joblib",
        "*.joblib, *.pkl, *.pickle or *.skops",
    ),
    "skops": ModelFormat("skops", SKOPS_SUFFIXES, "model.skops", "*.skops"),
    # No suffix of its own: the directory is found by its MLmodel file, which names the model.
    "mlflow": ModelFormat("mlflow", (), MLMODEL_FILE, MLMODEL_FILE),
}
# The formats under which a directory holding an MLmodel file is served as an MLflow model:
# sklearn because it is the default and what users point at an MLflow artifact directory today.
MLMODEL_FORMATS = frozenset({"sklearn", "mlflow"})
# Every suffix some format reads: a download with one of these keeps its own name.
MODEL_SUFFIXES: tuple[str, ...] = tuple(
    dict.fromkeys(suffix for f in FORMATS.values() for suffix in f.suffixes)
)


def model_format(name: str) -> ModelFormat:
    """The format named ``name``; config.Settings only lets known names through."""
    return FORMATS[name]
