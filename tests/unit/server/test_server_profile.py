"""The reference profile: building it from arrays, DataFrames and the CLI, and refusing bad files.

Shares and edges are checked against values computed by hand, and every bad file must say which
field is wrong, because that sentence is what a person sees in the server's log and metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modeldeploy_server.profile import (
    OTHER,
    CategoricalFeature,
    NumericFeature,
    ProfileError,
    build_profile,
    categorical_codes,
    dump,
    load_profile,
    numeric_codes,
    parse_profile,
)
from modeldeploy_server.profile_cli import main as profile_main

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def test_numeric_codes_put_edges_and_out_of_range_in_their_bins() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])  # bins [0,1) [1,2) [2,3]
    v = np.array([-1, 0, 0.5, 1, 2.5, 3, 3.5, np.nan])
    # below=0, interior 1..3, above=4, missing=5
    assert numeric_codes(v, edges).tolist() == [0, 1, 1, 2, 3, 3, 4, 5]


def test_a_constant_feature_has_one_bin() -> None:
    f = build_profile(np.full((5, 1), 7.0)).features[0]
    assert isinstance(f, NumericFeature)
    assert f.edges == [7.0]
    assert f.shares == [1.0]
    assert numeric_codes(np.array([6.0, 7.0, 8.0]), np.array(f.edges)).tolist() == [0, 1, 2]
    assert f.labels() == ["(-inf,7)", "[7,7]", "(7,+inf)"]


def test_deciles_shares_and_missing_share() -> None:
    x = np.arange(100, dtype=float).reshape(-1, 1)
    x[0, 0] = np.nan
    f = build_profile(x, bins=4).features[0]
    assert isinstance(f, NumericFeature)
    assert f.edges == [1.0, 25.0, 50.0, 75.0, 99.0]  # quartiles of 1..99, observed values
    assert f.missing_share == pytest.approx(0.01)
    # [1,25) holds 1..24, [25,50) 25..49, [50,75) 50..74, [75,99] 75..99
    assert f.shares == pytest.approx([24 / 99, 25 / 99, 25 / 99, 25 / 99])


def test_ties_merge_edges() -> None:
    x = np.array([[0.0]] * 90 + [[1.0]] * 10)
    f = build_profile(x).features[0]
    assert isinstance(f, NumericFeature)
    assert f.edges == [0.0, 1.0]
    assert f.shares == [1.0]  # both values are in the one closed bin [0, 1]


def test_categorical_feature_with_other_and_missing() -> None:
    col = np.array(["a"] * 5 + ["b"] * 3 + ["c"] + [None], dtype=object)
    prof = build_profile(col.reshape(-1, 1), feature_names=["colour"], max_categories=2)
    f = prof.features[0]
    assert isinstance(f, CategoricalFeature)
    assert f.name == "colour"
    assert f.categories == ["a", "b"]
    assert f.shares == pytest.approx([5 / 9, 3 / 9])
    assert f.other_share == pytest.approx(1 / 9)
    assert f.missing_share == pytest.approx(0.1)
    assert f.labels() == ["a", "b", OTHER]
    codes = categorical_codes(np.array(["b", "zzz", None, "a"], dtype=object), f.categories)
    assert codes.tolist() == [1, 2, 3, 0]


def test_predictions_classes_or_value_bins() -> None:
    x = np.arange(20, dtype=float).reshape(-1, 2)
    classes = build_profile(x, np.array([0, 1] * 5)).prediction
    assert isinstance(classes, CategoricalFeature)
    assert classes.categories == ["0", "1"]
    assert classes.shares == [0.5, 0.5]
    values = build_profile(x, np.linspace(0, 1, 10)).prediction
    assert isinstance(values, NumericFeature)
    assert values.edges[0] == 0.0
    assert values.edges[-1] == 1.0


def test_dataframe_columns_and_nullable_values() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"size": [1.0, 2.0, None, 4.0], "colour": ["red", None, "red", "blue"]})
    prof = build_profile(frame, np.array([1, 0, 1, 0]))
    assert [f.name for f in prof.features] == ["size", "colour"]
    size, colour = prof.features
    assert isinstance(size, NumericFeature)
    assert size.missing_share == 0.25
    assert isinstance(colour, CategoricalFeature)
    assert colour.categories == ["red", "blue"]
    assert colour.missing_share == 0.25


def test_only_the_first_hundred_features_are_profiled() -> None:
    prof = build_profile(np.zeros((3, 120)))
    assert len(prof.features) == 100
    assert prof.n_features == 120


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    prof = build_profile(np.random.default_rng(0).normal(size=(200, 3)), np.zeros(200, dtype=int))
    path = tmp_path / "profile.json"
    dump(prof, path)
    again = load_profile(path)
    assert again == prof
    assert json.loads(path.read_text())["schema_version"] == 1


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "rows": 10,
        "n_features": 1,
        "features": [
            {"name": "a", "kind": "numeric", "edges": [0, 1, 2], "shares": [0.5, 0.5]},
        ],
    }
    doc.update(changes)
    return doc


def _feature(**changes: Any) -> dict[str, Any]:
    f: dict[str, Any] = {"name": "a", "kind": "numeric", "edges": [0, 1, 2], "shares": [0.5, 0.5]}
    f.update(changes)
    return f


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (_doc(schema_version=2), "schema_version is 2, but this server reads schema 1"),
        (_doc(features=[_feature(edges=[0, 2, 1])]), "features[0].edges"),
        (_doc(features=[_feature(edges=[0, 1, 2], shares=[1.0])]), "features[0]: "),
        (_doc(features=[_feature(shares=[0.5, 0.7])]), "add up to 1"),
        (_doc(features=[_feature(missing_share=2)]), "features[0].missing_share"),
        (_doc(features=[_feature(kind="text")]), "features[0]"),
        (_doc(features=[_feature(), _feature()], n_features=2), "names must be distinct"),
        (_doc(features=[_feature(colour="x")]), "features[0].colour"),
        (_doc(rows=0), "rows:"),
        (
            _doc(
                prediction={"name": "p", "kind": "categorical", "categories": ["1"], "shares": [2]}
            ),
            "prediction.shares",
        ),
    ],
)
def test_bad_profiles_name_the_field(doc: dict[str, Any], says: str) -> None:
    with pytest.raises(ProfileError, match=r"^profile.json: ") as err:
        parse_profile(json.dumps(doc), "profile.json")
    assert says in str(err.value)


def test_not_json_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="is not JSON"):
        parse_profile(b"{", "p.json")
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "absent.json")


def test_cli_builds_the_profile_with_the_servers_loader(
    tmp_path: Path, model_files: dict[str, Path], iris: tuple[Any, Any]
) -> None:
    x, y = iris
    data = tmp_path / "train.csv"
    lines = [",".join([*IRIS_FEATURES, "species"])]
    lines += [",".join([*(str(v) for v in row), str(int(t))]) for row, t in zip(x, y, strict=True)]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "profile.json"
    code = profile_main(
        ["--data", str(data), "--model", str(model_files["forest"]), "--target", "species",
         "-o", str(out)]
    )  # fmt: skip
    assert code == 0
    prof = load_profile(out)
    assert [f.name for f in prof.features] == list(IRIS_FEATURES)
    assert prof.rows == 150
    assert prof.model == "forest.joblib"
    pred = prof.prediction
    assert isinstance(pred, CategoricalFeature)
    assert sorted(pred.categories) == ["0", "1", "2"]


def test_cli_errors_are_one_line(
    tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    assert profile_main(["--data", str(data), "--model", str(model_files["forest"])]) == 2
    assert "expects shape [N, 4]" in capsys.readouterr().err
    assert profile_main(["--data", str(data), "--model", str(data), "--target", "c"]) == 2
    assert "--target 'c' is not a column" in capsys.readouterr().err


def test_many_class_labels_are_coded_like_a_few() -> None:
    labels = np.random.default_rng(0).integers(0, 5, 200)
    cats = ["0", "1", "3"]
    many = categorical_codes(labels, cats)
    one_by_one = np.concatenate([categorical_codes(labels[i : i + 1], cats) for i in range(200)])
    assert many.tolist() == one_by_one.tolist()
    floats = np.array([1.0, np.nan] * 20)
    assert set(categorical_codes(floats, ["1.0"]).tolist()) == {0, 2}
