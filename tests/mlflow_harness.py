"""A real MLflow tracking server for the tests: `mlflow server` with a SQLite backend and an S3
artifact root on moto's S3 server, and models logged and registered with the real mlflow client
exactly as a user's training job does.

Both listen on loopback for the operator's integration tests. The e2e suite binds them to the
real node's address on this machine instead, so the operator's pod and the model server pods
reach them the way they reach a team's MLflow and S3 outside the cluster.

The tracking server runs with --no-serve-artifacts, so a version's download URI is the s3://
location the model server pods read (docs/mlflow.md says why the proxy is not supported).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"
BUCKET = "mlflow"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Logs and registers one model version; run in a subprocess so the test process does not import
# mlflow (and its tracking-URI globals) at all.
_LOG_SCRIPT = """
import sys, numpy as np, mlflow, mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
name, seed = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(seed).normal(size=(60, 4))
y = (x[:, seed % 4] > 0).astype(int)
model = LogisticRegression().fit(x, y)
with mlflow.start_run():
    info = mlflow.sklearn.log_model(
        model, name="model", signature=infer_signature(x, model.predict(x)),
        registered_model_name=name,
    )
print(info.registered_model_version)
"""


def _wait_http(url: str, what: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class MlflowServer:
    """``tracking_uri``: the server's base URL; ``s3_endpoint``: moto's; both on ``host``."""

    root: Path
    host: str = "127.0.0.1"
    tracking_uri: str = ""
    s3_endpoint: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **S3_ENV,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            # no background job runner (a dozen huey workers): the tests need the registry only
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    def start(self) -> None:
        s3_port, port = free_port(self.host), free_port(self.host)
        self.s3_endpoint = f"http://{self.host}:{s3_port}"
        self.tracking_uri = f"http://{self.host}:{port}"
        log = (self.root / "moto.log").open("ab")
        moto = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", self.host, "-p", str(s3_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        self.procs.append(moto)
        _wait_http(f"{self.s3_endpoint}/moto-api/", "moto_server", moto)
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import boto3,os;boto3.client('s3',endpoint_url=os.environ["
                f"'MLFLOW_S3_ENDPOINT_URL']).create_bucket(Bucket='{BUCKET}')",
            ],
            env=self.env(),
            check=True,
            timeout=60,
        )
        log = (self.root / "mlflow.log").open("ab")
        server = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--default-artifact-root",
                f"s3://{BUCKET}/artifacts",
                "--no-serve-artifacts",
                "--host",
                self.host,
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=str(self.root),
            start_new_session=True,
        )
        self.procs.append(server)
        _wait_http(f"{self.tracking_uri}/health", "mlflow server", server, timeout=180)

    def stop(self) -> None:
        # Each runs in its own session: the group takes `mlflow server`'s uvicorn worker along.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of an exited leader
        self.procs.clear()

    def log_version(self, name: str, seed: int) -> str:
        """Trains, logs and registers a version of ``name``; returns its version number."""
        out = subprocess.run(
            [sys.executable, "-c", _LOG_SCRIPT, name, str(seed)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"logging {name} failed:\n{out.stderr[-4000:]}")
        return out.stdout.strip().splitlines()[-1]

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.tracking_uri}/api/2.0/mlflow{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.api(
            "POST",
            "/registered-models/alias",
            {"name": name, "alias": alias, "version": version},
        )

    def run_id(self, name: str, version: str) -> str:
        """The run that logged the version (what the model server's metadata calls run_id)."""
        query = urllib.parse.urlencode({"name": name, "version": version})
        run: str = self.api("GET", f"/model-versions/get?{query}")["model_version"]["run_id"]
        return run

    def download_uri(self, name: str, version: str) -> str:
        query = urllib.parse.urlencode({"name": name, "version": version})
        uri: str = self.api("GET", f"/model-versions/get-download-uri?{query}")["artifact_uri"]
        return uri
