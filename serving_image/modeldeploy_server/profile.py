"""The reference profile: what a model's training data looked like, bin by bin, for drift tracking.

Drift is only measurable against a reference, and the reference has to be small, versioned and
readable without the training data: per feature the bin edges (training quantiles) or categories,
the training share of each bin and of missing values, and the same for the model's predictions.
The server bins served rows into exactly these bins (drift.py), so building and serving share one
binning function (``bin_codes``) and can't disagree on which bin a value falls in.

Pure: numpy and pydantic only (pandas is used when a DataFrame is passed, imported lazily, as it
is not a server dependency), no I/O beyond reading and writing the one JSON file.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

Array = np.ndarray[Any, Any]

SCHEMA_VERSION = 1
MAX_FEATURES = 100  # bounds the label cardinality of the per-feature metrics
MAX_CATEGORIES = 50  # per categorical feature; the rest share the "other" bin
OTHER = "__other__"
_SUM_TOLERANCE = 1e-6


class ProfileError(ValueError):
    """A profile file that can't be used; the message names the file and the field."""


class NumericFeature(BaseModel):
    """Bins ``[edges[i], edges[i+1])`` (the last one closed); values below ``edges[0]`` or above
    ``edges[-1]`` fall in the out-of-range bins, whose training share is 0 by construction."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["numeric"] = "numeric"
    edges: list[float] = Field(min_length=1)
    shares: list[float]  # one per interior bin: max(len(edges) - 1, 1), of the non-missing rows
    missing_share: float = Field(0.0, ge=0, le=1)

    @field_validator("edges")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if not all(math.isfinite(e) for e in edges):
            raise ValueError("edges must be finite numbers")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("edges must be strictly increasing")
        return edges

    @field_validator("shares")
    @classmethod
    def _shares(cls, shares: list[float]) -> list[float]:
        return _unit_shares(shares)

    @model_validator(mode="after")
    def _consistent(self) -> NumericFeature:
        want = max(len(self.edges) - 1, 1)
        if len(self.shares) != want:
            raise ValueError(
                f"shares holds {len(self.shares)} values but {len(self.edges)} edges make "
                f"{want} bins"
            )
        _check_shares(self.shares)
        return self

    @property
    def bins(self) -> int:
        return len(self.shares)

    def labels(self) -> list[str]:
        """Bin labels for metrics: below, each interior bin, above."""
        e = [f"{v:.6g}" for v in self.edges]
        if len(e) == 1:
            inner = [f"[{e[0]},{e[0]}]"]
        else:
            inner = [f"[{a},{b})" for a, b in itertools.pairwise(e)]
            inner[-1] = inner[-1][:-1] + "]"
        return [f"(-inf,{e[0]})", *inner, f"({e[-1]},+inf)"]


class CategoricalFeature(BaseModel):
    """One bin per category seen in training (the most frequent ``MAX_CATEGORIES``), plus "other"
    for every other value; a served value outside ``categories`` counts as out of range."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["categorical"] = "categorical"
    categories: list[str] = Field(min_length=1)
    shares: list[float]  # one per category, of the non-missing rows
    other_share: float = Field(0.0, ge=0, le=1)
    missing_share: float = Field(0.0, ge=0, le=1)

    @field_validator("shares")
    @classmethod
    def _shares(cls, shares: list[float]) -> list[float]:
        return _unit_shares(shares)

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalFeature:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must be distinct")
        if len(self.shares) != len(self.categories):
            raise ValueError(
                f"shares holds {len(self.shares)} values for {len(self.categories)} categories"
            )
        _check_shares([*self.shares, self.other_share])
        return self

    @property
    def bins(self) -> int:
        return len(self.categories)

    def labels(self) -> list[str]:
        return [c[:64] for c in self.categories] + [OTHER]


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


class Profile(BaseModel):
    """A model's reference profile, as stored in ``profile.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1]
    rows: int = Field(ge=1)  # training rows it was built from
    n_features: int = Field(ge=1)  # columns the model takes; features profiles the first ones
    features: list[Feature] = Field(min_length=1, max_length=MAX_FEATURES)
    prediction: Feature | None = None
    model: str = ""  # the model file it was built with, for people
    created: str = ""

    @model_validator(mode="after")
    def _names(self) -> Profile:
        if len(self.features) > self.n_features:
            raise ValueError(
                f"features holds {len(self.features)} entries but n_features is {self.n_features}"
            )
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be distinct")
        return self


def _unit_shares(shares: list[float]) -> list[float]:
    if any(not (0 <= s <= 1) for s in shares):
        raise ValueError("shares must lie between 0 and 1")
    return shares


def _check_shares(shares: Sequence[float]) -> None:
    if abs(sum(shares) - 1) > _SUM_TOLERANCE * max(1, len(shares)) and sum(shares) > 0:
        raise ValueError(f"shares must add up to 1 (they add up to {sum(shares):.6g})")


# ---- binning, shared by building and serving ---------------------------------------------------


def is_missing(values: Array) -> Array:
    """True where a value is missing: NaN, or None in an object array."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind != "O":
        return np.zeros(values.shape, dtype=bool)
    return np.fromiter(
        (v is None or (isinstance(v, float) and v != v) for v in values.ravel().tolist()),
        dtype=bool,
        count=values.size,
    ).reshape(values.shape)


