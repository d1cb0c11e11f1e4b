"""An unchanged ModelDeployment causes no writes: the operator compares desired with observed
state and writes only the difference. Counted two ways for a minute after convergence:
the API server's audit log (every mutating request the operator's ServiceAccount sends into the
namespace, no-op applies included) and watches on the ModelDeployment and its children (every
resourceVersion change, whoever made it)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from cluster_contract import assert_children
from kubernetes import watch
from operator_harness import (
    Cluster,
    OperatorProcess,
    eventually,
    iris_spec,
    md_manifest,
    operator_writes,
    ready_md,
    wait_md_ready,
    wait_until,
)

QUIET_SECONDS = float(os.environ.get("MODELDEPLOY_TEST_QUIET_SECONDS", "60"))


class ChangeRecorder:
    """Streams every change to a namespace's ModelDeployments, Deployments, Services and HPAs
    from the moment `start()` lists them."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.changes: list[str] = []
        self._watches: list[watch.Watch] = []

    def _stream(self, kind: str, fn: Callable[..., Any], *args: Any, rv: str) -> None:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        self._watches.append(w)
        try:
            for ev in w.stream(  # type: ignore[no-untyped-call]
                fn, *args, resource_version=rv, timeout_seconds=int(QUIET_SECONDS) + 60
            ):
                obj = ev["object"]
                if isinstance(obj, dict):
                    name, ver = obj["metadata"]["name"], obj["metadata"]["resourceVersion"]
                else:
                    name, ver = obj.metadata.name, obj.metadata.resource_version
                self.changes.append(f"{ev['type']} {kind}/{name} rv={ver}")
        except Exception as e:  # a broken watch must show up, not hide changes
            self.changes.append(f"watch on {kind} failed: {e!r}")

    def start(self) -> None:
        c, ns = self.cluster, self.namespace
        md_args = ("modeldeploy.io", "v1alpha1", ns, "modeldeployments")
        sources: list[tuple[str, Callable[..., Any], tuple[Any, ...], str]] = [
            (
                "deployment",
                c.apps.list_namespaced_deployment,
                (ns,),
                c.apps.list_namespaced_deployment(ns).metadata.resource_version,
            ),
            (
                "service",
                c.core.list_namespaced_service,
                (ns,),
                c.core.list_namespaced_service(ns).metadata.resource_version,
            ),
            (
                "hpa",
                c.autoscaling.list_namespaced_horizontal_pod_autoscaler,
                (ns,),
                c.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                    ns
                ).metadata.resource_version,
            ),
            (
                "md",
                c.custom.list_namespaced_custom_object,
                md_args,
                c.custom.list_namespaced_custom_object(*md_args)["metadata"]["resourceVersion"],
            ),
        ]
        for kind, fn, args, rv in sources:
            threading.Thread(
                target=self._stream, args=(kind, fn, *args), kwargs={"rv": rv}, daemon=True
            ).start()

    def stop(self) -> None:
        for w in self._watches:
            w.stop()  # type: ignore[no-untyped-call]


def _deployments_settled(cluster: Cluster, namespace: str, name: str) -> None:
    for d in cluster.deployments(namespace, name):
        st = d.get("status") or {}
        assert st.get("observedGeneration") == d["metadata"]["generation"], st
        assert st.get("updatedReplicas") == d["spec"]["replicas"], st
        assert st.get("availableReplicas") == d["spec"]["replicas"], st


def test_unchanged_modeldeployment_causes_no_writes_for_a_minute(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    audit = cluster.audit_log
    created_at = audit.stat().st_size if audit else 0
    spec = iris_spec(
        replicas=2, canary={"storageUri": "s3://models/iris/v2/", "trafficPercent": 50}
    )
    cluster.create_md(namespace, md_manifest("quiet", spec))
    wait_md_ready(cluster, namespace, "quiet")
    eventually(
        lambda: assert_children(cluster, namespace, ready_md(cluster, namespace, "quiet")),
        "the children",
    )
    eventually(
        lambda: _deployments_settled(cluster, namespace, "quiet"),
        "the Deployment controller's status writes to settle",
    )
    if audit is not None:  # the counter works: it saw the operator create the children
        assert operator_writes(audit, created_at, namespace), "the audit log shows no writes"

    offset = audit.stat().st_size if audit else 0
    recorder = ChangeRecorder(cluster, namespace)
    recorder.start()
    time.sleep(QUIET_SECONDS)
    quiet_changes = list(recorder.changes)
    writes = operator_writes(audit, offset, namespace) if audit is not None else []

    # the watches work: a change made now is seen
    cluster.kubectl("annotate", "-n", namespace, "md/quiet", "modeldeploy-test/poke=1")
    wait_until(
        lambda: any("md/quiet" in c for c in recorder.changes[len(quiet_changes) :]),
        "the watch to see a deliberate change",
        30,
    )
    recorder.stop()

    assert operator.running(), "the operator died during the quiet minute"
    assert writes == [], f"the operator wrote {len(writes)} times, nothing changed: {writes}"
    assert quiet_changes == [], f"objects changed while nothing was asked: {quiet_changes}"
