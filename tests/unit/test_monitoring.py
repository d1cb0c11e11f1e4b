"""The shipped monitoring (deploy/monitoring/) is valid and speaks of metrics that exist.

promtool (Debian's prometheus package; hack/test.sh installs it) checks the rule file; the
Prometheus Operator's PrometheusRule carries exactly the same groups; and every metric a rule or
a dashboard panel queries is one the server or the operator really exports, read from their own
registries (a renamed metric would otherwise leave an alert that can never fire).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from modeldeploy_operator.metrics import OperatorMetrics
from modeldeploy_server.drift import DriftTracker
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.profile import build_profile

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
METRIC = re.compile(r"\b(modeldeploy_[a-z0-9_]+)\b")


def _server_with_drift() -> Metrics:
    """A server's metrics with drift tracking on, after some traffic (so every family, the PSI
    gauges included, has samples)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    predictions = (x[:, 0] > 0).astype(np.int64)
    metrics = Metrics()
    tracker = DriftTracker(build_profile(x, predictions), metrics, n_features=3)
    tracker.observe(x + 1.0, predictions)
    return metrics


def exported_sample_names() -> set[str]:
    names: set[str] = set()
    for registry in (_server_with_drift().registry, OperatorMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(family.name + suffix for suffix in ("_total", "_bucket", "_sum", "_count"))
    return names


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    return groups


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (hack/test.sh does)")
    out = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_the_prometheus_rule_carries_the_same_groups() -> None:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    assert doc["spec"]["groups"] == rule_groups()


def test_every_alert_says_what_to_do() -> None:
    alerts = [r for g in rule_groups() for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "ModelDeploymentDegraded",
        "ModelPredictionShift",
        "ModelFeatureDrift",
        "ModelHighMissingFeatureRate",
        "ModelErrorRateSLO",
        "ModelLatencySLO",
    }
    for a in alerts:
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        assert a["annotations"]["summary"], a["alert"]
        assert a["annotations"]["description"], a["alert"]


def _queries() -> list[tuple[str, str]]:
    out = [(r["alert"], r["expr"]) for g in rule_groups() for r in g["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        out += [(panel["title"], t["expr"]) for t in panel["targets"]]
    out += [
        (v["name"], v["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    return out


@pytest.mark.parametrize(("where", "expr"), _queries(), ids=lambda v: v[:40])
def test_queries_use_metrics_that_exist(where: str, expr: str) -> None:
    used = set(METRIC.findall(expr))
    assert used, f"{where}: queries no modeldeploy metric"
    missing = used - exported_sample_names()
    assert not missing, f"{where} queries {sorted(missing)}, which nothing exports"


def test_the_scrape_config_labels_what_the_rules_group_by() -> None:
    config = yaml.safe_load((MONITORING / "prometheus-scrape.yml").read_text())
    servers = next(j for j in config["scrape_configs"] if j["job_name"] == "modeldeploy-servers")
    targets = {r.get("target_label") for r in servers["relabel_configs"]}
    assert {"namespace", "pod", "model", "track"} <= targets
    monitors = list(yaml.safe_load_all((MONITORING / "podmonitors.yaml").read_text()))
    relabeled = {
        r["targetLabel"]
        for m in monitors
        for e in m["spec"]["podMetricsEndpoints"]
        for r in e.get("relabelings", [])
    }
    assert {"model", "track"} <= relabeled
