"""Shared fixtures for the server's unit tests: tiny iris models and an in-process app.

Models are trained once per session (iris ships with scikit-learn, so nothing is downloaded). The
app fixture drives the real FastAPI app through httpx's ASGITransport with a DataPlane whose model
is installed directly, skipping storage, so these tests stay on one process and no sockets.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from modeldeploy_server.app import create_app
from modeldeploy_server.dataplane import DataPlane, ServingInfo
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.runtime.sklearn import SklearnRuntime, load_sklearn_runtime
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="session")
def forest(iris: tuple[Any, Any]) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(*iris)


@pytest.fixture(scope="session")
def logreg(iris: tuple[Any, Any]) -> LogisticRegression:
    """Does not accept NaN, unlike the forest."""
    return LogisticRegression(max_iter=1000).fit(*iris)


@pytest.fixture(scope="session")
def named_forest(iris: tuple[Any, Any]) -> RandomForestClassifier:
    """A forest that knows its feature names, as if fitted on a DataFrame.

    pandas is not a dependency, so the attribute is set the way fitting on a DataFrame would.
    """
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(*iris)
    model.feature_names_in_ = np.asarray(IRIS_FEATURES, dtype=object)
    return model


@pytest.fixture(scope="session")
def regressor(iris: tuple[Any, Any]) -> LinearRegression:
    x, _y = iris
    return LinearRegression().fit(x[:, :3], x[:, 3])


@pytest.fixture(scope="session")
def model_files(
    tmp_path_factory: pytest.TempPathFactory,
    forest: RandomForestClassifier,
    logreg: LogisticRegression,
    named_forest: RandomForestClassifier,
    regressor: LinearRegression,
) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    files = {
        "forest": d / "forest.joblib",
        "logreg": d / "logreg.pkl",
        "named": d / "named.joblib",
        "regressor": d / "regressor.joblib",
    }
    joblib.dump(forest, files["forest"])
    with files["logreg"].open("wb") as f:
        pickle.dump(logreg, f)
    joblib.dump(named_forest, files["named"])
    joblib.dump(regressor, files["regressor"])
    return files


def loaded(path: Path) -> SklearnRuntime:
    return load_sklearn_runtime(path, "sklearn")


@pytest.fixture
async def make_client(model_files: dict[str, Path]) -> AsyncIterator[Callable[..., Any]]:
    """``await make_client("forest", **info)`` -> (httpx.AsyncClient, DataPlane)."""
    planes: list[DataPlane] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(
        model: str | None = "forest",
        *,
        max_body_bytes: int = 64 * 1024,
        predict_proba_v1: bool = False,
        max_batch_rows: int = 1024,
        estimator: Any = None,
    ) -> tuple[httpx.AsyncClient, DataPlane]:
        info = ServingInfo(
            name="iris",
            version="v1",
            track="canary",
            storage_uri="s3://models/iris/",
            sha256="",
            predict_proba_v1=predict_proba_v1,
        )
        dp = DataPlane(info, Metrics(), max_batch_rows=max_batch_rows, max_wait_s=0.0)
        if model is not None:
            rt = loaded(model_files[model])
            if estimator is not None:
                # Any object with predict, described as the named model (4 iris features).
                custom = replace(
                    rt.model,
                    estimator=estimator,
                    estimator_class="test.Custom",
                    has_proba=hasattr(estimator, "predict_proba"),
                )
                rt = SklearnRuntime(custom)
            await dp.set_ready(rt, "ab" * 32)
        app = create_app(dp, max_body_bytes=max_body_bytes)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        planes.append(dp)
        clients.append(client)
        return client, dp

    yield factory
    for c in clients:
        await c.aclose()
    for dp in planes:
        await dp.stop()
