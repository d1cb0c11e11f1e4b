"""kube.py and kubeauth against the real API server, with the admin's client certificate.

The operator itself runs with a ServiceAccount token (every other test here); this covers the
other way users authenticate (kind's and this cluster's admin kubeconfig: client certificate
data) and the REST layer's verbs and errors as the API server really answers them.
"""

from __future__ import annotations

import uuid

import pytest
from modeldeploy_operator import cli, kubeauth
from modeldeploy_operator.errors import ApiError
from modeldeploy_operator.kube import Kube
from operator_harness import Cluster

pytestmark = pytest.mark.timeout(180)


def service(ns: str, port: int = 80, label: str = "ours") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": ns, "labels": {"owner": label}},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }


def test_apply_get_take_back_and_delete_with_client_certificate(
    cluster: Cluster, namespace: str
) -> None:
    creds = kubeauth.load(str(cluster.kubeconfig))
    assert creds.cert_pem or creds.cert_file or creds.bearer()  # some way of saying who we are
    kube = Kube(creds)

    applied = kube.apply(service(namespace))
    managers = {m["manager"] for m in applied["metadata"]["managedFields"]}
    assert "modeldeploy-operator" in managers
    assert kube.get("Service", namespace, "s")["spec"]["ports"][0]["port"] == 80  # type: ignore[index]

    # Someone changes an owned field by hand: a forced apply takes it back.
    cluster.kubectl("label", "service", "s", "-n", namespace, "owner=theirs", "--overwrite")
    taken = kube.apply(service(namespace))
    assert taken["metadata"]["labels"]["owner"] == "ours"

    # The API server's validation comes back as an ApiError naming the field.
    with pytest.raises(ApiError) as err:
        kube.apply(service(namespace, port=0))
    assert err.value.status == 422
    assert "spec.ports[0].port" in str(err.value)

    # Delete only the object we decided to delete: a stale uid leaves it alone.
    with pytest.raises(ApiError) as err:
        kube.delete("Service", namespace, "s", "00000000-0000-0000-0000-000000000000")
    assert err.value.status == 409
    assert kube.get("Service", namespace, "s") is not None
    kube.delete("Service", namespace, "s", applied["metadata"]["uid"])
    kube.delete("Service", namespace, "s", None)  # already gone: not an error
    assert kube.list_pods(namespace, "app=none") == []


def test_events_are_posted_on_the_object(cluster: Cluster, namespace: str) -> None:
    kube = Kube(kubeauth.load(str(cluster.kubeconfig)))
    md = {"metadata": {"name": "m", "namespace": namespace, "uid": str(uuid.uuid4())}}
    kube.event(md, "Normal", "KubeClientTest", "posted by test_cluster_kube_client")
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=KubeClientTest", "-o", "name"
    ).stdout
    assert out.strip(), "the Event was not posted"


def test_kubectl_plugin_answers_not_found_with_the_admin_kubeconfig(
    cluster: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["status", "absent", "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)])
    assert rc == 1
    assert f"modeldeployment {namespace}/absent not found" in capsys.readouterr().err


def test_a_token_the_api_server_refuses_is_an_unauthorized_api_error(cluster: Cluster) -> None:
    creds = kubeauth.load(str(cluster.kubeconfig))
    refused = kubeauth.Credentials(
        server=creds.server, ca_pem=creds.ca_pem, ca_file=creds.ca_file, token="not-a-token"
    )
    with pytest.raises(ApiError) as err:
        Kube(refused).get("Service", "default", "kubernetes")
    assert (err.value.status, err.value.reason) == (401, "Unauthorized")
