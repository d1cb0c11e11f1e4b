"""Real storage servers on loopback for the server's integration tests.

* ``http_store``: a threading ``http.server`` serving a temporary directory; a ``hold`` event lets a
  test freeze a download mid-flight without sleeping.
* ``s3_store``: moto's standalone ``ThreadedMotoServer`` (a real S3 HTTP API), with boto3 to upload
  and the AWS_* / S3_ENDPOINT_URL environment a pod would get from its credentials Secret.
* ``gcs_store``: gcp-storage-emulator (Google Cloud Storage's JSON API, in memory), reached the
  way a pod would: STORAGE_EMULATOR_HOST in the environment, no credentials.
* tiny iris models as bytes: joblib, skops, an skops file with an untrusted type, and garbage.
"""

from __future__ import annotations

import functools
import operator
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import joblib
import pytest
import skops.io as sio
from moto.server import ThreadedMotoServer
from server_stores import BucketStore, GcsStore, HttpStore, S3Store, free_port
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer


@pytest.fixture(scope="session")
def iris_forest() -> RandomForestClassifier:
    x, y = load_iris(return_X_y=True)
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, iris_forest: Any) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("artifacts")
    x, y = load_iris(return_X_y=True)
    joblib.dump(iris_forest, d / "model.joblib")
    sio.dump(iris_forest, d / "model.skops")
    untrusted = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=500))
    sio.dump(untrusted.fit(x, y), d / "untrusted.skops")
    return {
        "joblib": (d / "model.joblib").read_bytes(),
        "skops": (d / "model.skops").read_bytes(),
        "untrusted_skops": (d / "untrusted.skops").read_bytes(),
        "corrupt": b"\x80\x04\x95 definitely not a pickle",
    }


@pytest.fixture
def http_store(tmp_path: Path) -> Iterator[HttpStore]:
    root = tmp_path / "www"
    root.mkdir()
    store = HttpStore(root=root, url="")
    store.hold.set()  # not held unless a test clears it

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            store.requests.append(self.path)
            if not store.hold.is_set():
                store.held.set()
                store.hold.wait(timeout=60)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    store.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store
    store.hold.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(moto_server: str, request: pytest.FixtureRequest) -> S3Store:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_ENDPOINT_URL": moto_server,
    }
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    # One bucket per test keeps tests independent on the shared moto server.
    bucket = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    bucket = "".join(c if c.isalnum() or c == "-" else "-" for c in bucket)
    client.create_bucket(Bucket=bucket)
    return S3Store(endpoint=moto_server, env=env, client=client, bucket=bucket)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs_store(gcs_emulator: str, request: pytest.FixtureRequest) -> GcsStore:
    from gcsfs.core import GCSFileSystem

    endpoint = f"http://{gcs_emulator}"
    fs = GCSFileSystem(token="anon", endpoint_url=endpoint, skip_instance_cache=True)
    bucket = "g-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50]
    fs.mkdir(bucket.strip("-"))
    # As a user would set it in spec.server.env: host:port, no scheme.
    return GcsStore(endpoint, {"STORAGE_EMULATOR_HOST": gcs_emulator}, fs, bucket.strip("-"))


@pytest.fixture(params=["s3_store", "gcs_store"], ids=["s3", "gcs"])
def bucket_store(request: pytest.FixtureRequest) -> BucketStore:
    """Each bucket store in turn, for the cases S3 and GCS share."""
    store: BucketStore = request.getfixturevalue(request.param)
    return store


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The process environment minus anything AWS-ish this machine may carry."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}


# ---- the real server process (test_server_process.py, the client and gRPC tests) ----

SERVER = Path(sys.executable).parent / "modeldeploy-server"


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    url: str
    termination_log: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, deadline_s: float = 120) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.popen.poll() is not None:
                pytest.fail(f"server exited with {self.popen.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready in time:\n{self.output()}")

    def wait_listening(self, deadline_s: float = 120) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                httpx.get(f"{self.url}/healthz", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"server never listened:\n{self.output()}")


@pytest.fixture
def start_server(tmp_path: Path, clean_env: dict[str, str]) -> Iterator[Any]:
    procs: list[Proc] = []

    def start(storage_uri: str, extra_env: dict[str, str] | None = None, **env: str) -> Proc:
        port = free_port()
        n = len(procs)
        term = tmp_path / f"termination-log-{n}"
        log = tmp_path / f"server-{n}.log"
        full_env = {
            **clean_env,
            "MODEL_NAME": "iris",
            "STORAGE_URI": storage_uri,
            "MODEL_DIR": str(tmp_path / f"models-{n}"),
            "TERMINATION_LOG": str(term),
            "MODELDEPLOY_TRACK": "canary",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            # Not the default 8081: tests run side by side, and a developer's server may hold it.
            "GRPC_PORT": str(free_port()),
            "DOWNLOAD_ATTEMPTS": "2",
            "DOWNLOAD_BACKOFF_S": "0",
            **(extra_env or {}),
            **env,
        }
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [str(SERVER)], env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        proc = Proc(popen, f"http://127.0.0.1:{port}", term, log)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
