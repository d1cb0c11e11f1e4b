"""Assertions of the operator's documented contract (DESIGN.md "What the operator creates" and
docs/architecture.md) against what a real API server holds, shared by several test modules."""

from __future__ import annotations

from typing import Any

from operator_harness import (
    GROUP,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_TRACK,
    SERVER_IMAGE,
    VERSION,
    Cluster,
    Obj,
    condition,
    container,
    env_of,
)


def tracks_of(md: Obj) -> list[str]:
    return ["stable", "canary"] if md["spec"].get("canary") else ["stable"]


def uri_of(md: Obj, track: str) -> str:
    spec = md["spec"]
    uri: str = spec["canary"]["storageUri"] if track == "canary" else spec["model"]["storageUri"]
    return uri


def assert_owned_by(child: Obj, md: Obj) -> None:
    refs = child["metadata"].get("ownerReferences") or []
    mine = [r for r in refs if r.get("uid") == md["metadata"]["uid"]]
    where = f"{child.get('kind', '')} {child['metadata']['name']}"
    assert len(mine) == 1, f"{where}: expected one ownerReference to the ModelDeployment: {refs}"
    ref = mine[0]
    assert ref["kind"] == KIND, ref
    assert ref["apiVersion"] == f"{GROUP}/{VERSION}", ref
    assert ref["name"] == md["metadata"]["name"], ref
    assert ref.get("controller") is True, f"{where}: ownerReference is not the controller: {ref}"


def expected_labels(name: str, track: str | None) -> dict[str, str]:
    labels = {
        LABEL_NAME: name,
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: "predictor",
        LABEL_MANAGED_BY: "modeldeploy-operator",
    }
    if track:
        labels[LABEL_TRACK] = track
    return labels


def assert_labels(actual: dict[str, str] | None, want: dict[str, str], where: str) -> None:
    actual = actual or {}
    missing = {k: v for k, v in want.items() if actual.get(k) != v}
    assert not missing, f"{where}: labels {actual} lack {missing}"


def _security(deploy: Obj, c: Obj) -> dict[str, Any]:
    """The effective security settings (container overrides pod)."""
    pod_sc = deploy["spec"]["template"]["spec"].get("securityContext") or {}
    c_sc = c.get("securityContext") or {}
    merged = {**pod_sc, **c_sc}
    merged["seccompProfile"] = c_sc.get("seccompProfile") or pod_sc.get("seccompProfile")
    return merged


