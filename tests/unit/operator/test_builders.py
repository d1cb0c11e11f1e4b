"""Golden-dict tests for every child manifest: the contract of docs/architecture.md as data."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import OWNER_REF, make_md
from modeldeploy_operator import builders
from modeldeploy_operator.api import ModelDeployment
from modeldeploy_operator.settings import OperatorSettings
from modeldeploy_operator.tracks import plan_tracks

LABELS = {
    "app.kubernetes.io/name": "iris",
    "app.kubernetes.io/instance": "iris",
    "app.kubernetes.io/component": "predictor",
    "app.kubernetes.io/managed-by": "modeldeploy-operator",
}
SHA = "a" * 64
SELECTOR = {"app.kubernetes.io/name": "iris", "app.kubernetes.io/instance": "iris"}


def _dep(md: ModelDeployment, track: str, settings: OperatorSettings) -> dict[str, Any]:
    """The Deployment of one track, with the replica split the spec gives it."""
    t = plan_tracks(md).get(track)
    assert t is not None, f"{track} is not a track of this spec"
    return builders.deployment(md, t, settings)


def golden_stable_deployment() -> dict[str, Any]:
    labels = {**LABELS, "modeldeploy.io/track": "stable"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "iris-stable",
            "namespace": "default",
            "labels": labels,
            "ownerReferences": [OWNER_REF],
        },
        "spec": {
            "replicas": 2,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "iris",
                    "app.kubernetes.io/instance": "iris",
                    "modeldeploy.io/track": "stable",
                }
            },
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 900,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "8080",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "modeldeploy-server:0.1.0",
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [
                                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
                            ],
                            "env": [
                                {"name": "MODEL_NAME", "value": "iris"},
                                {
                                    "name": "STORAGE_URI",
                                    "value": "s3://models/iris/v1/model.joblib",
                                },
                                {"name": "MODEL_FORMAT", "value": "sklearn"},
                                {"name": "MODEL_SHA256", "value": SHA},
                                {"name": "MODEL_DIR", "value": "/mnt/models"},
                                {"name": "PVC_ROOT", "value": "/mnt/pvc"},
                                {"name": "MODELDEPLOY_TRACK", "value": "stable"},
                                {"name": "MODEL_VERSION", "value": "aaaaaaaaaaaa"},
                                {"name": "TERMINATION_LOG", "value": "/dev/termination-log"},
                                {"name": "MODEL_NAMESPACE", "value": "default"},
                                {"name": "GRPC_PORT", "value": "8081"},
                            ],
                            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
                            "startupProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 120,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 3,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 2,
                                "successThreshold": 1,
                            },
                            "lifecycle": {"preStop": {"sleep": {"seconds": 10}}},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 1000,
                                "runAsGroup": 1000,
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [
                                {"name": "model-dir", "mountPath": "/mnt/models"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "model-dir", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 45,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": key,
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {
                                "matchLabels": {**SELECTOR, "modeldeploy.io/track": "stable"}
                            },
                            "matchLabelKeys": ["pod-template-hash"],
                        }
                        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                    ],
                },
            },
        },
    }


def test_stable_deployment_golden(settings: OperatorSettings) -> None:
    md = make_md(model={"storageUri": "s3://models/iris/v1/model.joblib", "sha256": SHA})
    assert _dep(md, "stable", settings) == with_template_hash(golden_stable_deployment())


def with_template_hash(dep: dict[str, Any]) -> dict[str, Any]:
    """The golden template plus the digest of itself, as builders adds it last."""
    template = dep["spec"]["template"]
    template["metadata"]["annotations"]["modeldeploy.io/template-hash"] = builders.template_hash(
        template
    )
    return dep


def test_template_hash_follows_the_pod_template_only(settings: OperatorSettings) -> None:
    def hash_of(replicas: int, uri: str) -> str:
        md = make_md(model={"storageUri": uri}, replicas=replicas)
        dep = _dep(md, "stable", settings)
        value: str = dep["spec"]["template"]["metadata"]["annotations"][
            "modeldeploy.io/template-hash"
        ]
        return value

    first = hash_of(2, "s3://m/v1.joblib")
    assert len(first) == 16
    assert hash_of(5, "s3://m/v1.joblib") == first  # scaling is not a new template
    assert hash_of(2, "s3://m/v2.joblib") != first  # a new model is


def test_canary_deployment_differs_only_in_track_model_and_replicas(
    settings: OperatorSettings,
) -> None:
    md = make_md(
        model={"storageUri": "s3://models/iris/v1/model.joblib", "sha256": SHA},
        canary={
            "storageUri": "gs://models/iris/v2/model.skops",
            "format": "skops",
            "trafficPercent": 25,
        },
    )
    canary = _dep(md, "canary", settings)
    expected = golden_stable_deployment()
    track = {**LABELS, "modeldeploy.io/track": "canary"}
    expected["metadata"]["name"] = "iris-canary"
    expected["metadata"]["labels"] = track
    expected["spec"]["replicas"] = 1
    expected["spec"]["selector"]["matchLabels"]["modeldeploy.io/track"] = "canary"
    expected["spec"]["template"]["metadata"]["labels"] = track
    for spread in expected["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        spread["labelSelector"]["matchLabels"]["modeldeploy.io/track"] = "canary"
    env = expected["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {
        "STORAGE_URI": "gs://models/iris/v2/model.skops",
        "MODEL_FORMAT": "skops",
        "MODEL_SHA256": "",  # the canary's own digest, not the stable one
        "MODELDEPLOY_TRACK": "canary",
        "MODEL_VERSION": "canary",
    }
    for e in env:
        e["value"] = values.get(e["name"], e["value"])
    assert canary == with_template_hash(expected)


def test_canary_inherits_the_stable_format(settings: OperatorSettings) -> None:
    md = make_md(
        model={"storageUri": "s3://m/v1.skops", "format": "skops"},
        canary={"storageUri": "s3://m/v2.skops", "trafficPercent": 10},
    )
    env = {e["name"]: e["value"] for e in _container(_dep(md, "canary", settings))["env"]}
    assert env["MODEL_FORMAT"] == "skops"


def test_each_track_gets_its_own_profile_uri_and_a_server_env_entry_still_wins(
    settings: OperatorSettings,
) -> None:
    md = make_md(
        model={"storageUri": "s3://m/v1.joblib", "profileUri": "s3://m/v1.profile.json"},
        canary={"storageUri": "s3://m/v2.joblib", "trafficPercent": 10},
    )
    stable = _container(_dep(md, "stable", settings))["env"]
    assert {"name": "PROFILE_URI", "value": "s3://m/v1.profile.json"} in stable
    # The canary serves another model: the stable profile would measure it against the wrong
    # reference, so without its own profileUri it has none (the server looks beside its model).
    assert "PROFILE_URI" not in {e["name"] for e in _container(_dep(md, "canary", settings))["env"]}
    golden = _container(_dep(make_md(model={"storageUri": "s3://m/v1.joblib"}), "stable", settings))
    assert [e for e in stable if e["name"] != "PROFILE_URI"] == golden["env"]

    pinned = make_md(
        model={"storageUri": "s3://m/v1.joblib", "profileUri": "s3://m/a.json"},
        server={"env": [{"name": "PROFILE_URI", "value": "s3://m/b.json"}]},
    )
    names = [(e["name"], e["value"]) for e in _container(_dep(pinned, "stable", settings))["env"]]
    profiles = [value for name, value in names if name == "PROFILE_URI"]
    assert profiles == ["s3://m/a.json", "s3://m/b.json"]  # the later entry is the one k8s uses


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def test_pvc_is_mounted_read_only_under_pvc_root(settings: OperatorSettings) -> None:
    md = make_md(model={"storageUri": "pvc://models-claim/iris/v1/model.joblib"})
    dep = _dep(md, "stable", settings)
    pod = dep["spec"]["template"]["spec"]
    assert {
        "name": "model-pvc",
        "persistentVolumeClaim": {"claimName": "models-claim", "readOnly": True},
    } in pod["volumes"]
    assert {"name": "model-pvc", "mountPath": "/mnt/pvc/models-claim", "readOnly": True} in (
        _container(dep)["volumeMounts"]
    )


def test_s3_credentials_come_from_the_secret_with_env_from(settings: OperatorSettings) -> None:
    md = make_md(credentials={"secretName": "s3-creds"})
    c = _container(_dep(md, "stable", settings))
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in {e["name"] for e in c["env"]}


def test_gcs_credentials_mount_the_key_file(settings: OperatorSettings) -> None:
    md = make_md(
        model={"storageUri": "gs://bucket/iris.joblib"},
        credentials={"secretName": "gcs-creds", "serviceAccountName": "model-reader"},
    )
    dep = _dep(md, "stable", settings)
    c = _container(dep)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == (
        "/var/secrets/gcs/gcloud-application-credentials.json"
    )
    assert {"name": "gcs-credentials", "mountPath": "/var/secrets/gcs", "readOnly": True} in (
        c["volumeMounts"]
    )
    volume = next(
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "gcs-credentials"
    )
    assert volume["secret"] == {
        "secretName": "gcs-creds",
        "items": [
            {
                "key": "gcloud-application-credentials.json",
                "path": "gcloud-application-credentials.json",
            }
        ],
    }
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "model-reader"


def test_server_overrides_and_resources_are_passed_through(settings: OperatorSettings) -> None:
    md = make_md(
        server={
            "image": "registry.local/server:1.2.3",
            "imagePullPolicy": "Always",
            "env": [{"name": "MAX_BATCH_SIZE", "value": "32"}],
        },
        resources={"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    )
    c = _container(_dep(md, "stable", settings))
    assert c["image"] == "registry.local/server:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    assert c["env"][-1] == {"name": "MAX_BATCH_SIZE", "value": "32"}
    assert c["resources"] == {"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def test_settings_shape_probe_budget_and_drain(settings: OperatorSettings) -> None:
    tuned = settings.model_copy(
        update={"startup_budget_seconds": 120, "drain_seconds": 3, "model_dir_size_limit": "5Gi"}
    )
    dep = _dep(make_md(), "stable", tuned)
    c = _container(dep)
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 120
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == 3
    assert dep["spec"]["template"]["spec"]["volumes"][0] == {
        "name": "model-dir",
        "emptyDir": {"sizeLimit": "5Gi"},
    }


@pytest.mark.parametrize(
    ("track", "name", "selector"),
    [
        (None, "iris", {"app.kubernetes.io/name": "iris", "app.kubernetes.io/instance": "iris"}),
        (
            "canary",
            "iris-canary",
            {
                "app.kubernetes.io/name": "iris",
                "app.kubernetes.io/instance": "iris",
                "modeldeploy.io/track": "canary",
            },
        ),
    ],
)
def test_service_golden(track: str | None, name: str, selector: dict[str, str]) -> None:
    labels = {**LABELS, **({"modeldeploy.io/track": track} if track else {})}
    assert builders.service(make_md(), track) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": labels,
            "ownerReferences": [OWNER_REF],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": 8081,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


def test_hpa_golden_targets_the_modeldeployment() -> None:
    md = make_md(
        autoscaling={"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70}
    )
    assert builders.hpa(md) == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "iris",
            "namespace": "default",
            "labels": LABELS,
            "ownerReferences": [OWNER_REF],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "modeldeploy.io/v1alpha1",
                "kind": "ModelDeployment",
                "name": "iris",
            },
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def test_desired_children_follow_the_spec(settings: OperatorSettings) -> None:
    def names(**spec: Any) -> list[str]:
        return [
            f"{m['kind']}/{m['metadata']['name']}"
            for m in builders.desired_children(make_md(**spec), settings)
        ]

    assert names() == [
        "Deployment/iris-stable",
        "Service/iris",
        "Service/iris-stable",
        "PodDisruptionBudget/iris-stable",
    ]
    assert "PodDisruptionBudget/iris-stable" not in names(disruptionBudget={"enabled": False})
    full = names(
        canary={"storageUri": "s3://m/v2", "trafficPercent": 10},
        autoscaling={"maxReplicas": 4},
        traffic={"gateway": {"parentRefs": [{"name": "gw"}]}},
    )
    assert full == [
        "Deployment/iris-stable",
        "Service/iris",
        "Service/iris-stable",
        "PodDisruptionBudget/iris-stable",
        "Deployment/iris-canary",
        "Service/iris-canary",
        "PodDisruptionBudget/iris-canary",
        "HorizontalPodAutoscaler/iris",
        "HTTPRoute/iris",
    ]
    possible = {f"{k}/{n}" for k, n in builders.possible_children("iris", "default")}
    assert set(full) <= possible
    with_auth = names(auth={}, canary={"storageUri": "s3://m/v2", "trafficPercent": 10})
    assert with_auth[-2:] == [
        "ServiceAccount/iris-server",
        "ClusterRoleBinding/modeldeploy-auth.default.iris",
    ]
    assert set(full) | set(with_auth) == possible


def test_replicas_are_split_between_the_tracks(settings: OperatorSettings) -> None:
    md = make_md(replicas=10, canary={"storageUri": "s3://m/v2", "trafficPercent": 30})
    reps = {
        m["metadata"]["name"]: m["spec"].get("replicas")
        for m in builders.desired_children(md, settings)
        if m["kind"] == "Deployment"
    }
    assert reps == {"iris-stable": 7, "iris-canary": 3}


def test_pod_selector_covers_both_tracks() -> None:
    assert builders.pod_selector("iris") == (
        "app.kubernetes.io/instance=iris,app.kubernetes.io/name=iris"
    )