def as_float(values: Array) -> Array:
    """A numeric column as float64; values that are not numbers become NaN (counted missing)."""
    if values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):
        out = np.empty(values.shape, dtype=np.float64)
        for i, v in enumerate(values.tolist()):
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                out[i] = np.nan
        return out


def numeric_codes(values: Array, edges: Array) -> Array:
    """Bin index per value: 0 below the first edge, 1..k the interior bins, k+1 above the last
    edge, k+2 missing (k = max(len(edges) - 1, 1))."""
    v = as_float(values)
    k = max(len(edges) - 1, 1)
    codes = np.searchsorted(edges[1:-1], v, side="right") + 1
    codes[v < edges[0]] = 0
    codes[v > edges[-1]] = k + 1
    codes[np.isnan(v)] = k + 2
    return codes


def categorical_codes(values: Array, categories: Sequence[str]) -> Array:
    """Bin index per value: i for ``categories[i]``, m for any other value, m+1 missing."""
    m = len(categories)
    index = {c: i for i, c in enumerate(categories)}
    if values.dtype.kind in "iubfU" and values.size > 16:
        # Class labels: look up each distinct value once (np.unique), not every value.
        distinct, inverse = np.unique(values, return_inverse=True)
        lut = np.fromiter(
            (
                m + 1 if (isinstance(v, float) and v != v) else index.get(_category(v), m)
                for v in distinct.tolist()
            ),
            dtype=np.int64,
            count=distinct.size,
        )
        return lut[inverse.ravel()]
    missing = is_missing(values)
    items = values.tolist()
    return np.fromiter(
        (
            m + 1 if miss else index.get(_category(v), m)
            for v, miss in zip(items, missing.tolist(), strict=True)
        ),
        dtype=np.int64,
        count=len(items),
    )


def _category(value: Any) -> str:
    # JSON keeps categories as strings; a numpy scalar's str() is its Python value's.
    return value if isinstance(value, str) else str(value)


# ---- building ------------------------------------------------------------------------------


def _numeric_profile(name: str, values: Array, bins: int) -> NumericFeature:
    v = as_float(values)
    present = v[~np.isnan(v)]
    missing_share = 1 - present.size / v.size
    if present.size == 0:  # nothing to bin: one degenerate bin at 0, never matched but valid
        return NumericFeature(name=name, edges=[0.0], shares=[1.0], missing_share=missing_share)
    # Observed values as edges (not interpolated), so a discrete feature's ties merge.
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1), method="inverted_cdf"))
    counts = np.bincount(numeric_codes(present, edges), minlength=len(edges) + 2)
    inner = counts[1 : max(len(edges) - 1, 1) + 1]
    return NumericFeature(
        name=name,
        edges=edges.tolist(),
        shares=(inner / present.size).tolist(),
        missing_share=missing_share,
    )


def _categorical_profile(name: str, values: Array, max_categories: int) -> CategoricalFeature:
    missing = is_missing(values)
    present = [
        _category(v) for v, m in zip(values.tolist(), missing.tolist(), strict=True) if not m
    ]
    counts = Counter(present)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
    if not top:
        return CategoricalFeature(name=name, categories=[OTHER], shares=[1.0], missing_share=1.0)
    n = len(present)
    shares = [c / n for _, c in top]
    return CategoricalFeature(
        name=name,
        categories=[k for k, _ in top],
        shares=shares,
        other_share=max(0.0, 1 - sum(shares)),
        missing_share=1 - n / len(values),
    )


def _is_numeric(values: Array) -> bool:
    if values.dtype.kind in "fiu":
        return True
    if values.dtype.kind != "O":
        return False  # strings, booleans
    present = [v for v in values.tolist() if v is not None]
    return bool(present) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in present
    )