def assert_deployment(cluster: Cluster, namespace: str, md: Obj, track: str) -> Obj:
    name = md["metadata"]["name"]
    spec = md["spec"]
    d = cluster.deployment(namespace, f"{name}-{track}")
    where = f"Deployment {name}-{track}"
    assert_owned_by(d, md)
    labels = expected_labels(name, track)
    assert_labels(d["metadata"].get("labels"), labels, where)
    assert_labels(d["spec"]["template"]["metadata"].get("labels"), labels, f"{where} pod template")
    sel = d["spec"]["selector"].get("matchLabels") or {}
    assert sel.get(LABEL_TRACK) == track, f"{where}: selector must pick only its track: {sel}"
    assert sel.get(LABEL_INSTANCE) == name or sel.get(LABEL_NAME) == name, sel

    strategy = d["spec"].get("strategy") or {}
    assert strategy.get("type") == "RollingUpdate", strategy
    assert str((strategy.get("rollingUpdate") or {}).get("maxUnavailable")) in {"0", "0%"}, strategy

    c = container(d)
    server = spec.get("server") or {}
    assert c["image"] == server.get("image", SERVER_IMAGE), c["image"]
    assert ":" in c["image"], f"image without a tag: {c['image']}"
    assert not c["image"].endswith(":latest"), c["image"]
    ports = {p.get("name"): p for p in c.get("ports") or []}
    assert "http" in ports, f"{where}: no port named http: {c.get('ports')}"
    assert ports["http"]["containerPort"] == 8080, c.get("ports")

    for probe_name, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/ready"),
    ):
        probe = c.get(probe_name)
        assert probe, f"{where}: no {probe_name}"
        get = probe.get("httpGet") or {}
        assert get.get("path") == path, f"{where}: {probe_name} {probe}"
        assert get.get("port") in ("http", 8080), f"{where}: {probe_name} {probe}"
    startup = c["startupProbe"]
    budget = int(startup.get("failureThreshold", 3)) * int(startup.get("periodSeconds", 10))
    assert budget >= 120, f"{where}: startupProbe allows only {budget}s for a model download"

    sec = _security(d, c)
    assert sec.get("runAsNonRoot") is True, sec
    assert sec.get("runAsUser") == 1000, sec
    assert sec.get("readOnlyRootFilesystem") is True, sec
    assert sec.get("allowPrivilegeEscalation") is False, sec
    assert "ALL" in ((sec.get("capabilities") or {}).get("drop") or []), sec
    assert (sec.get("seccompProfile") or {}).get("type") == "RuntimeDefault", sec

    env = env_of(c)
    model = spec["model"]
    sha = model.get("sha256") or ""
    if track == "canary":
        sha = spec["canary"].get("sha256") or ""
    expected_env = {
        "MODEL_NAME": name,
        "STORAGE_URI": uri_of(md, track),
        "MODEL_FORMAT": (spec["canary"] if track == "canary" else model).get(
            "format", model.get("format", "sklearn")
        ),
        "MODEL_DIR": "/mnt/models",
        "PVC_ROOT": "/mnt/pvc",
        "MODELDEPLOY_TRACK": track,
        "TERMINATION_LOG": "/dev/termination-log",
        "MODEL_VERSION": sha[:12] if sha else track,
    }
    wrong = {k: (env.get(k), v) for k, v in expected_env.items() if env.get(k) != v}
    assert not wrong, f"{where}: env (got, want): {wrong}; all env: {env}"
    assert env.get("MODEL_SHA256", "") == sha, env

    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"].get("volumes") or []}
    for path in ("/mnt/models", "/tmp"):
        assert path in mounts, f"{where}: nothing mounted at {path}: {mounts}"
        assert "emptyDir" in volumes[mounts[path]], f"{where}: {path} is not an emptyDir"

    creds = (spec.get("credentials") or {}).get("secretName")
    if creds:
        refs = [(e.get("secretRef") or {}).get("name") for e in c.get("envFrom") or []]
        assert creds in refs, (
            f"{where}: Secret {creds} not attached with envFrom: {c.get('envFrom')}"
        )
    for kind, wanted in (spec.get("resources") or {}).items():
        got = (c.get("resources") or {}).get(kind) or {}
        for res, qty in (wanted or {}).items():
            assert str(got.get(res)) == str(qty), f"{where}: resources.{kind}.{res}: {got}"
    return d


def assert_services(cluster: Cluster, namespace: str, md: Obj) -> None:
    name = md["metadata"]["name"]
    for track in [None, *tracks_of(md)]:
        svc_name = f"{name}-{track}" if track else name
        svc = cluster.service(namespace, svc_name)
        where = f"Service {svc_name}"
        assert_owned_by(svc, md)
        assert_labels(svc["metadata"].get("labels"), expected_labels(name, None), where)
        sel = svc["spec"].get("selector") or {}
        want = {LABEL_NAME: name, LABEL_INSTANCE: name}
        if track:
            want[LABEL_TRACK] = track
        assert sel == want, f"{where}: selector {sel}, want {want}"
        ports = svc["spec"]["ports"]
        assert any(p["port"] == 80 and p.get("targetPort") in ("http", 8080) for p in ports), ports


