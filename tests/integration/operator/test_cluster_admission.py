"""What the schema can reject is rejected at admission by the real API server (OpenAPI + CEL
validation of the CRD), with a message that names the offending field, and nothing is stored."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from operator_harness import Cluster, Obj, iris_spec, md_manifest


def _with(path: str, value: Any, base: Obj | None = None) -> Obj:
    """iris_spec() with `value` set at a dotted `path` (value _DELETE removes the key)."""
    spec = copy.deepcopy(base if base is not None else iris_spec())
    *parents, leaf = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


_DELETE = object()
_CANARY = iris_spec(canary={"storageUri": "s3://models/iris/v2/", "trafficPercent": 10})
_AUTO = iris_spec(autoscaling={"minReplicas": 2, "maxReplicas": 4})

# (id, spec, words the message must contain: the field's name)
INVALID: list[tuple[str, Obj, list[str]]] = [
    ("bad-scheme", _with("model.storageUri", "ftp://models/iris/"), ["spec.model.storageUri"]),
    ("no-scheme", _with("model.storageUri", "models/iris/"), ["spec.model.storageUri"]),
    ("missing-uri", _with("model.storageUri", _DELETE), ["spec.model.storageUri"]),
    ("missing-model", _with("model", _DELETE), ["spec.model"]),
    ("unknown-format", _with("model.format", "tensorflow"), ["spec.model.format"]),
    ("bad-sha256", _with("model.sha256", "not-a-digest"), ["spec.model.sha256"]),
    ("short-sha256", _with("model.sha256", "ab" * 16), ["spec.model.sha256"]),
    ("negative-replicas", _with("replicas", -1), ["spec.replicas"]),
    (
        "percent-above-100",
        _with("canary.trafficPercent", 101, _CANARY),
        ["spec.canary.trafficPercent"],
    ),
    (
        "percent-negative",
        _with("canary.trafficPercent", -5, _CANARY),
        ["spec.canary.trafficPercent"],
    ),
    (
        "canary-without-uri",
        _with("canary.storageUri", _DELETE, _CANARY),
        ["spec.canary.storageUri"],
    ),
    (
        "canary-bad-scheme",
        _with("canary.storageUri", "mailto:x@y", _CANARY),
        ["spec.canary.storageUri"],
    ),
    ("min-above-max", _with("autoscaling.minReplicas", 5, _AUTO), ["spec.autoscaling.minReplicas"]),
    ("max-zero", _with("autoscaling.maxReplicas", 0, _AUTO), ["spec.autoscaling.maxReplicas"]),
    (
        "cpu-target-zero",
        _with("autoscaling.targetCPUUtilizationPercentage", 0, _AUTO),
        ["spec.autoscaling.targetCPUUtilizationPercentage"],
    ),
]


@pytest.mark.parametrize(("case", "spec", "words"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_modeldeployment_is_rejected_naming_the_field(
    cluster: Cluster, namespace: str, case: str, spec: Obj, words: list[str]
) -> None:
    name = f"bad-{case}"
    with pytest.raises(ApiException) as err:
        cluster.create_md(namespace, md_manifest(name, spec))
    assert err.value.status == 422, f"{case}: expected 422 Invalid, got {err.value.status}"
    message = str(err.value.body)
    for w in words:
        assert w in message, f"{case}: the message does not name {w!r}: {message}"
    with pytest.raises(ApiException) as missing:
        cluster.get_md(namespace, name)
    assert missing.value.status == 404


def test_kubectl_apply_shows_the_field_to_the_user(cluster: Cluster, namespace: str) -> None:
    manifest = md_manifest("bad", _with("canary.trafficPercent", 150, _CANARY))
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert proc.returncode != 0
    assert "spec.canary.trafficPercent" in proc.stderr, proc.stderr


def test_a_valid_spec_is_accepted(cluster: Cluster, namespace: str) -> None:
    """The control case: the same base spec the invalid ones start from is admitted."""
    spec = _with("model.sha256", "a" * 64, _CANARY)
    created = cluster.create_md(namespace, md_manifest("good", spec))
    assert created["spec"]["model"]["sha256"] == "a" * 64
