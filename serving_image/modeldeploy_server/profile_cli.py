"""``modeldeploy-profile``: build a model's reference profile from its training data.

The profile must hold the predictions the served model makes on the training data, so the CLI
loads the model with the server's own loader (the same runtime, forest fast path included) rather
than asking people to compute them. CSV is read with the csv module (numbers where a whole column
parses as numbers); Parquet needs pandas with pyarrow, which the server image does not ship.

    modeldeploy-profile --data train.csv --model model.joblib --target species -o profile.json
"""

from __future__ import annotations

import argparse
import csv
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modeldeploy_server.errors import ServerError, StartupError
from modeldeploy_server.profile import Array, Profile, build_profile, dump, frame_column
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime


class DataError(ValueError):
    """Training data the CLI can't read; the message says what to change."""


def _column(values: list[str]) -> Array:
    # A column whose non-empty cells all parse as numbers is numeric (empty = missing);
    # anything else stays text, empty cells missing.
    try:
        return np.array([float(v) if v.strip() else np.nan for v in values], dtype=np.float64)
    except ValueError:
        return np.array([v if v.strip() else None for v in values], dtype=object)


def read_csv(path: Path) -> tuple[list[str], list[Array]]:
    """Header names and one array per column."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{path} line {i} has {len(r)} fields, the header has {len(header)}")
    return header, [_column([r[j] for r in body]) for j in range(len(header))]


def read_parquet(path: Path) -> tuple[list[str], list[Array]]:
    try:
        pd: Any = importlib.import_module("pandas")  # with pyarrow, for read_parquet
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(
            f"reading Parquet needs pandas and pyarrow ({exc}); pip install pandas pyarrow, "
            "or give the data as CSV"
        ) from None
    return [str(c) for c in frame.columns], [
        frame_column(frame.iloc[:, j]) for j in range(frame.shape[1])
    ]


def _matrix(cols: list[Array]) -> Array:
    if all(c.dtype.kind == "f" for c in cols):
        return np.column_stack(cols)
    return np.column_stack([c.astype(object) for c in cols])


def make_profile(
    data: Path,
    model: Path,
    *,
    data_format: Literal["auto", "csv", "parquet"] = "auto",
    target: str | None = None,
    model_format: Literal["sklearn", "skops"] = "sklearn",
    bins: int = 10,
) -> Profile:
    """The profile of ``model`` on the training data in ``data`` (what the CLI writes)."""
    fmt = data_format
    if fmt == "auto":
        fmt = "parquet" if data.suffix.lower() in (".parquet", ".pq") else "csv"
    names, cols = read_parquet(data) if fmt == "parquet" else read_csv(data)
    if target is not None:
        if target not in names:
            raise DataError(f"--target {target!r} is not a column of {data} ({', '.join(names)})")
        j = names.index(target)
        del names[j], cols[j]
    runtime = load_sklearn_runtime(model, model_format)
    if runtime.feature_names is not None:  # the model's column order, by name
        missing = [n for n in runtime.feature_names if n not in names]
        if missing:
            raise DataError(f"{data} lacks the model's feature columns {', '.join(missing)}")
        order = [names.index(n) for n in runtime.feature_names]
        names, cols = [names[j] for j in order], [cols[j] for j in order]
    x = runtime.check_input(_matrix(cols), str(data))
    predictions: Any = runtime.predict(x, (runtime.outputs[0].name,))[0]
    return build_profile(
        x,
        predictions,
        feature_names=names,
        bins=bins,
        prediction_kind="categorical" if runtime.info.classifier else "numeric",
        model=model.name,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="modeldeploy-profile",
        description="Build the reference profile (profile.json) that modeldeploy-server measures "
        "drift against: per-feature bins and shares of the training data, and the distribution "
        "of the model's predictions on it. Store it next to the model.",
    )
    p.add_argument("--data", required=True, type=Path, help="training data (CSV with header)")
    p.add_argument("--data-format", choices=["auto", "csv", "parquet"], default="auto")
    p.add_argument("--model", required=True, type=Path, help="the model file the server serves")
    p.add_argument("--model-format", choices=["sklearn", "skops"], default="sklearn")
    p.add_argument("--target", help="a column of the data that is not a feature (the label)")
    p.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature")
    p.add_argument("-o", "--output", type=Path, default=Path("profile.json"))
    args = p.parse_args(argv)
    try:
        profile = make_profile(
            args.data,
            args.model,
            data_format=args.data_format,
            target=args.target,
            model_format=args.model_format,
            bins=args.bins,
        )
    except (DataError, OSError) as exc:
        print(f"modeldeploy-profile: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"modeldeploy-profile: {exc.message}", file=sys.stderr)
        return 2
    except ServerError as exc:  # the model refused the data
        print(f"modeldeploy-profile: {exc.message}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"modeldeploy-profile: {exc}", file=sys.stderr)
        return 2
    dump(profile, args.output)
    print(
        f"wrote {args.output}: {len(profile.features)} features, {profile.rows} rows, "
        f"schema v{profile.schema_version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