def assert_hpa(cluster: Cluster, namespace: str, md: Obj) -> None:
    name = md["metadata"]["name"]
    hpas = {h["metadata"]["name"]: h for h in cluster.hpas(namespace)}
    auto = md["spec"].get("autoscaling")
    if not auto:
        assert name not in hpas, f"HPA {name} exists but spec.autoscaling is not set"
        return
    hpa = hpas.get(name)
    assert hpa, f"no HPA {name} (have {list(hpas)})"
    assert_owned_by(hpa, md)
    ref = hpa["spec"]["scaleTargetRef"]
    assert ref == {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name}, ref
    assert hpa["spec"]["minReplicas"] == auto["minReplicas"], hpa["spec"]
    assert hpa["spec"]["maxReplicas"] == auto["maxReplicas"], hpa["spec"]
    if "targetCPUUtilizationPercentage" in auto:
        metrics = hpa["spec"].get("metrics") or []
        cpu = [m for m in metrics if (m.get("resource") or {}).get("name") == "cpu"]
        assert cpu, metrics
        target = cpu[0]["resource"]["target"]
        assert target.get("averageUtilization") == auto["targetCPUUtilizationPercentage"], target


def assert_status(cluster: Cluster, namespace: str, md: Obj) -> None:
    name = md["metadata"]["name"]
    status = md.get("status") or {}
    assert status.get("url") == f"http://{name}.{namespace}.svc.cluster.local", status.get("url")
    total = md["spec"].get("replicas")
    if total is not None:
        assert status.get("replicas") == total, status
    assert status.get("readyReplicas") == status.get("replicas"), status
    ready = condition(md, "Ready")
    assert ready, f"no Ready condition: {status}"
    assert ready["status"] == "True", ready
    assert ready.get("reason"), ready
    degraded = condition(md, "Degraded")
    assert degraded is None or degraded["status"] == "False", degraded
    selector = status.get("selector")
    assert selector, f"status.selector empty (the scale subresource needs it): {status}"
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
    assert len(pods) == status.get("replicas"), (selector, [p.metadata.name for p in pods])
    stable = status.get("stable") or {}
    assert stable.get("storageUri") == md["spec"]["model"]["storageUri"], stable
    if md["spec"].get("canary"):
        canary = status.get("canary") or {}
        assert canary.get("storageUri") == md["spec"]["canary"]["storageUri"], canary
        assert stable.get("replicas", 0) + canary.get("replicas", 0) == status["replicas"], status


def assert_children(cluster: Cluster, namespace: str, md: Obj) -> None:
    for track in tracks_of(md):
        assert_deployment(cluster, namespace, md, track)
    assert_services(cluster, namespace, md)
    assert_hpa(cluster, namespace, md)
    assert_status(cluster, namespace, md)


def effective_percent(canary: int, total: int) -> float:
    return 100.0 * canary / total if total else 0.0


def assert_split(cluster: Cluster, namespace: str, md: Obj, total: int, percent: int) -> None:
    """The canary arithmetic: replicas divided in proportion, at least one canary pod while the
    percent is above 0, and status reports the effective percentage."""
    name = md["metadata"]["name"]
    stable = cluster.deployment(namespace, f"{name}-stable")["spec"]["replicas"]
    canary = cluster.deployment(namespace, f"{name}-canary")["spec"]["replicas"]
    assert stable + canary == total, (stable, canary, total)
    if percent > 0:
        assert canary >= 1, f"canary has {canary} replicas at {percent}%"
    exact = total * percent / 100
    assert abs(canary - exact) <= 1, f"{canary} canary of {total} is not ~{percent}%"
    status = md.get("status") or {}
    reported = (status.get("canary") or {}).get("trafficPercent")
    assert reported is not None, f"status.canary.trafficPercent missing: {status}"
    assert abs(float(reported) - effective_percent(canary, total)) <= 1, (
        f"status says {reported}% but {canary}/{total} replicas is "
        f"{effective_percent(canary, total):.1f}%"
    )
    assert (status.get("stable") or {}).get("replicas") == stable, status
    assert (status.get("canary") or {}).get("replicas") == canary, status