def feature_profile(
    name: str,
    values: Array,
    *,
    kind: Literal["auto", "numeric", "categorical"] = "auto",
    bins: int = 10,
    max_categories: int = MAX_CATEGORIES,
) -> NumericFeature | CategoricalFeature:
    """The profile of one column: numeric columns by quantiles, anything else by category."""
    if kind == "numeric" or (kind == "auto" and _is_numeric(values)):
        return _numeric_profile(name, values, bins)
    return _categorical_profile(name, values, max_categories)


def _columns(x: Any, feature_names: Sequence[str] | None) -> tuple[list[str], list[Array], int]:
    """Names and columns of a 2-D array or a pandas DataFrame."""
    if hasattr(x, "columns") and hasattr(x, "iloc"):  # a DataFrame: its own column names
        names = [str(c) for c in x.columns] if feature_names is None else list(feature_names)
        cols = [frame_column(x.iloc[:, j]) for j in range(x.shape[1])]
        return names, cols, len(x)
    a = np.asarray(x)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2:
        raise ValueError(f"x must be 2-D (rows, features), got shape {list(a.shape)}")
    names = [f"x{j}" for j in range(a.shape[1])] if feature_names is None else list(feature_names)
    return names, [a[:, j] for j in range(a.shape[1])], a.shape[0]


def frame_column(series: Any) -> Array:
    # Numeric dtypes (nullable ones too) as float with NaN for missing; others as objects
    # with None for missing, so both binning paths see what the server will see.
    pd: Any = importlib.import_module("pandas")  # not a server dependency, and untyped

    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return np.asarray(series.astype("float64").to_numpy(na_value=np.nan))
    values = series.astype(object).to_numpy()
    return np.asarray([None if pd.isna(v) else v for v in values], dtype=object)


def build_profile(
    x: Any,
    predictions: Any | None = None,
    feature_names: Sequence[str] | None = None,
    bins: int = 10,
    *,
    prediction_kind: Literal["auto", "numeric", "categorical"] = "auto",
    max_categories: int = MAX_CATEGORIES,
    model: str = "",
) -> Profile:
    """The reference profile of training data ``x`` (a 2-D array or a pandas DataFrame) and the
    model's ``predictions`` on it.

    Numeric columns get ``bins`` quantile bins (deciles by default; equal edges merged), other
    columns one bin per category. Only the first ``MAX_FEATURES`` columns are profiled. With
    ``prediction_kind="auto"`` integer, string and boolean predictions are classes and floats
    are values binned like a numeric feature.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    names, cols, rows = _columns(x, feature_names)
    if len(names) != len(cols):
        raise ValueError(f"feature_names holds {len(names)} names for {len(cols)} columns")
    if rows == 0:
        raise ValueError("x holds no rows")
    features = [
        feature_profile(n, c, bins=bins, max_categories=max_categories)
        for n, c in zip(names[:MAX_FEATURES], cols[:MAX_FEATURES], strict=True)
    ]
    prediction = None
    if predictions is not None:
        p = np.asarray(predictions)
        if p.ndim != 1 or p.shape[0] != rows:
            raise ValueError(f"predictions must be 1-D with {rows} values, got {list(p.shape)}")
        kind = prediction_kind
        if kind == "auto":
            kind = "numeric" if p.dtype.kind == "f" else "categorical"
        prediction = feature_profile(
            "prediction", p, kind=kind, bins=bins, max_categories=MAX_FEATURES
        )
    from datetime import UTC, datetime

    return Profile(
        schema_version=SCHEMA_VERSION,
        rows=rows,
        n_features=len(cols),
        features=features,
        prediction=prediction,
        model=model,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


# ---- files ---------------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a person writes it: features[2].edges."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and part in ("numeric", "categorical") and isinstance(loc[i - 1], int | str):
            continue  # the discriminated union's tag, not a field
        else:
            out += f".{part}" if out else str(part)
    return out or "the document"


def parse_profile(data: bytes | str, source: str = "profile") -> Profile:
    """A profile from JSON text; ProfileError naming ``source`` and the field otherwise."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{source} is not JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ProfileError(
            f"{source}: schema_version is {doc.get('schema_version')!r}, but this server reads "
            f"schema {SCHEMA_VERSION}; rebuild the profile with this server's modeldeploy-profile"
        )
    try:
        return Profile.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()[:5]
        )
        raise ProfileError(f"{source}: {problems}") from None


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read profile {p}: {exc.strerror or exc}") from None
    return parse_profile(data, p.name)


def dump(profile: Profile, path: str | Path | None = None) -> str:
    """The profile as JSON text; also written to ``path`` when given."""
    text = profile.model_dump_json(indent=2, exclude_none=True) + "\n"
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
