"""Generates the ModelDeployment CRD from the pydantic models in ``api``.

Run ``python -m modeldeploy_operator.generate`` (which writes every generated file); a unit
test fails when the checked-in file differs, so the schema users are validated against is always
the one the operator parses with.

Pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3 schema: no ``$ref``, no
``anyOf`` with null for optional fields, a ``type`` on every node, no ``title``. The conversion
below does exactly that and nothing clever, then adds what only a CRD has: the status and scale
subresources, printer columns and the root-level CEL rule on metadata.name.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel

from modeldeploy_operator.api import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from modeldeploy_operator.tracks import ALL_TRACKS, MAX_NAME, service_name

Schema = dict[str, Any]


CATEGORIES = ["all", "modeldeploy"]


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    # Merge before recursing: keywords at the referencing site (its description, or an override
    # of additionalProperties) replace the definition's, and must not be resolved twice.
    if "$ref" in node:
        node = {**defs[node.pop("$ref").split("/")[-1]], **node}
        return _resolve(node, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {options}")
        return _resolve({**options[0], **node}, defs)
    out: Schema = {}
    for k, v in node.items():
        if k in ("title", "$defs"):
            continue
        if k == "default" and v is None:
            continue
        if k in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(v, bool):
            # JSON Schema 2020 (pydantic's gt/lt) has the bound here; OpenAPI v3.0 (the CRD's)
            # wants it in minimum/maximum and a boolean flag.
            out["minimum" if k == "exclusiveMinimum" else "maximum"] = v
            out[k] = True
            continue
        if k == "properties":
            out[k] = {name: _resolve(sub, defs) for name, sub in v.items()}
        else:
            out[k] = _resolve(v, defs)
    if "properties" in out:
        out.setdefault("type", "object")
        if out.get("additionalProperties") is False:
            del out["additionalProperties"]  # pruning already drops unknown fields
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside Optional[...] or list[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _describe(schema: Schema, model: type[BaseModel]) -> None:
    """Puts every field's description on its property (pydantic drops it next to a bare $ref)."""
    props = schema.get("properties") or {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        prop = props.get(alias)
        if prop is None:
            continue
        if info.description:
            prop["description"] = info.description
        nested = _nested_model(info.annotation)
        if nested is not None:
            _describe(prop.get("items", prop), nested)


def structural(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: Schema = _resolve(raw, defs)
    _describe(schema, model)
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    return schema


def walk(schema: Schema, path: str = "") -> typing.Iterator[tuple[str, Schema]]:
    """Every (path, node) of a schema, for tests and the docs generator."""
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")


def openapi_schema() -> Schema:
    return {
        "type": "object",
        "description": (
            "A model served in-cluster: one ModelDeployment becomes a Deployment per track "
            "(stable, canary), Services and an optional HorizontalPodAutoscaler, all running the "
            "generic modeldeploy model server."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation "
                "of an object (modeldeploy.io/v1alpha1).",
            },
            "kind": {
                "type": "string",
                "description": "The REST resource this object represents (ModelDeployment).",
            },
            "metadata": {"type": "object"},
            "spec": structural(ModelDeploymentSpec),
            "status": structural(ModelDeploymentStatus),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"size(self.metadata.name) <= {MAX_NAME} && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": f"metadata.name must start with a letter, contain only lower-case "
                f"letters, digits and '-', and be at most {MAX_NAME} characters (the operator "
                "creates Services named "
                + " and ".join(service_name("<name>", t) for t in ALL_TRACKS)
                + ")",
                "reason": "FieldValueInvalid",
            }
        ],
    }


def printer_columns() -> list[Schema]:
    return [
        {
            "name": "Model",
            "type": "string",
            "jsonPath": ".spec.model.storageUri",
            "description": "The stable track's model artifact.",
        },
        {
            "name": "Version",
            "type": "string",
            "jsonPath": ".status.registry.model.version",
            "description": "The MLflow registry version spec.model's models:/ reference names.",
        },
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Every pod of the current generation is rolled out and serving.",
        },
        {
            "name": "Replicas",
            "type": "string",
            "jsonPath": ".status.replicaCounts",
            "description": "Ready pods / desired pods, over both tracks.",
        },
        {
            "name": "Canary",
            "type": "number",
            "jsonPath": ".status.canary.trafficPercent",
            "description": "Effective canary traffic share in percent (ready canary / ready pods).",
        },
        {
            "name": "Rollout",
            "type": "string",
            "jsonPath": ".status.rollout.summary",
            "description": "Progressive rollout phase and steps done (with spec.rollout).",
        },
        {
            "name": "Drift",
            "type": "string",
            "jsonPath": ".status.drift.summary",
            "description": "Worst drifting feature and its PSI against the reference profile.",
        },
        {
            "name": "URL",
            "type": "string",
            "jsonPath": ".status.url",
            "description": "In-cluster URL of the Service over both tracks.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd() -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modeldeploy"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns(),
                }
            ],
        },
    }


HEADER = (
    "# Generated by `python -m modeldeploy_operator.generate` from operator/modeldeploy_operator/"
    "api.py.\n# Do not edit: change the models and regenerate (a unit test checks this file).\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
