"""Which file under a directory, a bucket prefix or an unpacked archive is the model.

The rule (exactly one model file, else exactly one archive; hidden files and macOS litter never
count) is the same wherever the listing comes from, so it is one pure function over relative
paths. File suffixes come from ``modeldeploy_server.formats``, not from the model loader. An
MLflow directory (one holding an ``MLmodel`` file) is chosen by that file, before any suffix.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from modeldeploy_server.errors import StartupError
from modeldeploy_server.formats import (
    MLMODEL_FILE,
    MLMODEL_FORMATS,
    MODEL_SUFFIXES,
    model_format,
)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def is_model(name: str, fmt: str | None = None) -> bool:
    """A file ``fmt`` can load, or (``fmt`` None) a file some format can load."""
    suffixes = MODEL_SUFFIXES if fmt is None else model_format(fmt).suffixes
    return name.lower().endswith(suffixes)


def is_mlmodel(name: str) -> bool:
    return PurePosixPath(name).name == MLMODEL_FILE


def _ignored(path: str) -> bool:
    # macOS archive litter (._model.joblib, __MACOSX/) and hidden files are never the model.
    parts = PurePosixPath(path).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def local_files(root: Path) -> list[str]:
    """Every file below ``root``, relative to it."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def choose_candidate(files: list[str], fmt: str, where: str) -> str:
    """Exactly one model file (or, failing that, exactly one archive) under a directory.

    Under the formats that recognise MLflow directories, one ``MLmodel`` file wins over the
    model files beside it: it says which of them is the model and how to load it.
    """
    files = [f for f in files if not _ignored(f)]
    if fmt in MLMODEL_FORMATS:
        mlmodels = sorted(f for f in files if is_mlmodel(f))
        if len(mlmodels) == 1:
            return mlmodels[0]
        if len(mlmodels) > 1:
            shown = ", ".join(mlmodels[:5])
            raise StartupError(
                f"found {len(mlmodels)} MLflow models under {where} ({shown}); point "
                "storageUri at the directory of one of them",
                reason="ambiguous_artifact",
            )
    models = sorted(f for f in files if is_model(f, fmt))
    if len(models) == 1:
        return models[0]
    kinds = model_format(fmt).kinds
    if len(models) > 1:
        shown = ", ".join(PurePosixPath(m).name for m in models[:5])
        raise StartupError(
            f"found {len(models)} model files under {where} ({shown}); keep exactly one "
            f"{kinds} file there or point storageUri at the file itself",
            reason="ambiguous_artifact",
        )
    archives = sorted(f for f in files if is_archive(f))
    if len(archives) == 1:
        return archives[0]
    if len(archives) > 1:
        raise StartupError(
            f"found {len(archives)} archives and no model file under {where}; keep exactly one",
            reason="ambiguous_artifact",
        )
    if fmt == "mlflow":
        raise StartupError(
            f"no MLmodel file under {where}: format mlflow serves the directory that "
            "mlflow.sklearn.save_model or log_model wrote (the one holding MLmodel); upload it "
            "or fix spec.model.storageUri",
            reason="artifact_missing",
        )
    raise StartupError(
        f"no model file ({kinds}) under {where}; upload the model or fix spec.model.storageUri",
        reason="artifact_missing",
    )
