"""How a storageUri reaches the server, as the API server stores it: a pvc:// claim mounted
read-only under /mnt/pvc/<claim>, GCS credentials mounted from the Secret with
GOOGLE_APPLICATION_CREDENTIALS pointing at them, S3 credentials through envFrom; and a claim
that does not exist is reported, not hidden (the real scheduler refuses the pods)."""

from __future__ import annotations

from cluster_contract import assert_deployment
from operator_harness import (
    Cluster,
    condition,
    container,
    env_of,
    iris_spec,
    md_manifest,
    wait_until,
)


def test_pvc_uri_is_mounted_read_only_and_a_missing_claim_is_reported(
    cluster: Cluster, namespace: str
) -> None:
    spec = iris_spec(replicas=1, model={"storageUri": "pvc://models-claim/iris/v1.joblib"})
    cluster.create_md(namespace, md_manifest("onpvc", spec))
    d = wait_until(
        lambda: cluster.deployments(namespace, "onpvc"), "the operator to create the Deployment"
    )[0]
    md = cluster.get_md(namespace, "onpvc")
    assert_deployment(cluster, namespace, md, "stable")
    pod_spec = d["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod_spec.get("volumes") or []}
    pvc = [v for v in vols.values() if "persistentVolumeClaim" in v]
    assert len(pvc) == 1, vols
    assert pvc[0]["persistentVolumeClaim"] == {"claimName": "models-claim", "readOnly": True}
    c = container(d)
    mounts = [m for m in c.get("volumeMounts") or [] if m["name"] == pvc[0]["name"]]
    assert mounts == [
        {"name": pvc[0]["name"], "mountPath": "/mnt/pvc/models-claim", "readOnly": True}
    ], c.get("volumeMounts")
    assert env_of(c)["PVC_ROOT"] == "/mnt/pvc"

    # the claim does not exist: kube-scheduler refuses the pod; the operator must say so
    def reported() -> str | None:
        md = cluster.get_md(namespace, "onpvc")
        ready = condition(md, "Ready")
        texts = " ".join(
            str(c.get("message", ""))
            for c in (md.get("status") or {}).get("conditions") or []
            if c.get("type") in {"Degraded", "Progressing", "Ready"}
        )
        if ready and ready["status"] != "True" and "models-claim" in texts:
            return texts
        return None

    wait_until(reported, "status to name the missing claim models-claim")


def test_gcs_credentials_are_mounted_and_s3_credentials_attached(
    cluster: Cluster, namespace: str
) -> None:
    gcs = iris_spec(
        replicas=1,
        model={"storageUri": "gs://models/iris/v1.joblib"},
        credentials={"secretName": "gcs-key"},
    )
    s3 = iris_spec(replicas=1, credentials={"secretName": "s3-creds"})
    cluster.create_md(namespace, md_manifest("ongcs", gcs))
    cluster.create_md(namespace, md_manifest("ons3", s3))
    d_gcs = wait_until(lambda: cluster.deployments(namespace, "ongcs"), "the GCS Deployment")[0]
    d_s3 = wait_until(lambda: cluster.deployments(namespace, "ons3"), "the S3 Deployment")[0]

    c = container(d_gcs)
    env = env_of(c)
    assert env.get("GOOGLE_APPLICATION_CREDENTIALS", "").startswith("/var/secrets/gcs/"), env
    vols = {v["name"]: v for v in d_gcs["spec"]["template"]["spec"].get("volumes") or []}
    secret_vols = [
        v for v in vols.values() if (v.get("secret") or {}).get("secretName") == "gcs-key"
    ]
    assert len(secret_vols) == 1, vols
    mount = next(m for m in c["volumeMounts"] if m["name"] == secret_vols[0]["name"])
    assert mount["mountPath"].rstrip("/") == "/var/secrets/gcs", mount
    assert mount.get("readOnly") is True, mount
    key_file = env["GOOGLE_APPLICATION_CREDENTIALS"].rsplit("/", 1)[1]
    assert key_file == "gcloud-application-credentials.json", env

    c3 = container(d_s3)
    assert {"secretRef": {"name": "s3-creds"}} in (c3.get("envFrom") or []), c3.get("envFrom")
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(c3)
