"""Loading models from files: formats, the skops allow-list, and the messages for bad artifacts."""

from __future__ import annotations

import operator
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from modeldeploy_server.errors import StartupError
from modeldeploy_server.runtime.sklearn_model import load_model
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer


def test_joblib_forest_is_described(model_files: dict[str, Path]) -> None:
    m = load_model(model_files["forest"], "sklearn")
    assert m.n_features == 4
    assert m.classes is not None
    assert m.classes.tolist() == [0, 1, 2]
    assert m.has_proba
    assert m.allow_nan  # scikit-learn forests take NaN
    assert m.estimator_class.endswith("RandomForestClassifier")
    assert not m.version_mismatch


def test_plain_pickle_loads_and_reports_nan_policy(model_files: dict[str, Path]) -> None:
    m = load_model(model_files["logreg"], "sklearn")
    assert not m.allow_nan
    assert m.feature_names is None


def test_regressor_has_no_classes(model_files: dict[str, Path]) -> None:
    m = load_model(model_files["regressor"], "sklearn")
    assert m.classes is None
    assert not m.has_proba
    assert not m.is_classifier


def test_feature_names_are_read(model_files: dict[str, Path]) -> None:
    m = load_model(model_files["named"], "sklearn")
    assert m.feature_names == ("sepal_length", "sepal_width", "petal_length", "petal_width")


def test_skops_forest_loads_through_the_allow_list(
    tmp_path: Path, forest: RandomForestClassifier, iris: tuple[Any, Any]
) -> None:
    # A forest holds sklearn.tree._tree.Tree, which skops does not trust by default.
    path = tmp_path / "model.skops"
    sio.dump(forest, path)
    assert "sklearn.tree._tree.Tree" in sio.get_untrusted_types(file=path)
    m = load_model(path, "skops")
    assert m.format == "skops"
    np.testing.assert_array_equal(m.estimator.predict(iris[0]), forest.predict(iris[0]))


def test_skops_untrusted_type_is_refused_by_name(tmp_path: Path, iris: tuple[Any, Any]) -> None:
    model = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=500))
    model.fit(*iris)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    with pytest.raises(StartupError) as err:
        load_model(path, "skops")
    assert "_operator.neg" in err.value.message
    assert "SKOPS_TRUSTED_TYPES" in err.value.message
    assert err.value.reason == "untrusted_types"
    # ... and trusting it explicitly is the documented way out.
    m = load_model(path, "skops", extra_trusted=("_operator.neg",))
    assert m.n_features == 4


def test_skops_format_refuses_a_pickle(model_files: dict[str, Path]) -> None:
    with pytest.raises(StartupError, match=r"format is skops but the artifact is forest\.joblib"):
        load_model(model_files["forest"], "skops")


def test_corrupt_pickle_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(StartupError) as err:
        load_model(path, "sklearn")
    assert "could not load model.pkl" in err.value.message
    assert err.value.reason == "unreadable_model"


def test_not_an_estimator(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": [1, 2, 3]}, path)
    with pytest.raises(StartupError, match="not a fitted estimator with predict"):
        load_model(path, "sklearn")


def test_unfitted_estimator(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(RandomForestClassifier(), path)
    with pytest.raises(StartupError, match="unfitted RandomForestClassifier"):
        load_model(path, "sklearn")


def test_missing_module_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    # A pickle that references a module the image does not have (GLOBAL opcode, protocol 0).
    path.write_bytes(b"cnot_installed_anywhere\nModel\n(tR.")
    with pytest.raises(StartupError, match="'not_installed_anywhere'"):
        load_model(path, "sklearn")


def test_inconsistent_version_is_surfaced(
    tmp_path: Path, iris: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    model = LogisticRegression(max_iter=500).fit(*iris)
    state = model.__getstate__()
    state["_sklearn_version"] = "0.24.2"
    # pickle asks the instance for its state, so this makes the file claim an old version.
    model.__getstate__ = lambda: state  # type: ignore[method-assign]
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps(model))
    m = load_model(path, "sklearn")
    assert m.version_mismatch
    assert m.trained_sklearn_version == "0.24.2"
    assert "LogisticRegression was saved with scikit-learn 0.24.2" in m.version_warnings[0]
    assert "InconsistentVersionWarning" in caplog.text
