"""Shared fixtures for the operator's unit tests: typed ModelDeployments, operator settings, the
recorded child objects under fixtures/, and an in-memory ``reconcile.Cluster``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from modeldeploy_operator.api import ModelDeployment
from modeldeploy_operator.settings import OperatorSettings

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[3]
UID = "0b7c1e2a-5f1d-4c1e-9d7e-2a8c3f4b5d6e"
# The ownerReference every namespaced child of make_md()'s ModelDeployment carries.
OWNER_REF = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "name": "iris",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}

Obj = dict[str, Any]


def md_body(
    name: str = "iris", namespace: str = "default", generation: int = 1, **spec: Any
) -> Obj:
    base: Obj = {"model": {"storageUri": "s3://models/iris/v1/model.joblib"}, "replicas": 2}
    base.update(spec)
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": UID, "generation": generation},
        "spec": base,
    }


def make_md(**spec: Any) -> ModelDeployment:
    return ModelDeployment.from_body(md_body(**spec))


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def settings() -> OperatorSettings:
    # Explicit values, so a developer's MODELDEPLOY_* environment cannot change a golden dict.
    return OperatorSettings(
        server_image="modeldeploy-server:0.1.0",
        image_pull_policy="IfNotPresent",
        cluster_domain="cluster.local",
        startup_budget_seconds=600,
        progress_deadline_seconds=900,
        drain_seconds=10,
        termination_grace_seconds=45,
        model_dir_size_limit=None,
    )


class FakeCluster:
    """``reconcile.Cluster`` in memory. Applies behave like the API server for what the tests
    need: they create or replace the object, bump generation on spec changes and keep status."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.pods: list[Obj] = []
        self.calls: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.status_patches: list[Obj] = []
        self.fail: dict[tuple[str, str], Exception] = {}  # (verb, name) -> error to raise
        self._uid = 0

    def writes(self) -> list[str]:
        return [c for c in self.calls if not c.startswith(("get ", "list "))]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        self.calls.append(f"get {kind}/{name}")
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def apply(self, manifest: Obj) -> Obj:
        kind, meta = manifest["kind"], manifest["metadata"]
        self.calls.append(f"apply {kind}/{meta['name']}")
        if ("apply", meta["name"]) in self.fail:
            raise self.fail[("apply", meta["name"])]
        key = (kind, meta["namespace"], meta["name"])
        old = self.objects.get(key)
        new = copy.deepcopy(manifest)
        if old is None:
            self._uid += 1
            new["metadata"]["uid"] = f"child-{self._uid}"
            new["metadata"]["generation"] = 1
        else:
            new["metadata"]["uid"] = old["metadata"]["uid"]
            bump = old.get("spec") != new.get("spec")
            new["metadata"]["generation"] = old["metadata"]["generation"] + int(bump)
            if "status" in old:
                new["status"] = old["status"]
        self.objects[key] = new
        return copy.deepcopy(new)

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        self.calls.append(f"delete {kind}/{name}")
        self.objects.pop((kind, namespace, name), None)

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        self.calls.append(f"list pods {selector}")
        return copy.deepcopy(self.pods)

    def patch_status(self, namespace: str, name: str, patch: Obj) -> None:
        self.calls.append(f"patch_status {name}")
        if ("patch_status", name) in self.fail:
            raise self.fail[("patch_status", name)]
        self.status_patches.append(copy.deepcopy(patch))

    def event(self, md: Obj, type_: str, reason: str, message: str) -> None:
        self.calls.append(f"event {reason}")
        self.events.append((type_, reason, message))

    # test helpers
    def roll_out(self) -> None:
        """What the Deployment controller does when every pod becomes available."""
        for (kind, _, _), obj in self.objects.items():
            if kind == "Deployment":
                n = obj["spec"]["replicas"]
                obj["status"] = {
                    "observedGeneration": obj["metadata"]["generation"],
                    "replicas": n,
                    "updatedReplicas": n,
                    "readyReplicas": n,
                    "availableReplicas": n,
                }


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()
