"""A real Prometheus (Debian's package) scrapes a real server and fires the shipped drift alert.

The server serves an iris model with its reference profile beside it (found automatically, as
`modeldeploy-profile` writes it); Prometheus scrapes it every second and evaluates
deploy/monitoring/rules.yml as shipped, except `for:` shortened to nothing so the test need not
wait 15 minutes. Traffic like the training data keeps the drift alerts silent; traffic whose
petal measurements are far from anything the model was trained on makes ModelFeatureDrift fire
for exactly those features, while the error-rate alert stays inactive.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from server_stores import free_port, iris_store_with_profile, predict

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[3] / "deploy" / "monitoring" / "rules.yml"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is missing: install Debian's prometheus package (hack/test.sh does)"
        )
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule["for"] = "0s"
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "modeldeploy-servers",
                    "static_configs": [
                        {
                            "targets": [target],
                            # What the shipped scrape configs' relabeling gives a server pod.
                            "labels": {
                                "namespace": "default",
                                "pod": "iris-stable-0",
                                "model": "iris",
                                "track": "stable",
                            },
                        }
                    ],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready:\n{(tmp_path / 'prometheus.log').read_text()}")

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


def alerts(url: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]:
        out.setdefault(a["labels"]["alertname"], []).append(a)
    return out


def test_drifted_traffic_fires_the_feature_drift_alert(
    start_server: Any, prometheus: Any, tmp_path: Path, artifacts: dict[str, bytes]
) -> None:
    model_path, x = iris_store_with_profile(tmp_path, artifacts["joblib"])
    proc = start_server(str(model_path))
    proc.wait_ready()
    meta = httpx.get(f"{proc.url}/v2/models/iris", timeout=5).json()
    assert str(meta["parameters"]["drift"]).startswith("on"), meta["parameters"]

    url = prometheus(proc.url.removeprefix("http://"))
    rng = np.random.default_rng(1)
    predict(proc.url, x[rng.permutation(len(x))].repeat(4, axis=0))  # like the training data

    def query(expr: str) -> list[dict[str, Any]]:
        data = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    deadline = time.monotonic() + 60
    while not query("modeldeploy_feature_drift_psi") and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # a few evaluations over the scraped PSI
    quiet = alerts(url)
    assert "ModelFeatureDrift" not in quiet, quiet["ModelFeatureDrift"]
    assert "ModelErrorRateSLO" not in quiet

    # Petals three times as long as any in training: out of the profile's range.
    drifted = x.copy()
    drifted[:, 2:] *= 3
    predict(proc.url, np.tile(drifted, (30, 1)))

    def firing() -> list[dict[str, Any]]:
        return [a for a in alerts(url).get("ModelFeatureDrift", []) if a["state"] == "firing"]

    deadline = time.monotonic() + 90
    while not firing():
        assert time.monotonic() < deadline, f"no drift alert; alerts: {alerts(url)}"
        time.sleep(0.5)
    # All four features move together in a window; what matters: the petals fire, the labels
    # name them, and the value is a significant shift.
    features = {a["labels"]["feature"] for a in firing()}
    assert {"petal_length", "petal_width"} <= features, firing()
    assert all(a["labels"]["model"] == "iris" for a in firing())
    assert all(float(a["value"]) > 0.25 for a in firing())
    assert "ModelErrorRateSLO" not in alerts(url)
