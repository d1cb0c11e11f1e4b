"""The real ``modeldeploy-server`` process on a loopback port, as a kubelet would run it.

Success: it listens while the model downloads (healthz 200, ready 503), then serves predictions
over real HTTP with the track header. Failure: it writes one sentence to the termination log and
exits non-zero. Waits poll with generous deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from server_stores import HttpStore, S3Store

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]


def test_serves_a_model_from_s3_over_real_http(
    start_server: Any, s3_store: S3Store, artifacts: dict[str, bytes]
) -> None:
    uri = s3_store.put("iris/v2/model.joblib", artifacts["joblib"])
    digest = hashlib.sha256(artifacts["joblib"]).hexdigest()
    proc = start_server(uri.rsplit("/", 1)[0] + "/", s3_store.env, MODEL_SHA256=digest)
    proc.wait_ready()
    r = httpx.post(f"{proc.url}/v1/models/iris:predict", json={"instances": [ROW]})
    assert r.status_code == 200
    assert r.json() == {"predictions": [0]}
    assert r.headers["x-modeldeploy-track"] == "canary"
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
    r = httpx.post(f"{proc.url}/v2/models/iris/infer", json=body)
    assert r.json()["model_version"] == digest[:12]
    assert r.json()["outputs"][0]["data"] == [0]
    metrics = httpx.get(f"{proc.url}/metrics").text
    assert f'sha256="{digest}"' in metrics
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(timeout=60) == 0
    assert not proc.termination_log.exists()


def test_listens_during_download_and_becomes_ready(
    start_server: Any, http_store: HttpStore, artifacts: dict[str, bytes]
) -> None:
    url = http_store.put("iris/model.joblib", artifacts["joblib"])
    http_store.hold.clear()  # the HTTP server parks the download until we release it
    proc = start_server(url)
    assert http_store.held.wait(timeout=120), proc.output()
    live = httpx.get(f"{proc.url}/healthz")
    assert live.status_code == 200
    assert live.json()["phase"] == "downloading"
    ready = httpx.get(f"{proc.url}/ready")
    assert ready.status_code == 503
    assert "downloading" in ready.json()["error"]
    assert ready.headers["x-modeldeploy-track"] == "canary"
    http_store.hold.set()
    proc.wait_ready()
    r = httpx.post(f"{proc.url}/v1/models/iris:predict", json={"instances": [ROW, ROW]})
    assert r.json() == {"predictions": [0, 0]}


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing", "model artifact not found at s3://"),
        ("digest", "but spec.model.sha256 is " + "0" * 64),
        ("corrupt", "could not load model.pkl"),
        ("untrusted", "outside the allow-list (_operator.neg)"),
    ],
)
def test_cannot_serve_writes_the_reason_and_exits_non_zero(
    start_server: Any,
    s3_store: S3Store,
    artifacts: dict[str, bytes],
    case: str,
    fragment: str,
) -> None:
    env: dict[str, str] = {}
    if case == "missing":
        uri = f"s3://{s3_store.bucket}/iris/v9/model.joblib"
    elif case == "digest":
        uri = s3_store.put("iris/model.joblib", artifacts["joblib"])
        env["MODEL_SHA256"] = "0" * 64
    elif case == "corrupt":
        uri = s3_store.put("iris/model.pkl", artifacts["corrupt"])
    else:
        uri = s3_store.put("iris/model.skops", artifacts["untrusted_skops"])
        env["MODEL_FORMAT"] = "skops"
    proc = start_server(uri, s3_store.env, **env)
    code = proc.popen.wait(timeout=180)
    assert code != 0, proc.output()
    message = proc.termination_log.read_text()
    assert fragment in message, message
    assert "\n" not in message.strip()  # one sentence for the pod status
    assert message in proc.output()  # and the same reason in the log


def test_invalid_configuration_fails_fast(start_server: Any) -> None:
    proc = start_server("s3://models/iris/", MODEL_SHA256="not-hex")
    assert proc.popen.wait(timeout=120) == 2
    assert "MODEL_SHA256 must be 64 hex digits" in proc.termination_log.read_text()


def test_module_entry_point_prints_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "modeldeploy_server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=True,
    )
    assert "--storage-uri" in out.stdout
    assert "STORAGE_URI" in out.stdout
