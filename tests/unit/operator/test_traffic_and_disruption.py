"""Golden dicts for the HTTPRoute (exact weights, header pins), the PodDisruptionBudget per track
and the topology spread, and the status the Gateway's answers lead to."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import OWNER_REF, make_md
from modeldeploy_operator import builders
from modeldeploy_operator.status import Observed, compute_status
from modeldeploy_operator.tracks import plan_tracks

GATEWAY = {
    "gateway": {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "web"}],
        "hostnames": ["iris.example.test"],
    }
}
CANARY = {"storageUri": "s3://m/v2.joblib", "trafficPercent": 10}


def backend(name: str, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": 80, "weight": weight}


def pin(track: str) -> dict[str, Any]:
    return {
        "matches": [
            {
                "path": {"type": "PathPrefix", "value": "/"},
                "headers": [{"type": "Exact", "name": "X-Modeldeploy-Track", "value": track}],
            }
        ],
        "backendRefs": [backend(f"iris-{track}", 1)],
    }


def route(md_spec: dict[str, Any], ready: set[str]) -> dict[str, Any]:
    md = make_md(**md_spec)
    return builders.httproute(md, plan_tracks(md), frozenset(ready))


def test_httproute_golden_with_a_ready_canary() -> None:
    got = route({"replicas": 10, "canary": CANARY, "traffic": GATEWAY}, {"stable", "canary"})
    assert got == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "iris",
            "namespace": "default",
            "labels": {
                "app.kubernetes.io/name": "iris",
                "app.kubernetes.io/instance": "iris",
                "app.kubernetes.io/component": "predictor",
                "app.kubernetes.io/managed-by": "modeldeploy-operator",
            },
            "ownerReferences": [OWNER_REF],
        },
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "public",
                    "namespace": "gateways",
                    "sectionName": "web",
                }
            ],
            "hostnames": ["iris.example.test"],
            "rules": [
                pin("canary"),
                pin("stable"),
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [backend("iris-stable", 90), backend("iris-canary", 10)],
                },
            ],
        },
    }


def test_a_canary_without_ready_pods_gets_no_weight() -> None:
    got = route({"replicas": 10, "canary": CANARY, "traffic": GATEWAY}, {"stable"})
    assert got["spec"]["rules"][-1]["backendRefs"] == [
        backend("iris-stable", 100),
        backend("iris-canary", 0),
    ]


def test_without_canary_only_stable_is_routed_and_the_namespace_defaults() -> None:
    traffic = {"gateway": {"parentRefs": [{"name": "public"}]}}
    got = route({"traffic": traffic}, {"stable"})
    assert got["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "default",
        }
    ]
    assert "hostnames" not in got["spec"]
    assert got["spec"]["rules"] == [
        pin("stable"),
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [backend("iris-stable", 100)],
        },
    ]


@pytest.mark.parametrize(
    ("budget", "limit"),
    [
        (None, {"maxUnavailable": 1}),
        ({"maxUnavailable": "25%"}, {"maxUnavailable": "25%"}),
        ({"minAvailable": 2}, {"minAvailable": 2}),
    ],
)
def test_pdb_per_track(budget: dict[str, Any] | None, limit: dict[str, Any]) -> None:
    md = make_md(canary=CANARY, disruptionBudget=budget)
    for t in plan_tracks(md).active:
        pdb = builders.pod_disruption_budget(md, t)
        assert pdb is not None
        assert pdb["metadata"]["name"] == f"iris-{t.name}"
        assert pdb["spec"] == {
            **limit,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "iris",
                    "app.kubernetes.io/instance": "iris",
                    "modeldeploy.io/track": t.name,
                }
            },
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        }


def test_pdb_can_be_turned_off() -> None:
    md = make_md(disruptionBudget={"enabled": False})
    assert builders.pod_disruption_budget(md, plan_tracks(md).stable) is None


def test_topology_spread_is_overridable_and_can_be_turned_off() -> None:
    custom = make_md(topologySpread=[{"topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}])
    assert builders.topology_spread(custom, "stable") == [
        {
            "maxSkew": 1,
            "topologyKey": "rack",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "iris",
                    "app.kubernetes.io/instance": "iris",
                    "modeldeploy.io/track": "stable",
                }
            },
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]
    off = make_md(topologySpread=[])
    assert builders.topology_spread(off, "stable") == []


def available(name: str, n: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 1},
        "spec": {"replicas": n},
        "status": {
            "observedGeneration": 1,
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
        },
    }


def route_with(cond_type: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "public", "namespace": "gateways", "sectionName": "web"},
                    "conditions": [
                        {
                            "type": cond_type,
                            "status": status,
                            "reason": reason,
                            "message": message,
                            "observedGeneration": 2,
                        }
                    ],
                }
            ]
        },
    }


def conditions_of(md_spec: dict[str, Any], **obs: Any) -> dict[str, Any]:
    md = make_md(**md_spec)
    st = compute_status(
        md,
        Observed(deployments={"stable": available("iris-stable", 2)}, **obs),
        {},
        "2026-12-02T00:00:00Z",
    )
    return {c["type"]: c for c in st["conditions"]} | {"_status": st}


def test_urls_with_a_gateway() -> None:
    st = conditions_of({"traffic": GATEWAY})["_status"]
    assert st["url"] == "http://iris.example.test"
    assert st["address"] == "http://iris.default.svc.cluster.local"
    wild = {"gateway": {"parentRefs": [{"name": "g"}], "hostnames": ["*.example.test"]}}
    assert conditions_of({"traffic": wild})["_status"]["url"] == st["address"]


def test_a_rejected_route_is_degraded_in_the_gateways_words_and_still_ready() -> None:
    conds = conditions_of(
        {"traffic": GATEWAY},
        route=route_with("Accepted", "False", "NoMatchingParent", "no listener named web"),
    )
    assert conds["Ready"]["status"] == "True"  # in-cluster serving is fine
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "RouteNotAccepted"
    msg = conds["Degraded"]["message"]
    assert "Gateway gateways/public (listener web) did not accept HTTPRoute iris" in msg
    assert "NoMatchingParent: no listener named web" in msg


def test_unresolved_refs_and_a_missing_gateway_api() -> None:
    conds = conditions_of(
        {"traffic": GATEWAY},
        route=route_with("ResolvedRefs", "False", "BackendNotFound", "service iris-stable"),
    )
    assert conds["Degraded"]["reason"] == "RouteRefsUnresolved"
    conds = conditions_of({"traffic": GATEWAY}, route_api_missing=True)
    assert conds["Degraded"]["reason"] == "GatewayAPIMissing"
    assert "install the Gateway API CRDs" in conds["Degraded"]["message"]


def test_an_accepted_route_or_a_stale_rejection_is_no_problem() -> None:
    ok = conditions_of({"traffic": GATEWAY}, route=route_with("Accepted", "True", "Accepted", ""))
    assert ok["Degraded"]["status"] == "False"
    stale = route_with("Accepted", "False", "NoMatchingParent", "old")
    stale["metadata"]["generation"] = 3  # the Gateway has not looked at the current route yet
    assert conditions_of({"traffic": GATEWAY}, route=stale)["Degraded"]["status"] == "False"
