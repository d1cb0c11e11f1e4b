"""spec.traffic.gateway against a real Gateway API implementation: the operator's HTTPRoute is
accepted by Traefik, Traefik's weighted round robin gives the canary exactly its percent of real
requests to real model servers, a percent change takes effect within seconds, the header pin
reaches one track, and a Gateway that refuses the route shows as Degraded while the in-cluster
Service split keeps working.

Traefik and a stable and a canary `modeldeploy-server` run inside a network namespace of this
module's own (gateway_harness.py says why and how); kwok's fake pods get the addresses of those
servers, so the EndpointSlices Traefik reads come from the real endpointslice controller.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from cluster_contract import assert_owned_by, assert_services, assert_split
from gateway_harness import (
    GATEWAY_GROUP,
    TRACK_HEADER,
    GatewayTools,
    ModelServer,
    NetNamespace,
    PodAddresses,
    Tally,
    TraefikGateway,
    cluster_kubectl,
    converge_share,
    expected_rules,
    gateway_object,
    gateway_tools,
    install_gateway_api,
    model_servers,
    predict_through,
    ready_endpoints,
    route_parent_conditions,
    rules_of,
    uninstall_gateway_api,
    wait_route,
    wait_traefik_runs,
)
from kubernetes import client as k8s
from operator_harness import (
    CONVERGE_S,
    LABEL_MANAGED_BY,
    Cluster,
    Obj,
    OperatorProcess,
    condition,
    eventually,
    md_manifest,
    wait_md_ready,
    wait_until,
)

MODEL = "iris"  # the ModelDeployment's name, hence the model name in /v1/models/<name>
CANARY_URI = "s3://models/iris/v2/"
CRASHING_URI = "s3://models/kwok-crash/iris/v2/"  # kwok's stages never let such a pod be Ready
# Convergence deadline for a weight change to show in Traefik's answers: generous on purpose
# (only a bound for the test; the measured seconds are printed).
STEP_DEADLINE_S = 30
REFUSED = ("RouteNotAccepted", "RouteRefsUnresolved")


@pytest.fixture(scope="module")
def tools() -> GatewayTools:
    return gateway_tools()


@pytest.fixture(scope="module")
def netns() -> Iterator[NetNamespace]:
    if os.geteuid() != 0:
        pytest.skip("the Gateway tests create a network namespace: they need root")
    ns = NetNamespace()
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()


@pytest.fixture(scope="module")
def servers(
    netns: NetNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelServer]]:
    with model_servers(netns, MODEL, tmp_path_factory.mktemp("servers")) as s:
        yield s


@pytest.fixture(scope="module")
def gateway(
    cluster: Cluster,
    operator: OperatorProcess,
    tools: GatewayTools,
    netns: NetNamespace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TraefikGateway]:
    kubectl = cluster_kubectl(cluster)
    install_gateway_api(kubectl, tools.crds)
    gw = TraefikGateway(kubectl, tools, tmp_path_factory.mktemp("traefik"), netns)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def pod_addresses(
    cluster: Cluster, namespace: str, servers: dict[str, ModelServer]
) -> Iterator[PodAddresses]:
    pa = PodAddresses(cluster.core, namespace, MODEL, {t: s.address for t, s in servers.items()})
    pa.start()
    yield pa
    pa.stop()


def hostname(namespace: str) -> str:
    """Each test's own host name: a route of an earlier test (its namespace still being deleted)
    never answers for this one."""
    return f"{MODEL}.{namespace}.example.test"


def _gateway_md(
    gw: TraefikGateway,
    namespace: str,
    percent: int,
    section: str | None = None,
    canary_uri: str = CANARY_URI,
) -> Obj:
    return md_manifest(
        MODEL,
        {
            "model": {"storageUri": "s3://models/iris/v1/", "format": "sklearn"},
            "replicas": 10,
            "canary": {"storageUri": canary_uri, "trafficPercent": percent},
            "traffic": {
                "gateway": {
                    "parentRefs": [gw.parent_ref(section)],
                    "hostnames": [hostname(namespace)],
                }
            },
        },
    )


def wait_endpoints(
    cluster: Cluster,
    namespace: str,
    servers: dict[str, ModelServer],
    gw: TraefikGateway,
    pods: PodAddresses,
    percent: int,
) -> None:
    """Until every ready endpoint of both track Services is its track's real server (kwok's own
    addresses reassigned), and Traefik runs the route for `percent` over exactly those."""
    discovery = k8s.DiscoveryV1Api(cluster.api_client)

    def placed() -> bool:
        pods.check()
        for track, server in servers.items():
            eps = ready_endpoints(discovery, namespace, f"{MODEL}-{track}")
            assert eps, f"{track}: no ready endpoint"
            assert set(eps) == {server.address}, (track, eps)
        return True

    wait_until(placed, "the track Services' endpoints on the real servers", 60)
    wait_traefik_runs(gw, namespace, MODEL, percent, lambda: {s.url for s in servers.values()})


def send(gw: TraefikGateway, namespace: str, count: int, pin: str | None = None) -> Tally:
    headers = {TRACK_HEADER: pin} if pin else None
    return predict_through(gw.url, hostname(namespace), MODEL, count, headers)


def test_without_the_gateway_api_it_is_degraded_and_recovers_once_installed(
    cluster: Cluster, namespace: str, tools: GatewayTools
) -> None:
    """First in the module, before the `gateway` fixture installs the CRDs."""
    kubectl = cluster_kubectl(cluster)
    crd = f"crd/httproutes.{GATEWAY_GROUP}"
    if cluster.kubectl("get", crd, check=False).returncode == 0:
        if cluster.state_dir is None:
            pytest.skip("the given cluster serves the Gateway API; the test does not remove it")
        uninstall_gateway_api(kubectl, tools.crds)  # the tests' own cluster, from a reused run
    body = md_manifest(
        MODEL,
        {
            "model": {"storageUri": "s3://models/iris/v1/", "format": "sklearn"},
            "replicas": 10,
            "canary": {"storageUri": CANARY_URI, "trafficPercent": 20},
            "traffic": {"gateway": {"parentRefs": [{"name": "public"}]}},
        },
    )
    cluster.create_md(namespace, body)

    def degraded_reason() -> str | None:
        c = condition(cluster.get_md(namespace, MODEL), "Degraded")
        return c["reason"] if c and c["status"] == "True" else None

    assert wait_until(degraded_reason, "Degraded: GatewayAPIMissing") == "GatewayAPIMissing"
    message = condition(cluster.get_md(namespace, MODEL), "Degraded")["message"]  # type: ignore[index]
    assert "HTTPRoutes" in message, message
    assert GATEWAY_GROUP in message, message

    # the Service split keeps working without the Gateway API
    def split_serves() -> None:
        md = cluster.get_md(namespace, MODEL)
        assert md["status"]["readyReplicas"] == 10, md["status"]
        assert_services(cluster, namespace, md)
        assert_split(cluster, namespace, md, total=10, percent=20)
        assert md["status"]["address"] == f"http://{MODEL}.{namespace}.svc.cluster.local"
        assert degraded_reason() == "GatewayAPIMissing"

    eventually(split_serves, "every pod ready, split by the Service, still GatewayAPIMissing")

    # CRDs installed later: the operator's next reconcile writes the route and the reason goes
    install_gateway_api(kubectl, tools.crds)
    wait_until(lambda: degraded_reason() is None, "Degraded to clear once the CRDs exist")

    def route_follows_the_contract() -> None:
        route = gateway_object(kubectl, "httproute", namespace, MODEL)
        assert rules_of(route) == expected_rules(MODEL, 20), rules_of(route)
        assert_owned_by(route, cluster.get_md(namespace, MODEL))

    eventually(route_follows_the_contract, "the operator's HTTPRoute at 20%")


def test_route_weights_are_exact_follow_a_step_and_honour_the_header_pin(
    cluster: Cluster,
    namespace: str,
    gateway: TraefikGateway,
    servers: dict[str, ModelServer],
    pod_addresses: PodAddresses,
) -> None:
    cluster.create_md(namespace, _gateway_md(gateway, namespace, percent=10))
    md = wait_md_ready(cluster, namespace, MODEL)
    assert_split(cluster, namespace, md, total=10, percent=10)

    route = wait_route(gateway, namespace, MODEL, 10)
    assert_owned_by(route, md)
    assert route["metadata"]["labels"][LABEL_MANAGED_BY] == "modeldeploy-operator"
    assert route["spec"]["hostnames"] == [hostname(namespace)]
    assert route["spec"]["parentRefs"] == [
        {"group": GATEWAY_GROUP, "kind": "Gateway", **gateway.parent_ref()}
    ]
    status = md["status"]
    assert status["url"] == f"http://{hostname(namespace)}", status
    assert status["address"] == f"http://{MODEL}.{namespace}.svc.cluster.local", status
    wait_endpoints(cluster, namespace, servers, gateway, pod_addresses, 10)
    pod_addresses.check()

    # 1,000 requests at 10 %: Traefik's weighted round robin is deterministic
    tally = send(gateway, namespace, 1000)
    print(f"10%: {dict(tally.tracks)} errors {dict(tally.errors)}")
    assert not tally.errors, f"{tally}{gateway.explain()}"
    assert tally.ok == 1000
    assert abs(tally.tracks["canary"] - 100) <= 5, tally

    # the header pin reaches one track only, whatever the weights
    for track in ("canary", "stable"):
        pinned = send(gateway, namespace, 200, pin=track)
        assert not pinned.errors, pinned
        assert pinned.tracks == {track: 200}, pinned

    # a step to 50 %: the operator rewrites the weights (and re-divides replicas); Traefik's
    # answers follow within seconds
    started = time.monotonic()
    cluster.patch_md(namespace, MODEL, {"spec": {"canary": {"trafficPercent": 50}}})
    elapsed, batch = converge_share(
        lambda n: send(gateway, namespace, n), "canary", 50, 5, STEP_DEADLINE_S, batch=100
    )
    print(f"10% -> 50%: answers followed after {elapsed:.2f}s ({dict(batch.tracks)})")
    assert time.monotonic() - started < STEP_DEADLINE_S
    wait_route(gateway, namespace, MODEL, 50)
    md = wait_md_ready(cluster, namespace, MODEL)
    assert_split(cluster, namespace, md, total=10, percent=50)
    wait_endpoints(cluster, namespace, servers, gateway, pod_addresses, 50)
    tally = send(gateway, namespace, 1000)
    print(f"50%: {dict(tally.tracks)} errors {dict(tally.errors)}")
    assert not tally.errors, f"{tally}{gateway.explain()}"
    assert abs(tally.tracks["canary"] - 500) <= 5, tally
    pod_addresses.check()


def test_a_route_the_gateway_refuses_is_degraded_and_the_service_split_keeps_working(
    cluster: Cluster, namespace: str, gateway: TraefikGateway, pod_addresses: PodAddresses
) -> None:
    cluster.create_md(
        namespace, _gateway_md(gateway, namespace, percent=20, section="no-such-listener")
    )

    def refused() -> Obj | None:
        conds = route_parent_conditions(gateway.route(namespace, MODEL))
        return conds if conds.get("Accepted", {}).get("status") == "False" else None

    said = gateway.wait(refused, "Traefik to refuse the route", CONVERGE_S)["Accepted"]

    # Degraded can be said before every pod is ready (the operator reads the route's status from
    # its watch at once); the split below is a claim about the settled state.
    def degraded() -> Obj | None:
        md = cluster.get_md(namespace, MODEL)
        c = condition(md, "Degraded")
        settled = (md.get("status") or {}).get("readyReplicas") == 10
        return (
            md if c and c["status"] == "True" and c.get("reason") in REFUSED and settled else None
        )

    md = wait_until(degraded, "Degraded: RouteNotAccepted with all 10 replicas ready")
    c = condition(md, "Degraded")
    assert c is not None
    assert c["reason"] == "RouteNotAccepted", c
    # the message quotes the Gateway's own words
    assert said["reason"] in c["message"] or said["message"] in c["message"], (said, c)
    assert gateway.name in c["message"], c

    # the in-cluster split is untouched: both tracks, their Services, the replica split
    assert_services(cluster, namespace, md)
    assert_split(cluster, namespace, md, total=10, percent=20)
    assert md["status"]["readyReplicas"] == 10, md["status"]
    assert md["status"]["address"] == f"http://{MODEL}.{namespace}.svc.cluster.local"
    # and nothing reaches the servers through the refused route
    tally = send(gateway, namespace, 20)
    assert tally.ok == 0, tally
    assert tally.errors, tally


def test_the_gateway_namespace_has_no_route_off_its_own_net(netns: NetNamespace) -> None:
    """What keeps a kwok address Traefik might still hold unreachable: inside the namespace
    there is no default route, only its own /24."""
    routes = netns.ns("ip", "-4", "route", "show")
    assert "default" not in routes, routes
    assert str(netns.net) in routes, routes


def test_a_canary_without_ready_pods_gets_no_weight_until_it_has_one(
    cluster: Cluster,
    namespace: str,
    gateway: TraefikGateway,
    servers: dict[str, ModelServer],
    pod_addresses: PodAddresses,
) -> None:
    if not cluster.simulates_crashes:
        pytest.skip("needs hack/local-cluster.sh's kwok stages (a canary that never gets Ready)")
    cluster.create_md(namespace, _gateway_md(gateway, namespace, 30, canary_uri=CRASHING_URI))
    # the spec asks 30 %, but no canary pod is ready: weight 0, the Gateway sends it nothing
    wait_route(gateway, namespace, MODEL, 0)
    stable = servers["stable"]
    wait_traefik_runs(gateway, namespace, MODEL, 0, lambda: {stable.url})
    tally = send(gateway, namespace, 300)
    assert tally.tracks == {"stable": 300}, f"{tally}{gateway.explain()}"
    assert not tally.errors, tally
    # pinned to the canary, a request finds no ready server rather than the stable one
    pinned = send(gateway, namespace, 5, pin="canary")
    assert pinned.ok == 0, pinned
    assert set(pinned.errors) == {"HTTP 503: no available server\n"}, pinned

    # a canary that loads: its pods get ready, and only then the route gives it its 30 %
    cluster.patch_md(namespace, MODEL, {"spec": {"canary": {"storageUri": CANARY_URI}}})
    wait_route(gateway, namespace, MODEL, 30)
    wait_md_ready(cluster, namespace, MODEL)
    wait_endpoints(cluster, namespace, servers, gateway, pod_addresses, 30)
    tally = send(gateway, namespace, 1000)
    print(f"30% once ready: {dict(tally.tracks)} errors {dict(tally.errors)}")
    assert not tally.errors, f"{tally}{gateway.explain()}"
    assert abs(tally.tracks["canary"] - 300) <= 5, tally
