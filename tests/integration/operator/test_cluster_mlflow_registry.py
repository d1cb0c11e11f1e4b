"""models:/ storageUris resolved by the real operator against a real MLflow tracking server
(SQLite backend, S3 artifact root on moto) with versions logged by the real mlflow client: the
pods get the version's s3:// artifact location, status says which version, an alias move rolls
the new version out, and a missing model or an unreachable registry is a Degraded reason that
says which; admission refuses a registry reference without a tracking server, and an unknown
scheme with a sentence naming the schemes."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from mlflow_harness import MlflowServer
from operator_harness import (
    REPO_ROOT,
    Cluster,
    Obj,
    condition,
    container,
    env_of,
    free_port,
    iris_spec,
    load_yaml_docs,
    md_manifest,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(Path(tmp_path_factory.mktemp("mlflow")))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer) -> dict[str, str]:
    """One registered model with two versions; alias champion on version 1."""
    name = f"iris-{uuid.uuid4().hex[:6]}"
    v1 = mlflow_server.log_version(name, 1)
    v2 = mlflow_server.log_version(name, 2)
    mlflow_server.set_alias(name, "champion", v1)
    return {
        "name": name,
        "v1": v1,
        "v2": v2,
        "uri1": mlflow_server.download_uri(name, v1),
        "uri2": mlflow_server.download_uri(name, v2),
    }


def _stable_env(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    return env_of(container(cluster.deployment(namespace, f"{name}-stable")))


def _registry(md: Obj) -> Obj:
    return dict(((md.get("status") or {}).get("registry") or {}).get("model") or {})


def test_alias_resolves_to_the_artifact_and_a_move_rolls_out(
    cluster: Cluster, namespace: str, mlflow_server: MlflowServer, registered: dict[str, str]
) -> None:
    name = registered["name"]
    spec = iris_spec(
        replicas=1,
        model={
            "storageUri": f"models:/{name}@champion",
            "mlflow": {"trackingUri": mlflow_server.tracking_uri, "refreshInterval": "2s"},
        },
    )
    cluster.create_md(namespace, md_manifest("reg", spec))

    def on_version(uri: str) -> dict[str, str] | None:
        try:
            env = _stable_env(cluster, namespace, "reg")
        except ApiException:
            return None
        return env if env["STORAGE_URI"] == uri else None

    env = wait_until(lambda: on_version(registered["uri1"]), "the Deployment to load version 1")
    assert registered["uri1"].startswith("s3://mlflow/"), registered
    assert env["MODEL_FORMAT"] == "mlflow"
    md = wait_until(
        lambda: (lambda m: m if _registry(m).get("version") else None)(
            cluster.get_md(namespace, "reg")
        ),
        "status.registry.model",
    )
    reg = _registry(md)
    assert reg["uri"] == f"models:/{name}@champion"
    assert reg["version"] == registered["v1"]
    assert reg["artifactUri"] == registered["uri1"]
    assert md["spec"]["model"]["storageUri"] == f"models:/{name}@champion"  # MODEL stays readable
    assert md["status"]["stable"]["storageUri"] == registered["uri1"]

    mlflow_server.set_alias(name, "champion", registered["v2"])
    wait_until(lambda: on_version(registered["uri2"]), "the alias move to reach the Deployment")
    wait_until(
        lambda: _registry(cluster.get_md(namespace, "reg")).get("version") == registered["v2"],
        "status.registry.model to say version 2",
    )
    events = cluster.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=reg"
    ).items
    moved = [e for e in events if e.reason == "RegistryVersionChanged"]
    assert moved, [e.reason for e in events]
    assert f"version {registered['v2']} (was {registered['v1']})" in moved[0].message


def test_a_pinned_version_and_latest_resolve(
    cluster: Cluster, namespace: str, mlflow_server: MlflowServer, registered: dict[str, str]
) -> None:
    name = registered["name"]
    for md_name, ref, uri in (
        ("pinned", f"models:/{name}/{registered['v1']}", registered["uri1"]),
        ("latest", f"models:/{name}/latest", registered["uri2"]),
    ):
        spec = iris_spec(
            replicas=1,
            model={"storageUri": ref, "mlflow": {"trackingUri": mlflow_server.tracking_uri}},
        )
        cluster.create_md(namespace, md_manifest(md_name, spec))
        wait_until(
            lambda n=md_name, u=uri: (
                _registry(cluster.get_md(namespace, n)).get("artifactUri") == u
            ),
            f"{ref} to resolve to {uri}",
        )
        assert _stable_env(cluster, namespace, md_name)["STORAGE_URI"] == uri


def _degraded(cluster: Cluster, namespace: str, name: str, reason: str) -> Obj | None:
    md = cluster.get_md(namespace, name)
    cond = condition(md, "Degraded")
    return md if cond and cond["status"] == "True" and cond["reason"] == reason else None


def test_missing_model_and_unreachable_registry_are_degraded_with_the_reason(
    cluster: Cluster, namespace: str, mlflow_server: MlflowServer, registered: dict[str, str]
) -> None:
    missing = iris_spec(
        replicas=1,
        model={
            "storageUri": "models:/no-such-model@champion",
            "mlflow": {"trackingUri": mlflow_server.tracking_uri},
        },
    )
    cluster.create_md(namespace, md_manifest("missing", missing))
    md = wait_until(
        lambda: _degraded(cluster, namespace, "missing", "RegistryModelNotFound"),
        "Degraded RegistryModelNotFound",
    )
    message = condition(md, "Degraded")["message"]  # type: ignore[index]
    assert "spec.model.storageUri models:/no-such-model@champion" in message, message
    assert "Registered Model with name=no-such-model not found" in message, message
    assert "nothing is deployed" in message, message
    ready = condition(md, "Ready")
    assert ready is not None, md
    assert ready["status"] == "False", ready
    assert cluster.deployments(namespace, "missing") == []

    nobody = f"http://127.0.0.1:{free_port()}"
    down = iris_spec(
        replicas=1,
        model={
            "storageUri": f"models:/{registered['name']}@champion",
            "mlflow": {"trackingUri": nobody, "secretName": "modeldeploy-mlflow"},
        },
    )
    cluster.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "modeldeploy-mlflow"},
            "data": {"MLFLOW_TRACKING_TOKEN": base64.b64encode(b"t0ken").decode()},
        },
    )
    cluster.create_md(namespace, md_manifest("down", down))
    md = wait_until(
        lambda: _degraded(cluster, namespace, "down", "RegistryUnavailable"),
        "Degraded RegistryUnavailable",
    )
    message = condition(md, "Degraded")["message"]  # type: ignore[index]
    assert nobody in message, message
    assert cluster.deployments(namespace, "down") == []


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"storageUri": "models:/iris@champion"},
            "set spec.model.mlflow.trackingUri",
        ),
        (
            {"storageUri": "ftp://models/iris/"},
            "spec.model.storageUri must be one of s3://<bucket>/<key>",
        ),
        (
            {
                "storageUri": "models:/iris@champion",
                "sha256": "a" * 64,
                "mlflow": {"trackingUri": "http://mlflow:5000"},
            },
            "pin a version",
        ),
        (
            {
                "storageUri": "models:/iris/3",
                "format": "skops",
                "mlflow": {"trackingUri": "http://mlflow:5000"},
            },
            "format skops can't load an MLflow registry model",
        ),
    ],
)
def test_admission_says_what_a_registry_reference_needs(
    cluster: Cluster, namespace: str, model: Obj, expected: str
) -> None:
    spec = iris_spec(replicas=1, model={"format": "sklearn", **model})
    with pytest.raises(ApiException) as err:
        cluster.create_md(namespace, md_manifest("refused", spec))
    assert err.value.status == 422
    assert expected in json.loads(err.value.body)["message"], err.value.body


def test_the_example_works_against_a_real_registry(
    cluster: Cluster, namespace: str, mlflow_server: MlflowServer, registered: dict[str, str]
) -> None:
    """examples/mlflow.yaml as written, but for the tracking server's address and the model's
    name (the example's Secret is read for the token; this server has no auth)."""
    docs = load_yaml_docs(REPO_ROOT / "examples" / "mlflow.yaml")
    for d in docs:
        d["metadata"].pop("namespace", None)
        if d["kind"] == "ModelDeployment":
            model = d["spec"]["model"]
            assert model["storageUri"] == "models:/iris@champion", model
            model["storageUri"] = f"models:/{registered['name']}@champion"
            model["mlflow"]["trackingUri"] = mlflow_server.tracking_uri
    cluster.apply_yaml(namespace, docs)
    md = wait_until(
        lambda: (lambda m: m if _registry(m).get("version") else None)(
            cluster.get_md(namespace, "iris-mlflow")
        ),
        "the example's alias to resolve",
    )
    assert _registry(md)["artifactUri"] in (registered["uri1"], registered["uri2"])
    out = cluster.kubectl("get", "md", "iris-mlflow", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "MODEL", "VERSION"], out
    assert row.split()[2] == _registry(md)["version"], out
