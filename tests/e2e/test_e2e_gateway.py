"""spec.traffic.gateway on a cluster with a real node: the operator (in-cluster) writes the
HTTPRoute, Traefik (a process on the host, tests/integration/operator/gateway_harness.py) routes
real requests to the real pods' IPs with the route's exact weights: 1,000 requests at 10 % give
100 ± 5 canary answers, a step to 50 % shows within seconds, the header pin reaches one track.

Traefik reaches the pods directly (their IPs on the node's bridge); every backend address is
checked to be routed on this machine before any request is sent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import REPO, Kubectl
from .test_e2e import model_deployment, patch_md, wait_ready

sys.path.insert(0, str(REPO / "tests" / "integration" / "operator"))  # the shared harness
from gateway_harness import (
    SERVER_PORT,
    TRACK_HEADER,
    Tally,
    TraefikGateway,
    check_local_route,
    converge_share,
    gateway_tools,
    install_gateway_api,
    predict_through,
    routed_locally,
    wait_route,
    wait_traefik_runs,
)

NAME = "iris"
STEP_DEADLINE_S = 30  # a convergence deadline, not a speed claim: the measured time is printed


@pytest.fixture(scope="module")
def gateway(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraefikGateway]:
    def run(*args: str, input: str | None = None) -> str:
        return kubectl.run(*args, stdin=input).stdout

    tools = gateway_tools()
    install_gateway_api(run, tools.crds)
    gw = TraefikGateway(run, tools, tmp_path_factory.mktemp("traefik"), netns=None)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()


def _ready_pod_urls(kubectl: Kubectl, ns: str) -> set[str]:
    """http://<pod IP>:8080 of every ready pod of the ModelDeployment, each checked to be an
    address of this machine's pod bridge."""
    pods = kubectl.json("get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={NAME}")
    urls = set()
    for pod in pods["items"]:
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        ip = pod["status"].get("podIP")
        if ip and conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            check_local_route(ip)
            urls.add(f"http://{ip}:{SERVER_PORT}")
    return urls


def _both_tracks_ready(kubectl: Kubectl, ns: str, total: int) -> Any:
    status = kubectl.json("get", "md", "-n", ns, NAME).get("status", {})
    canary = status.get("canary", {}).get("readyReplicas")
    return status if canary and status.get("readyReplicas") == total else None


def test_gateway_weights_are_exact_follow_a_step_and_honour_the_header_pin(
    kubectl: Kubectl, model_store: str, namespace: str, gateway: TraefikGateway
) -> None:
    host = f"{NAME}.{namespace}.example.test"
    md = model_deployment("iris-canary.yaml")
    md["spec"]["replicas"] = 2  # one pod per track: the weights, not the pods, split traffic
    md["spec"]["canary"]["trafficPercent"] = 10
    md["spec"]["traffic"] = {"gateway": {"parentRefs": [gateway.parent_ref()], "hostnames": [host]}}
    kubectl.apply(md, namespace)
    status = wait_ready(kubectl, namespace, NAME)
    kubectl.wait_for("both tracks ready", lambda: _both_tracks_ready(kubectl, namespace, 2))
    ips = [p["status"]["podIP"] for p in kubectl.json("get", "pods", "-n", namespace)["items"]]
    if not all(routed_locally(ip) for ip in ips):
        pytest.skip(
            f"pod IPs {ips} are not routed on this machine (kind?): Traefik can't reach them"
        )
    status = kubectl.json("get", "md", "-n", namespace, NAME)["status"]
    assert status["url"] == f"http://{host}", status
    assert status["address"] == f"http://{NAME}.{namespace}.svc.cluster.local", status

    def send(count: int, pin: str | None = None) -> Tally:
        headers = {TRACK_HEADER: pin} if pin else None
        return predict_through(gateway.url, host, NAME, count, headers)

    wait_route(gateway, namespace, NAME, 10)
    wait_traefik_runs(gateway, namespace, NAME, 10, lambda: _ready_pod_urls(kubectl, namespace))
    tally = send(1000)
    print(f"e2e 10%: {dict(tally.tracks)} errors {dict(tally.errors)}")
    assert not tally.errors, f"{tally}{gateway.explain()}"
    assert abs(tally.tracks["canary"] - 100) <= 5, tally

    for track in ("canary", "stable"):
        pinned = send(100, pin=track)
        assert not pinned.errors, pinned
        assert pinned.tracks == {track: 100}, pinned

    started = time.monotonic()
    patch_md(kubectl, namespace, NAME, {"spec": {"canary": {"trafficPercent": 50}}})
    elapsed, batch = converge_share(send, "canary", 50, 5, STEP_DEADLINE_S, batch=100)
    print(f"e2e 10% -> 50%: answers followed after {elapsed:.2f}s ({dict(batch.tracks)})")
    assert time.monotonic() - started < STEP_DEADLINE_S
    wait_route(gateway, namespace, NAME, 50)
    kubectl.wait_for("both tracks ready", lambda: _both_tracks_ready(kubectl, namespace, 2))
    wait_traefik_runs(gateway, namespace, NAME, 50, lambda: _ready_pod_urls(kubectl, namespace))
    tally = send(1000)
    print(f"e2e 50%: {dict(tally.tracks)} errors {dict(tally.errors)}")
    assert not tally.errors, f"{tally}{gateway.explain()}"
    assert abs(tally.tracks["canary"] - 500) <= 5, tally
