"""The real server process serving directories exactly as ``mlflow.sklearn.save_model`` wrote
them (the real mlflow package), over real HTTP: a RandomForest on numpy (skops, MLflow's
default), a Pipeline on a DataFrame with named columns and a signature (skops and cloudpickle),
one from S3, and the scikit-learn version recorded in MLmodel against the server's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import sklearn
from mlflow.models import infer_signature
from server_stores import S3Store
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

pytestmark = pytest.mark.integration

COLUMNS = ["sepal_length", "sepal_width", "colour", "count"]


def _frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    df = pd.DataFrame(
        {
            "sepal_length": x[:, 0],
            "sepal_width": x[:, 1],
            "colour": np.where(x[:, 2] > 0, "red", "blue"),
            "count": (x[:, 3] * 10).astype(np.int64),
        }
    )
    return df, (x[:, 0] + (x[:, 2] > 0) > 0.5).astype(np.int64)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mlflow-models")
    df, y = _frame(80)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["sepal_length", "sepal_width", "count"]),
                        ("cat", OneHotEncoder(), ["colour"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(df, y)
    sig = infer_signature(df, pd.Series(pipe.predict(df), name="species"))
    for fmt in ("skops", "cloudpickle"):
        mlflow.sklearn.save_model(
            pipe, str(root / f"pipe-{fmt}"), signature=sig, serialization_format=fmt
        )
    x = np.random.default_rng(1).normal(size=(60, 4))
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, (x[:, 0] > 0))
    mlflow.sklearn.save_model(
        forest,
        str(root / "forest"),
        signature=infer_signature(x, forest.predict(x)),
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    return {"root": root, "pipe": pipe, "df": df, "forest": forest, "x": x}


def _row(df: pd.DataFrame, i: int) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in df.iloc[i].items()}


@pytest.mark.parametrize("fmt", ["skops", "cloudpickle"])
def test_pipeline_on_named_columns(start_server: Any, dirs: dict[str, Any], fmt: str) -> None:
    # Under the default format (sklearn): the MLmodel is detected.
    proc = start_server(str(dirs["root"] / f"pipe-{fmt}"))
    proc.wait_ready()
    df = dirs["df"]
    expected = dirs["pipe"].predict(df.iloc[:3]).tolist()
    rows = [_row(df, i) for i in range(3)]
    r = httpx.post(f"{proc.url}/v1/models/iris:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}

    meta = httpx.get(f"{proc.url}/v2/models/iris").json()
    assert meta["platform"] == "mlflow"
    assert meta["inputs"] == [
        {"name": "sepal_length", "datatype": "FP64", "shape": [-1]},
        {"name": "sepal_width", "datatype": "FP64", "shape": [-1]},
        {"name": "colour", "datatype": "BYTES", "shape": [-1]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
    ]
    assert meta["outputs"][0]["name"] == "species"
    params = meta["parameters"]
    assert params["serialization_format"] == fmt
    assert params["trained_sklearn_version"] == sklearn.__version__
    assert params["trained_python_version"]
    assert params["sklearn_version_warnings"] == []

    # V2: one input per column, in another order than the signature's.
    types = {"sepal_length": "FP64", "sepal_width": "FP64", "colour": "BYTES", "count": "INT64"}
    inputs = [
        {"name": c, "shape": [3], "datatype": types[c], "data": df[c].iloc[:3].tolist()}
        for c in reversed(COLUMNS)
    ]
    r = httpx.post(f"{proc.url}/v2/models/iris/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert out[0]["name"] == "species"
    assert out[0]["data"] == expected

    # A column the signature doesn't have is a 400 that names it.
    bad = [*inputs[:3], {**inputs[3], "name": "petal"}]
    r = httpx.post(f"{proc.url}/v2/models/iris/infer", json={"inputs": bad})
    assert r.status_code == 400
    assert "unknown ['petal']" in r.json()["error"]
    assert "missing ['sepal_length']" in r.json()["error"]
    # A string in a long column is a 400 naming the column.
    r = httpx.post(
        f"{proc.url}/v1/models/iris:predict", json={"instances": [{**rows[0], "count": "7"}]}
    )
    assert r.status_code == 400
    assert "column 'count' (long)" in r.json()["error"]


def test_forest_on_numpy_from_s3(
    start_server: Any, dirs: dict[str, Any], s3_store: S3Store, tmp_path: Path
) -> None:
    src = dirs["root"] / "forest"
    for f in src.iterdir():
        s3_store.put(f"runs/1/artifacts/model/{f.name}", f.read_bytes())
    proc = start_server(
        f"s3://{s3_store.bucket}/runs/1/artifacts/", s3_store.env, MODEL_FORMAT="mlflow"
    )
    proc.wait_ready()
    x = dirs["x"][:4]
    expected = dirs["forest"].predict(x).tolist()
    r = httpx.post(f"{proc.url}/v1/models/iris:predict", json={"instances": x.tolist()})
    assert r.json() == {"predictions": expected}
    meta = httpx.get(f"{proc.url}/v2/models/iris").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["parameters"]["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert "forest fast path" in meta["parameters"]["predict_path"]
    # Only MLmodel and the model file were fetched, not the environment files.
    assert sorted(p.name for p in (tmp_path / "models-0").iterdir()) == ["MLmodel", "model.skops"]


def _edited_copy(src: Path, dest: Path, version: str) -> Path:
    shutil.copytree(src, dest)
    text = (dest / "MLmodel").read_text()
    (dest / "MLmodel").write_text(
        text.replace(f"sklearn_version: {sklearn.__version__}", f"sklearn_version: {version}")
    )
    return dest


def test_sklearn_version_mismatch(start_server: Any, dirs: dict[str, Any], tmp_path: Path) -> None:
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    # Only the recorded version differs from what MLflow wrote: this environment has one
    # scikit-learn, so the mismatch is the MLmodel's word, as it would be for an older run.
    older = _edited_copy(dirs["root"] / "pipe-skops", tmp_path / "older", f"{major}.{minor - 1}.0")
    proc = start_server(str(older))
    proc.wait_ready()
    params = httpx.get(f"{proc.url}/v2/models/iris").json()["parameters"]
    assert params["trained_sklearn_version"] == f"{major}.{minor - 1}.0"
    assert params["sklearn_version_warnings"] == [
        f"model.skops was saved with scikit-learn {major}.{minor - 1}.0 but the server runs "
        f"{sklearn.__version__}"
    ]
    metrics = httpx.get(f"{proc.url}/metrics").text
    assert (
        "modeldeploy_model_sklearn_version_mismatch{"
        f'sklearn_version="{sklearn.__version__}",trained_sklearn_version="{major}.{minor - 1}.0"'
        "} 1.0"
    ) in metrics

    ancient = _edited_copy(dirs["root"] / "pipe-skops", tmp_path / "ancient", "0.24.2")
    failed = start_server(str(ancient))
    assert failed.popen.wait(timeout=120) == 1
    message = failed.termination_log.read_text()
    assert "scikit-learn 0.24.2" in message
    assert f"scikit-learn {sklearn.__version__}" in message


def test_mlmodel_naming_a_missing_file(
    start_server: Any, dirs: dict[str, Any], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(dirs["root"] / "pipe-skops", broken)
    (broken / "model.skops").unlink()
    proc = start_server(str(broken), MODEL_FORMAT="mlflow")
    assert proc.popen.wait(timeout=120) == 1
    message = proc.termination_log.read_text()
    assert "flavors.sklearn.pickled_model names model.skops, but there is no such file" in message


def test_mlflow_directory_in_an_archive(
    start_server: Any, dirs: dict[str, Any], tmp_path: Path
) -> None:
    archive = shutil.make_archive(
        str(tmp_path / "model"), "gztar", root_dir=dirs["root"], base_dir="pipe-cloudpickle"
    )
    proc = start_server(archive)
    proc.wait_ready()
    df = dirs["df"]
    r = httpx.post(f"{proc.url}/v1/models/iris:predict", json={"instances": [_row(df, 0)]})
    assert r.json() == {"predictions": dirs["pipe"].predict(df.iloc[:1]).tolist()}
    meta = httpx.get(f"{proc.url}/v2/models/iris").json()
    assert meta["parameters"]["serialization_format"] == "cloudpickle"
