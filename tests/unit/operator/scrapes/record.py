"""Records the /metrics expositions under this folder from the real server, driven in-process.

The analysis tests read real scrapes, not hand-written ones, so a change to what the server
exposes (a renamed metric, another label) shows up as a test that no longer finds its counters.
Each scrape is the real ServingApp (FastAPI inside, as uvicorn runs it) over a DataPlane with
an iris model installed directly, called through httpx's ASGITransport, then GET /metrics. The
traffic below is fixed, so the counts are too (the tests name them); only the latency buckets
differ from one recording to the next.

Run from the repository root after changing the server's metrics:

    .venv/bin/python tests/unit/operator/scrapes/record.py
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
from modeldeploy_server.app import create_app
from modeldeploy_server.dataplane import DataPlane, ServingInfo
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.runtime.sklearn import SklearnRuntime, load_sklearn_runtime
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression

HERE = Path(__file__).resolve().parent
X, Y = load_iris(return_X_y=True)
INFER = "/v2/models/iris/infer"


@dataclass
class FaultyForest:
    """Predicts like the forest, but raises (a 500: not the caller's fault) on a value > 50."""

    forest: Any

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if (x > 50).any():
            raise RuntimeError("the model broke on a value over 50")
        return np.asarray(self.forest.predict(x))


def v2(rows: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ]
    }


class Server:
    """One server process: a DataPlane, its app and a client; ``scrape()`` is GET /metrics."""

    def __init__(self, runtime: SklearnRuntime, track: str) -> None:
        info = ServingInfo(
            name="iris", version="v1", track=track, storage_uri="s3://models/iris/", sha256=""
        )
        self.dp = DataPlane(info, Metrics(), max_batch_rows=1024, max_wait_s=0.0)
        self.runtime = runtime
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(self.dp)), base_url="http://pod"
        )

    async def __aenter__(self) -> Server:
        await self.dp.set_ready(self.runtime, "ab" * 32)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()
        await self.dp.stop()

    async def call(self, method: str, path: str, status: int, **kw: Any) -> None:
        r = await self.client.request(method, path, **kw)
        assert r.status_code == status, (path, r.status_code, r.text)

    async def probes(self, n: int) -> None:
        """What the kubelet and a curious person send: not inference."""
        for _ in range(n):
            await self.call("GET", "/v2/health/live", 200)
            await self.call("GET", "/v2/health/ready", 200)
        await self.call("GET", "/v2/models/iris", 200)
        await self.call("GET", "/metrics", 200)

    async def scrape(self, name: str) -> None:
        r = await self.client.get("/metrics")
        assert r.status_code == 200
        (HERE / name).write_text(r.text)


async def record(models: dict[str, SklearnRuntime]) -> None:
    async with Server(models["forest"], "stable") as pod:
        await pod.probes(10)
        for i in range(30):  # all 150 iris rows, 5 a request
            await pod.call("POST", INFER, 200, json=v2(X[i * 5 : i * 5 + 5]))
        for i in range(10):
            await pod.call(
                "POST", "/v1/models/iris:predict", 200, json={"instances": [X[i * 15].tolist()]}
            )
        for _ in range(3):  # the caller's fault: 3 features for a 4-feature model
            await pod.call("POST", INFER, 400, json=v2(X[:1, :3]))
        for _ in range(2):  # the caller's fault: no such model
            await pod.call("POST", "/v2/models/nope/infer", 404, json=v2(X[:1]))
        await pod.scrape("stable-1.txt")
        await pod.probes(5)
        for i in range(20):
            await pod.call("POST", INFER, 200, json=v2(X[i * 7 : i * 7 + 1]))
        await pod.scrape("stable-2.txt")

    async with Server(models["forest"], "stable") as pod:  # the same pod, restarted
        await pod.probes(3)
        for i in range(7):
            await pod.call("POST", INFER, 200, json=v2(X[i * 20 : i * 20 + 1]))
        await pod.scrape("stable-restarted.txt")

    async with Server(models["constant"], "canary") as pod:
        await pod.probes(10)
        for i in range(30):
            await pod.call("POST", INFER, 200, json=v2(X[i * 5 : i * 5 + 5]))
        await pod.scrape("canary-constant.txt")

    async with Server(models["faulty"], "canary") as pod:
        await pod.probes(10)
        for i in range(36):
            await pod.call("POST", INFER, 200, json=v2(X[i : i + 1]))
        for _ in range(4):
            await pod.call("POST", INFER, 500, json=v2(np.full((1, 4), 99.0)))
        for _ in range(6):
            await pod.call("POST", INFER, 400, json=v2(X[:1, :3]))
        await pod.scrape("canary-faulty.txt")

    async with Server(models["regressor"], "stable") as pod:
        await pod.probes(2)
        for i in range(25):  # 2 rows a request
            await pod.call("POST", INFER, 200, json=v2(X[i * 6 : i * 6 + 2, :3]))
        await pod.scrape("regressor.txt")


def main() -> None:
    # The 500s below are on purpose; the server's traceback for each would only be noise.
    logging.disable(logging.ERROR)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, Y)
    estimators = {
        "forest": forest,
        "constant": DummyClassifier(strategy="constant", constant=0).fit(X, Y),
        "regressor": LinearRegression().fit(X[:, :3], X[:, 3]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, SklearnRuntime] = {}
        for name, estimator in estimators.items():
            path = Path(tmp) / f"{name}.joblib"
            joblib.dump(estimator, path)
            models[name] = load_sklearn_runtime(path, "sklearn")
    faulty = replace(
        models["forest"].model,
        estimator=FaultyForest(forest),
        estimator_class="tests.FaultyForest",
        has_proba=False,
    )
    models["faulty"] = SklearnRuntime(faulty)
    asyncio.run(record(models))


if __name__ == "__main__":
    main()
