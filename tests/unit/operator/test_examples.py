"""Every example passes the CRD's schema, the model digests in the YAMLs match the committed
artifacts, and the generated model store holds exactly those artifacts."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import REPO_ROOT
from modeldeploy_operator import crdgen
from modeldeploy_operator.api import ModelDeploymentSpec

EXAMPLES = REPO_ROOT / "examples"
MODEL_DIR = EXAMPLES / "model"
FILES = sorted(EXAMPLES.glob("*.yaml"))


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def model_deployments() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in FILES for d in docs(p) if d.get("kind") == "ModelDeployment"]


def digests() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in MODEL_DIR.glob("*.joblib")}


def test_the_required_examples_exist() -> None:
    names = {p.name for p in FILES}
    assert {
        "iris.yaml",
        "iris-canary.yaml",
        "iris-autoscale.yaml",
        "s3-credentials.yaml",
        "model-store.yaml",
        "iris-rollout.yaml",
        "iris-rollout-errors.yaml",
        "iris-rollout-shift.yaml",
    } <= names
    assert set(digests()) == {
        "iris-v1.joblib",
        "iris-v2.joblib",
        "iris-v3-broken.joblib",
        "iris-v3-constant.joblib",
    }


@pytest.mark.parametrize(
    ("name", "md"), model_deployments(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_example_passes_the_crd_schema(name: str, md: dict[str, Any]) -> None:
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # OpenAPI v3.0 schemas are JSON Schema draft 4 (e.g. a boolean exclusiveMinimum).
    jsonschema.Draft4Validator(schema).validate(md)  # types, ranges, enums, patterns
    ModelDeploymentSpec.model_validate(md["spec"])  # and what the operator itself parses


def test_schema_validation_rejects_a_bad_example() -> None:
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    _, md = model_deployments()[0]
    bad = {**md, "spec": {**md["spec"], "model": {"storageUri": "ftp://nope/x"}}}
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.Draft4Validator(schema).validate(bad)


def _uri_digest_pairs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The examples' artifacts and their pinned digests; a models:/ reference names a registry
    version, not a file here (examples/mlflow.yaml, tested against a real registry)."""
    pairs = [(spec["model"]["storageUri"], spec["model"].get("sha256", ""))]
    if "canary" in spec:
        pairs.append((spec["canary"]["storageUri"], spec["canary"].get("sha256", "")))
    return [(uri, sha) for uri, sha in pairs if not uri.startswith("models:/")]


@pytest.mark.parametrize(
    ("name", "md"), model_deployments(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_digests_in_the_examples_match_the_artifacts(name: str, md: dict[str, Any]) -> None:
    known = digests()
    for uri, sha in _uri_digest_pairs(md["spec"]):
        artifact = uri.rsplit("/", 1)[-1]
        assert artifact in known, f"{name}: {uri} names no file in examples/model/"
        assert sha == known[artifact], f"{name}: sha256 of {artifact} is {known[artifact]}"


def test_sha256sums_file_matches() -> None:
    lines = (MODEL_DIR / "SHA256SUMS").read_text().split("\n")
    recorded = dict(reversed(line.split("  ")) for line in lines if line)
    assert recorded == digests()


def _make_store() -> Any:
    spec = importlib.util.spec_from_file_location("make_store", MODEL_DIR / "make_store.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_store_is_generated_from_the_artifacts() -> None:
    path = EXAMPLES / "model-store.yaml"
    assert path.read_text() == _make_store().render(), "run python examples/model/make_store.py"
    configmap = next(d for d in docs(path) if d["kind"] == "ConfigMap")
    for name, data in configmap["binaryData"].items():
        assert hashlib.sha256(base64.b64decode(data)).hexdigest() == digests()[name]
    deployment = next(d for d in docs(path) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "python3",
        "-m",
        "http.server",
        "8000",
        "--directory",
        "/models",
    ]
    service = next(d for d in docs(path) if d["kind"] == "Service")
    assert service["metadata"]["name"] == "model-store"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]


def test_http_examples_point_at_the_model_store() -> None:
    for name, md in model_deployments():
        for uri, _ in _uri_digest_pairs(md["spec"]):
            if uri.startswith("http"):
                artifact = uri.removeprefix("http://model-store.default.svc.cluster.local/")
                assert artifact in digests(), name
