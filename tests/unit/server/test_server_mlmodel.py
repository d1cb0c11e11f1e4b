"""The MLmodel file as MLflow writes it (the real mlflow package) and malformed ones: every
problem is a StartupError naming the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest
from mlflow.models import infer_signature
from modeldeploy_server.errors import StartupError
from modeldeploy_server.mlmodel import parse_mlmodel
from modeldeploy_server.runtime.mlflow import sklearn_version_warning
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    df = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1, 0, 1, 0]})
    model = LogisticRegression().fit(df, [0, 1, 1, 0])
    out = tmp_path_factory.mktemp("mlflow") / "model"
    sig = infer_signature(df, pd.Series(model.predict(df), name="label"))
    mlflow.sklearn.save_model(model, str(out), signature=sig, serialization_format="cloudpickle")
    return out / "MLmodel"


def test_reads_what_mlflow_wrote(written: Path) -> None:
    m = parse_mlmodel(written.read_bytes(), "MLmodel")
    assert m.pickled_model == "model.pkl"
    assert m.serialization_format == "cloudpickle"
    import sklearn

    assert m.sklearn_version == sklearn.__version__
    assert m.python_version is not None
    assert m.signature is not None
    cols = m.signature.columns
    assert cols is not None
    assert [(c.name, c.type) for c in cols] == [("a", "double"), ("b", "long")]
    assert [o.name for o in m.signature.outputs] == ["label"]


@pytest.mark.parametrize(
    ("text", "fragment", "reason"),
    [
        ("flavors: [", "not valid YAML at line", "bad_mlmodel"),
        ("- a list", "the file must be a mapping", "bad_mlmodel"),
        ("flavors:\n  xgboost: {}\n", "no sklearn flavor (it has xgboost)", "unsupported_flavor"),
        ("flavors:\n  sklearn: {}\n", "flavors.sklearn.pickled_model must name", "bad_mlmodel"),
        (
            "flavors:\n  sklearn: {pickled_model: ../../etc/passwd}\n",
            "must be a file name inside the MLmodel's directory",
            "bad_mlmodel",
        ),
        (
            "flavors:\n  sklearn: {pickled_model: m.bin, serialization_format: onnx}\n",
            "serialization_format is 'onnx'; the server loads skops, cloudpickle, pickle",
            "unsupported_flavor",
        ),
        (
            'flavors:\n  sklearn: {pickled_model: m.pkl}\nsignature:\n  inputs: \'[{"type": '
            '"array", "name": "x"}]\'\n',
            "signature.inputs[0].type is 'array'",
            "unsupported_signature",
        ),
        (
            "flavors:\n  sklearn: {pickled_model: m.pkl}\nsignature:\n  inputs: 'not json'\n",
            "signature.inputs is not valid JSON",
            "bad_mlmodel",
        ),
    ],
)
def test_malformed_mlmodel_names_field(text: str, fragment: str, reason: str) -> None:
    with pytest.raises(StartupError) as err:
        parse_mlmodel(text, "s3://b/m/MLmodel")
    assert err.value.message.startswith("s3://b/m/MLmodel: ")
    assert fragment in err.value.message
    assert err.value.reason == reason


def test_major_sklearn_version_is_refused_minor_reported(written: Path) -> None:
    m = parse_mlmodel(
        written.read_text().replace("sklearn_version:", "sklearn_version: 0.24.2 #"), "MLmodel"
    )
    assert m.sklearn_version == "0.24.2"
    with pytest.raises(StartupError) as err:
        sklearn_version_warning(m, "model.pkl", "1.9.1")
    assert "scikit-learn 0.24.2" in err.value.message
    assert "scikit-learn 1.9.1" in err.value.message
    assert err.value.reason == "sklearn_version"
    minor = sklearn_version_warning(m, "model.pkl", "0.23.0")
    assert minor == "model.pkl was saved with scikit-learn 0.24.2 but the server runs 0.23.0"
