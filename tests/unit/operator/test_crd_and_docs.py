"""The checked-in CRD and API reference are exactly what the generators produce, the schema is
structural and documented, and what the operator writes to status survives pruning."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import REPO_ROOT, load_fixture, make_md
from modeldeploy_operator import crdgen, generate
from modeldeploy_operator.status import Observed, compute_status

CRD_FILE = REPO_ROOT / generate.CRD_FILE


def schema() -> dict[str, Any]:
    s: dict[str, Any] = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return s


@pytest.mark.parametrize("path", sorted(generate.outputs(REPO_ROOT)), ids=str)
def test_checked_in_generated_file_is_up_to_date(path: Path) -> None:
    """The CRD, docs/api.md, deploy/rbac.yaml and docs/operations.md's generated tables."""
    expected = generate.outputs(REPO_ROOT)[path]
    assert (REPO_ROOT / path).read_text() == expected, (
        f"{path} is stale: regenerate with python -m modeldeploy_operator.generate"
    )


def test_generate_check_mode_names_a_stale_file(tmp_path: Path) -> None:
    for path in generate.outputs(REPO_ROOT):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((REPO_ROOT / path).read_text())
    assert generate.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / generate.RBAC_FILE).write_text("# edited by hand\n")
    assert generate.stale(tmp_path) == [generate.RBAC_FILE]
    assert generate.main(["--root", str(tmp_path), "--check"]) == 1
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.stale(tmp_path) == []


def test_a_generated_region_replaces_only_its_own_text() -> None:
    page = "intro\n<!-- generated: t -->\nold\n<!-- end generated: t -->\noutro\n"
    assert generate.replace_region(page, "t", "new\n") == (
        "intro\n<!-- generated: t -->\nnew\n<!-- end generated: t -->\noutro\n"
    )
    with pytest.raises(generate.RegionMissingError, match="exactly one"):
        generate.replace_region("no markers", "t", "x")
    with pytest.raises(generate.RegionMissingError, match="exactly one"):
        generate.replace_region(page + page, "t", "x")


def test_crds_kustomization_lists_the_crd() -> None:
    # extension-less, so `kubectl apply -f crds/` (which reads *.yaml/*.yml/*.json) skips it
    kust = yaml.safe_load((REPO_ROOT / "crds" / "Kustomization").read_text())
    assert kust["resources"] == [CRD_FILE.name]
    crds = sorted((REPO_ROOT / "crds").glob("*.y*ml"))
    kinds = [d["kind"] for f in crds for d in yaml.safe_load_all(f.read_text())]
    assert kinds == ["CustomResourceDefinition"]


def test_every_field_has_a_type_and_a_description() -> None:
    missing = [
        path
        for path, node in crdgen.walk(schema())
        if path != ".metadata" and ("description" not in node or not node["description"].strip())
    ]
    assert missing == []
    untyped = [p for p, n in crdgen.walk(schema()) if "type" not in n and "anyOf" not in n]
    assert untyped == []


def test_schema_is_structural() -> None:
    forbidden = {"$ref", "$defs", "title", "oneOf", "allOf", "not"}
    for path, node in crdgen.walk(schema()):
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path


def test_subresources_names_and_columns() -> None:
    crd = crdgen.crd()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "ModelDeployment",
        "modeldeployments",
        ["md"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = [(c["name"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Model", 0),
        ("Version", 0),
        ("Ready", 0),
        ("Replicas", 0),
        ("Canary", 0),
        ("Rollout", 0),
        ("Drift", 0),
        ("URL", 0),
        ("Age", 0),
    ]


def test_cel_rules_name_their_field_and_reason() -> None:
    rules = [r for _, n in crdgen.walk(schema()) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 5
    for rule in rules:
        assert rule["reason"] in {"FieldValueInvalid", "FieldValueDuplicate", "FieldValueRequired"}
        assert "spec." in rule["message"] or "metadata.name" in rule["message"]


def _strict(node: dict[str, Any]) -> dict[str, Any]:
    """The schema as the API server prunes: unknown fields are an error here, not silently lost."""
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    for k in [k for k in out if k.startswith("x-kubernetes-")]:
        del out[k]
    return out


def test_status_the_operator_writes_survives_pruning() -> None:
    md = make_md(replicas=4, canary={"storageUri": "s3://m/v2", "trafficPercent": 25})
    obs = Observed(
        deployments={
            "stable": load_fixture("deployment-stable-available.json"),
            "canary": load_fixture("deployment-canary-available.json"),
        },
        pods=[load_fixture("pod-stable-model-load-failed.json")],
    )
    status = compute_status(md, obs, {}, "2026-11-23T11:00:00Z")
    jsonschema.Draft4Validator(_strict(schema()["properties"]["status"])).validate(status)


@pytest.mark.parametrize("bad", [{"extra": 1}, {"replicas": -1}])
def test_strict_status_schema_can_fail(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(_strict(schema()["properties"]["status"])).validate(bad)


def test_generated_crd_is_stable_across_runs() -> None:
    digest = {hashlib.sha256(crdgen.render().encode()).hexdigest() for _ in range(3)}
    assert len(digest) == 1
