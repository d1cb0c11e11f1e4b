"""Helpers shared by the server's integration tests (a uniquely named module, not conftest,
so test files can import it without clashing with the other conftest.py files)."""

from __future__ import annotations

import io
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_store_with_profile(root: Path, joblib_bytes: bytes) -> tuple[Path, np.ndarray[Any, Any]]:
    """``root/store/model.joblib`` with its reference profile beside it (found automatically,
    as modeldeploy-profile writes it); returns the model's path and the training rows."""
    import joblib
    from modeldeploy_server.profile import build_profile, dump
    from sklearn.datasets import load_iris

    model_dir = root / "store"
    model_dir.mkdir()
    (model_dir / "model.joblib").write_bytes(joblib_bytes)
    model = joblib.load(model_dir / "model.joblib")
    x, _ = load_iris(return_X_y=True)
    dump(build_profile(x, model.predict(x), IRIS_FEATURES), model_dir / "model.profile.json")
    return model_dir / "model.joblib", x


def predict(server_url: str, rows: np.ndarray[Any, Any]) -> None:
    """Serves ``rows`` through the iris model's V1 predict, 50 rows a request, all 200s."""
    for start in range(0, len(rows), 50):
        r = httpx.post(
            f"{server_url}/v1/models/iris:predict",
            json={"instances": rows[start : start + 50].tolist()},
            timeout=10,
        )
        assert r.status_code == 200, r.text


@dataclass
class HttpStore:
    root: Path
    url: str
    hold: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)

    def put(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{name}"


@dataclass
class S3Store:
    endpoint: str
    env: dict[str, str]
    client: Any
    bucket: str = "models"
    scheme: str = "s3"

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=io.BytesIO(data))
        return f"s3://{self.bucket}/{key}"


@dataclass
class GcsStore:
    """A bucket on a GCS emulator (gcp-storage-emulator) speaking the JSON API on loopback."""

    endpoint: str
    env: dict[str, str]
    fs: Any
    bucket: str
    scheme: str = "gs"

    def put(self, key: str, data: bytes) -> str:
        self.fs.pipe(f"{self.bucket}/{key}", data)
        return f"gs://{self.bucket}/{key}"


BucketStore = S3Store | GcsStore  # what the ``bucket_store`` fixture hands out: put, env, scheme
