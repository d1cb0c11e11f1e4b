"""Gateway API for the tests: the pinned standard CRDs, a real implementation (Traefik as a plain
process against the API server) and, on kwok's control plane, a network namespace holding the real
model servers that the fake pods stand for.

Everything comes from `hack/build-gateway.sh`'s cache (it downloads only when the cache is empty).
Nothing is mocked: Traefik reads the Gateway, the HTTPRoute and the EndpointSlices from the API
server, writes their status, and proxies real HTTP to real `modeldeploy_server` processes.

Where traffic goes. The tests only ever send requests to addresses on this machine: Traefik's and
the servers' addresses inside a network namespace the harness creates (a TEST-NET /24 on a veth
pair), or 127.0.0.1. kwok gives its fake pods addresses from 10.244.0.0/17 that nothing answers on,
so on kwok (a) `PodAddresses` plays the CNI: every pod of a track gets, in `status.podIP`, the
address where that track's real server listens in the namespace, so the EndpointSlices the
endpointslice controller derives from the operator's Services point at real servers; and
(b) Traefik itself runs inside the namespace, which has no route but its own /24: a pod address
that was not reassigned yet is unreachable there (the request fails at once, no packet leaves the
namespace). A blackhole route on the host keeps the /24 local even after the veth is gone. On a
real node (e2e) Traefik runs on the host and reaches real pod IPs; `check_local_route` refuses any
backend whose route would leave the machine.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ipaddress
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    CONVERGE_S,
    LABEL_INSTANCE,
    LABEL_TRACK,
    REPO_ROOT,
    Cluster,
    NotConvergedError,
    Obj,
    T,
    free_port,
    wait_established,
    wait_until,
)

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
TRAEFIK_CONTROLLER = "traefik.io/gateway-controller"
TRACK_HEADER = "X-Modeldeploy-Track"
SERVER_PORT = 8080  # the server container's port "http" (docs/architecture.md)
# TEST-NET-2/3 first: this machine's uplink may itself sit in TEST-NET-1 (192.0.2.0/24).
TEST_NETS = ("198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24")
GATEWAY_CRDS = ("gatewayclasses", "gateways", "httproutes")
MODELS = REPO_ROOT / "examples" / "model"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


class KubectlFn(Protocol):
    """kubectl against the cluster under test: returns stdout, raises on a non-zero exit."""

    def __call__(self, *args: str, input: str | None = None) -> str: ...


def cluster_kubectl(cluster: Cluster) -> KubectlFn:
    def kubectl(*args: str, input: str | None = None) -> str:
        return cluster.kubectl(*args, input=input).stdout

    return kubectl


def _run(cmd: list[str], timeout: float = 60) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no proxy (everything here is local), no AWS/S3
    settings from this machine, no in-cluster Kubernetes settings."""
    drop = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "KUBERNETES_SERVICE")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(drop) and not k.startswith(("AWS_", "S3_"))
    }
    env.update(extra)
    return env


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to the process group, SIGKILL after 20 s."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _answers_200(proc: subprocess.Popen[bytes], log: Path, url: str) -> bool:
    """True once `url` answers 200; fails (with the log's tail) when the process has exited."""
    assert proc.poll() is None, f"{proc.args!r} exited ({proc.returncode}):\n{_tail(log)}"
    try:
        with httpx.Client(trust_env=False, timeout=2) as c:
            return c.get(url).status_code == 200
    except httpx.TransportError:
        return False


# ------------------------------------------------------------------------------ tools and CRDs
@dataclass(frozen=True)
class GatewayTools:
    traefik: Path
    crds: Path


def gateway_tools() -> GatewayTools:
    """The cached Traefik binary and Gateway API CRDs (hack/build-gateway.sh prints KEY=path)."""
    out = _run(["bash", str(REPO_ROOT / "hack" / "build-gateway.sh")], timeout=900)
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return GatewayTools(traefik=Path(paths["TRAEFIK"]), crds=Path(paths["GATEWAY_CRDS"]))


def install_gateway_api(kubectl: KubectlFn, crds: Path) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    for plural in GATEWAY_CRDS:
        wait_established(kubectl, f"{plural}.{GATEWAY_GROUP}")


def uninstall_gateway_api(kubectl: KubectlFn, crds: Path) -> None:
    """Deletes the CRDs (and so every Gateway API object) and waits until they are gone."""
    kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=120s", "-f", str(crds))


def gateway_object(kubectl: KubectlFn, kind: str, namespace: str, name: str) -> Obj:
    out = kubectl("get", f"{kind}.{GATEWAY_GROUP}", "-n", namespace, name, "-o", "json")
    obj: Obj = json.loads(out)
    return obj


def route_parent_conditions(route: Obj, controller: str = TRAEFIK_CONTROLLER) -> dict[str, Obj]:
    """The conditions the Gateway controller wrote on the route, by type, for its first parent."""
    for parent in (route.get("status") or {}).get("parents") or []:
        if parent.get("controllerName") == controller:
            return {c["type"]: c for c in parent.get("conditions") or []}
    return {}


# ------------------------------------------------------------------------------ network namespace
_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _routed_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]))
    nets = []
    for r in routes:
        dst = r.get("dst", "")
        if dst and dst != "default":
            nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def pick_test_net() -> ipaddress.IPv4Network:
    """The first TEST-NET /24 that no route on this machine touches yet."""
    routed = _routed_networks()
    for candidate in map(ipaddress.IPv4Network, TEST_NETS):
        if not any(candidate.overlaps(n) for n in routed):
            return candidate
    raise RuntimeError(f"every one of {TEST_NETS} is already routed on this machine")


class NetNamespace:
    """A network namespace joined to the host by a veth pair on a TEST-NET /24: the host side is
    .1, the namespace side .2 plus any addresses `add_address` gives it. The namespace has no
    default route, so nothing in it can reach anything but the /24 and its own loopback."""

    def __init__(self, net: ipaddress.IPv4Network | None = None) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"mdgw-{tag}"
        self.host_if = f"mdgw{tag}h"
        self.ns_if = f"mdgw{tag}n"
        self.net = net or pick_test_net()
        self.host_ip = str(self.net[1])
        self.ip = str(self.net[2])
        self.addresses: list[str] = [self.ip]
        self.created = False

    def create(self) -> None:
        _run(["ip", "netns", "add", self.name])
        self.created = True
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        _run(["ip", "link", "set", self.ns_if, "netns", self.name])
        _run(["ip", "addr", "add", f"{self.host_ip}/{self.net.prefixlen}", "dev", self.host_if])
        _run(["ip", "link", "set", self.host_if, "up"])
        # the /24 stays on this machine even while the veth is down or gone
        _run(["ip", "route", "replace", "blackhole", str(self.net), "metric", "4242"])
        self.ns("ip", "addr", "add", f"{self.ip}/{self.net.prefixlen}", "dev", self.ns_if)
        self.ns("ip", "link", "set", self.ns_if, "up")
        self.ns("ip", "link", "set", "lo", "up")
        got = json.loads(_run(["ip", "-j", "route", "get", self.ip]))[0]
        if got.get("dev") != self.host_if:
            raise RuntimeError(f"{self.ip} is not routed through {self.host_if}: {got}")

    def ns(self, *cmd: str) -> str:
        return _run(["ip", "netns", "exec", self.name, *cmd])

    def add_address(self) -> str:
        """One more address of the /24 inside the namespace (.10, .11, ...)."""
        ip = str(self.net[10 + len(self.addresses) - 1])
        self.ns("ip", "addr", "add", f"{ip}/{self.net.prefixlen}", "dev", self.ns_if)
        self.addresses.append(ip)
        return ip

    def popen(
        self, cmd: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`cmd` inside the namespace (ip netns exec execs it: the pid is cmd's), its own
        session so it can be stopped as a group, output to `log`."""
        with log.open("ab") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.name, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def listen(self, host: str, port: int) -> socket.socket:
        """A listening TCP socket that lives inside the namespace, made by a short-lived thread
        that enters it (setns changes only the calling thread; the socket keeps its namespace)."""
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def enter_and_bind() -> None:
            target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                if _libc.setns(target, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {self.name}")
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(32)
                made.append(sock)
            except BaseException as e:
                failed.append(e)
            finally:
                os.close(target)

        # the thread ends right after, so it never runs anything else inside the namespace
        t = threading.Thread(target=enter_and_bind, name=f"setns-{self.name}")
        t.start()
        t.join(timeout=10)
        if failed or not made:
            raise RuntimeError(f"could not listen on {host}:{port} in {self.name}: {failed}")
        return made[0]

    def delete(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(
            ["ip", "route", "del", "blackhole", str(self.net), "metric", "4242"],
            capture_output=True,
            check=False,
        )
        self.created = False


class LoopbackBridge:
    """A TCP relay from host:port inside a network namespace to a loopback address of the host
    (the API server listens on the host's 127.0.0.1 only, and its certificate names 127.0.0.1, so
    Traefik inside the namespace dials https://127.0.0.1:<port> and reaches it through this)."""

    def __init__(self, netns: NetNamespace, target: tuple[str, int]) -> None:
        if not ipaddress.ip_address(target[0]).is_loopback:
            raise ValueError(f"the bridge only relays to the host's loopback, not {target}")
        self.netns = netns
        self.target = target
        self.port = target[1]
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._listener = self.netns.listen("127.0.0.1", self.port)
        threading.Thread(target=self._accept, name="loopback-bridge", daemon=True).start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                inner, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                outer = socket.create_connection(self.target, timeout=10)
            except OSError:
                inner.close()
                continue
            outer.settimeout(None)
            with self._lock:
                self._open += [inner, outer]
            for src, dst in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.close()
            self._open.clear()


# ------------------------------------------------------------------------------ model servers
@dataclass
class ModelServer:
    """A real `modeldeploy-server` serving one track's model at address:SERVER_PORT."""

    track: str
    address: str
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.address}:{SERVER_PORT}"

    def wait_ready(self, timeout: float = 120) -> None:
        wait_until(
            lambda: _answers_200(self.proc, self.log, f"{self.url}/ready"),
            f"the {self.track} server at {self.url} ({self.log})",
            timeout,
        )

    def stop(self) -> None:
        _stop_process(self.proc)


def start_model_server(
    netns: NetNamespace, track: str, model_name: str, artifact: Path, workdir: Path
) -> ModelServer:
    """The server in the namespace on a new address of its own, as the pods of `track` would run
    it (same console script, same environment variables the operator sets)."""
    address = netns.add_address()
    log = workdir / f"server-{track}.log"
    env = _clean_env(
        MODEL_NAME=model_name,
        STORAGE_URI=str(artifact),
        MODEL_FORMAT="sklearn",
        MODEL_DIR=str(workdir / f"models-{track}"),
        TERMINATION_LOG=str(workdir / f"termination-{track}.log"),
        MODELDEPLOY_TRACK=track,
        HOST=address,
        PORT=str(SERVER_PORT),
    )
    server = REPO_ROOT / ".venv" / "bin" / "modeldeploy-server"
    return ModelServer(track, address, log, netns.popen([str(server)], log, env))


class PodAddresses:
    """The CNI for kwok's fake pods of one ModelDeployment: each pod of track T gets, as
    status.podIP, the address where T's real server listens (only once kwok has set an address of
    its own, which it does together with Ready, so kwok's stages are not disturbed). A watch keeps
    it up as pods come and go; the endpointslice controller does the rest."""

    def __init__(
        self, core: k8s.CoreV1Api, namespace: str, instance: str, by_track: dict[str, str]
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.selector = f"{LABEL_INSTANCE}={instance}"
        self.by_track = by_track
        self.assigned = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-addresses", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def _assign(self, pod: Any) -> None:
        track = (pod.metadata.labels or {}).get(LABEL_TRACK)
        want = self.by_track.get(track or "")
        have = pod.status.pod_ip if pod.status else None
        if not want or not have or have == want or pod.metadata.deletion_timestamp:
            return
        try:
            # a JSON patch: a strategic merge would add to podIPs instead of replacing it
            self.core.patch_namespaced_pod_status(
                pod.metadata.name,
                self.namespace,
                [
                    {"op": "test", "path": "/status/podIP", "value": have},
                    {"op": "replace", "path": "/status/podIP", "value": want},
                    {"op": "replace", "path": "/status/podIPs", "value": [{"ip": want}]},
                ],
            )
            self.assigned += 1
        except ApiException as e:
            # gone meanwhile (404), or changed since this copy (422 from the test op: the next
            # event brings the new copy)
            if e.status not in (404, 422):
                raise

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
                for pod in pods.items:
                    self._assign(pod)
                w = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                for ev in w.stream(  # type: ignore[no-untyped-call]
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=pods.metadata.resource_version if pods.metadata else None,
                    timeout_seconds=5,
                ):
                    if self._stop.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
                        break
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._assign(ev["object"])
        except BaseException as e:  # surfaced by check()
            self._error = e

    def check(self) -> None:
        if self._error is not None:
            raise AssertionError(f"assigning pod addresses failed: {self._error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def ready_endpoints(discovery: k8s.DiscoveryV1Api, namespace: str, service: str) -> list[str]:
    """Ready endpoint addresses of `service` over all its EndpointSlices (what Traefik reads)."""
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    ).items
    out = []
    for s in slices:
        for ep in s.endpoints or []:
            if ep.conditions is None or ep.conditions.ready is not False:
                out.extend(ep.addresses)
    return sorted(out)


def routed_locally(address: str) -> bool:
    """True when traffic to `address` stays on this machine: loopback, blackholed, or routed
    through any device but the default route's (a bridge, a veth)."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return True
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "default"]))
    uplinks = {r.get("dev") for r in routes}
    got = json.loads(_run(["ip", "-j", "route", "get", address]))[0]
    return bool(got.get("type") == "blackhole" or got.get("dev") not in uplinks)


def check_local_route(address: str) -> None:
    """Refuses an address whose route would leave the machine: the tests send traffic only to
    addresses on this machine."""
    assert routed_locally(address), f"{address} would leave the machine through the default route"


# ------------------------------------------------------------------------------ Traefik
def traefik_access_objects(namespace: str, name: str) -> list[Obj]:
    """Namespace, ServiceAccount and the Gateway provider's RBAC as Traefik documents it (read the
    Gateway API objects, Services, EndpointSlices, Secrets for TLS listeners, ConfigMaps for
    BackendTLSPolicy CAs, which 3.7 waits for at start, and Namespaces for allowedRoutes; update
    the status of what it manages). Nothing else: no nodes (no NodePort balancing here)."""
    read = ["get", "list", "watch"]
    kinds = [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "grpcroutes",
        "tlsroutes",
        "tcproutes",
        "referencegrants",
        "backendtlspolicies",
        "listenersets",
    ]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "traefik", "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
                {
                    "apiGroups": [""],
                    "resources": ["services", "secrets", "configmaps"],
                    "verbs": read,
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": [GATEWAY_GROUP], "resources": kinds, "verbs": read},
                {
                    "apiGroups": [GATEWAY_GROUP],
                    "resources": [f"{k}/status" for k in kinds],
                    "verbs": ["update"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "traefik", "namespace": namespace}],
        },
    ]


def gateway_objects(namespace: str, name: str, port: int, listener: str = "http") -> list[Obj]:
    """A GatewayClass for Traefik and a Gateway with one HTTP listener on `port` (Traefik needs
    the listener's port to be one of its entrypoints' ports) taking routes from any namespace."""
    return [
        {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
            "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {"controllerName": TRAEFIK_CONTROLLER},
        },
        {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "gatewayClassName": name,
                "listeners": [
                    {
                        "name": listener,
                        "protocol": "HTTP",
                        "port": port,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
    ]


def api_server_of(kubectl: KubectlFn, workdir: Path) -> tuple[str, Path]:
    """The API server URL and its CA (written to a file) from the kubeconfig kubectl uses."""
    cfg = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cl = cfg["clusters"][0]["cluster"]
    ca = workdir / "ca.crt"
    if "certificate-authority-data" in cl:
        ca.write_bytes(base64.b64decode(cl["certificate-authority-data"]))
    else:
        ca.write_bytes(Path(cl["certificate-authority"]).read_bytes())
    return str(cl["server"]), ca


class TraefikGateway:
    """Traefik with its Kubernetes Gateway provider, as a process (inside `netns` when given,
    else on the host's 127.0.0.1), authenticated as its own ServiceAccount with a TokenRequest
    token and the cluster CA; a GatewayClass and a Gateway `name` in namespace `name` whose one
    HTTP listener is Traefik's `web` entrypoint. Its log is `workdir/traefik.log`."""

    LISTENER = "http"

    def __init__(
        self, kubectl: KubectlFn, tools: GatewayTools, workdir: Path, netns: NetNamespace | None
    ) -> None:
        self.kubectl = kubectl
        self.tools = tools
        self.workdir = workdir
        self.netns = netns
        self.name = f"mdgw-{uuid.uuid4().hex[:6]}"
        self.namespace = self.name
        self.address = netns.ip if netns else "127.0.0.1"
        self.web_port = free_port()
        self.admin_port = free_port()
        self.log = workdir / "traefik.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridge: LoopbackBridge | None = None
        self._applied: list[Obj] = []

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.web_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.address}:{self.admin_port}"

    def _apply(self, docs: list[Obj]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        self._applied += docs

    def start(self) -> None:
        self._apply(traefik_access_objects(self.namespace, self.name))
        wait_until(
            lambda: self.kubectl("get", "sa", "traefik", "-n", self.namespace),
            "Traefik's ServiceAccount",
            30,
        )
        token = self.kubectl(
            "create", "token", "traefik", "-n", self.namespace, "--duration=4h"
        ).strip()
        token_file = self.workdir / "traefik.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        server, ca = api_server_of(self.kubectl, self.workdir)
        endpoint = httpx.URL(server)
        if self.netns is not None:
            self.bridge = LoopbackBridge(self.netns, (endpoint.host, endpoint.port or 443))
            self.bridge.start()
        args = [
            str(self.tools.traefik),
            # never phone home (version check, anonymous usage): this machine talks to no one
            "--global.checknewversion=false",
            "--global.sendanonymoususage=false",
            "--log.level=" + os.environ.get("MODELDEPLOY_TEST_TRAEFIK_LOG_LEVEL", "INFO"),
            "--log.nocolor=true",  # the log is quoted in failure messages
            f"--entrypoints.web.address={self.address}:{self.web_port}",
            f"--entrypoints.traefik.address={self.address}:{self.admin_port}",
            "--ping=true",
            "--api=true",
            "--api.insecure=true",  # the API on the `traefik` entrypoint, on this address only
            "--providers.kubernetesgateway=true",
            f"--providers.kubernetesgateway.endpoint={server}",
            f"--providers.kubernetesgateway.token={token_file}",
            f"--providers.kubernetesgateway.certauthfilepath={ca}",
            f"--providers.kubernetesgateway.statusaddress.ip={self.address}",
        ]
        env = _clean_env(HOME=str(self.workdir))
        if self.netns is not None:
            self.proc = self.netns.popen(args, self.log, env)
        else:
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    args,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
        self.wait(self._pinged, f"Traefik's /ping at {self.admin_url}", 60)
        self._apply(gateway_objects(self.namespace, self.name, self.web_port, self.LISTENER))
        self.wait(
            lambda: self.gateway_condition("Programmed").get("status") == "True",
            f"Gateway {self.namespace}/{self.name} Programmed by Traefik",
            90,
        )

    def wait(self, probe: Callable[[], T | bool | None], what: str, timeout: float) -> T:
        """wait_until, failing with what Traefik has and said at the deadline."""
        try:
            return wait_until(probe, what, timeout)
        except NotConvergedError as e:
            raise NotConvergedError(f"{e}{self.explain()}") from None

    def _pinged(self) -> bool:
        assert self.proc is not None
        return _answers_200(self.proc, self.log, f"{self.admin_url}/ping")

    def gateway_condition(self, ctype: str) -> Obj:
        gw = gateway_object(self.kubectl, "gateway", self.namespace, self.name)
        for c in (gw.get("status") or {}).get("conditions") or []:
            if c.get("type") == ctype:
                return dict(c)
        return {}

    def parent_ref(self, section: str | None = None) -> Obj:
        """A ModelDeployment's spec.traffic.gateway.parentRefs entry for this Gateway."""
        return {"name": self.name, "namespace": self.namespace, "sectionName": section or "http"}

    def backend_urls(self) -> dict[str, list[str]]:
        """Traefik's HTTP services and their servers' URLs, from its API."""
        with httpx.Client(trust_env=False, timeout=5) as c:
            services = c.get(f"{self.admin_url}/api/http/services").json()
        return {
            s["name"]: [srv["url"] for srv in (s.get("loadBalancer") or {}).get("servers") or []]
            for s in services
        }

    def route(self, namespace: str, name: str) -> Obj:
        return gateway_object(self.kubectl, "httproute", namespace, name)

    def route_servers(self, namespace: str, model: str) -> set[str]:
        """The server URLs Traefik balances over for the route of `model` in `namespace`."""
        mark = f"-svc-{namespace}-{model}-"
        return {u for name, urls in self.backend_urls().items() if mark in name for u in urls}

    def route_weights(self, namespace: str, model: str) -> list[dict[str, int]]:
        """The weights Traefik runs for the route of ModelDeployment `model` in `namespace`, by
        track, one dict per rule (sorted as `expected_weights`)."""
        out = []
        for wrr in self.weighted_services():
            by_track = {
                track: weight
                for name, weight in wrr.items()
                for track in ("stable", "canary")
                if f"-svc-{namespace}-{model}-{track}-" in name
            }
            if by_track:
                out.append(by_track)
        return sorted(out, key=lambda d: sorted(d.items()))

    def weighted_services(self) -> list[dict[str, int]]:
        """Traefik's weighted round robins as it runs them now: {child service: weight} each."""
        with httpx.Client(trust_env=False, timeout=5) as c:
            services = c.get(f"{self.admin_url}/api/http/services").json()
        return [
            {w["name"]: int(w.get("weight", 1)) for w in s["weighted"].get("services") or []}
            for s in services
            if s.get("weighted")
        ]

    def _explain(self) -> str:
        return f"\n--- {self.log} (last lines)\n{_tail(self.log)}"

    def explain(self) -> str:
        """What Traefik has and said, for assertion messages."""
        try:
            backends = json.dumps(self.backend_urls(), indent=1)
        except (httpx.HTTPError, ValueError) as e:
            backends = repr(e)
        return f"\n--- Traefik's services: {backends}{self._explain()}"

    def stop(self) -> None:
        _stop_process(self.proc)
        if self.bridge is not None:
            self.bridge.stop()
        for doc in reversed(self._applied):
            kind = doc["kind"]
            ns = doc["metadata"].get("namespace")
            args = ["delete", "--ignore-not-found", "--wait=false", kind, doc["metadata"]["name"]]
            if ns:
                args += ["-n", ns]
            with contextlib.suppress(subprocess.CalledProcessError, RuntimeError, AssertionError):
                self.kubectl(*args)


# ------------------------------------------------------------------------------ the route contract
def _backend(service: str, weight: int) -> Obj:
    return {"group": "", "kind": "Service", "name": service, "port": 80, "weight": weight}


def expected_rules(model: str, percent: int) -> list[Obj]:
    """The rules of the operator's HTTPRoute (issue 12's contract) for a ModelDeployment `model`
    whose canary has ready pods: a header pin per track, then the weighted split."""

    def pinned(track: str) -> Obj:
        return {
            "matches": [
                {
                    "path": {"type": "PathPrefix", "value": "/"},
                    "headers": [{"type": "Exact", "name": TRACK_HEADER, "value": track}],
                }
            ],
            "backendRefs": [_backend(f"{model}-{track}", 1)],
        }

    return [
        pinned("canary"),
        pinned("stable"),
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                _backend(f"{model}-stable", 100 - percent),
                _backend(f"{model}-canary", percent),
            ],
        },
    ]


def expected_weights(percent: int) -> list[dict[str, int]]:
    """What Traefik should run for `expected_rules` (as `TraefikGateway.route_weights` sorts)."""
    rules = [{"canary": 1}, {"stable": 1}, {"stable": 100 - percent, "canary": percent}]
    return sorted(rules, key=lambda d: sorted(d.items()))


def rules_of(route: Obj) -> list[Obj]:
    """The route's rules as the contract states them (dropping what the API server defaults,
    e.g. timeouts or a rule name, none of which the contract sets)."""
    return [
        {"matches": r.get("matches"), "backendRefs": r.get("backendRefs")}
        for r in route["spec"]["rules"]
    ]


def wait_route(
    gw: TraefikGateway, namespace: str, model: str, percent: int, timeout: float = CONVERGE_S
) -> Obj:
    """The operator's HTTPRoute, once it holds the contract's rules for `percent` and Traefik has
    accepted that generation with every backend resolved."""

    def accepted() -> Obj | None:
        route = gw.route(namespace, model)
        assert rules_of(route) == expected_rules(model, percent), route["spec"]
        conds = route_parent_conditions(route)
        generation = route["metadata"]["generation"]
        ok = all(
            conds.get(t, {}).get("status") == "True"
            and conds[t].get("observedGeneration") == generation
            for t in ("Accepted", "ResolvedRefs")
        )
        return route if ok else None

    return gw.wait(accepted, f"HTTPRoute {namespace}/{model} at {percent}%", timeout)


def wait_traefik_runs(
    gw: TraefikGateway,
    namespace: str,
    model: str,
    percent: int,
    servers: Callable[[], set[str]],
    timeout: float = 60,
) -> None:
    """Until Traefik balances the route over exactly `servers()` (URLs) with the contract's
    weights for `percent`: the route's status can be a generation ahead of what Traefik runs."""

    def runs() -> bool:
        have, want = gw.route_servers(namespace, model), servers()
        assert have == want, f"Traefik's servers {sorted(have)}, want {sorted(want)}"
        weights = gw.route_weights(namespace, model)
        assert weights == expected_weights(percent), f"Traefik's weights {weights}"
        return True

    gw.wait(runs, f"Traefik to run the route at {percent}%", timeout)


# ------------------------------------------------------------------------------ traffic
@dataclass
class Tally:
    """Answers by the X-Modeldeploy-Track response header, and failures by kind."""

    tracks: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return sum(self.tracks.values())

    def share(self, track: str) -> float:
        return 100.0 * self.tracks[track] / self.ok if self.ok else 0.0


def predict_through(
    url: str,
    hostname: str,
    model: str,
    count: int,
    headers: dict[str, str] | None = None,
    deadline_s: float = 120,
) -> Tally:
    """`count` sequential KServe V1 predictions through the gateway at `url` with Host
    `hostname`, keep-alive on one connection. Bounded by count and by `deadline_s`."""
    tally = Tally()
    end = time.monotonic() + deadline_s
    body = {"instances": [IRIS_ROW]}
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as c:
        for _ in range(count):
            if time.monotonic() > end:
                tally.errors["deadline"] += count - tally.ok - sum(tally.errors.values())
                break
            try:
                r = c.post(
                    f"/v1/models/{model}:predict",
                    json=body,
                    headers={"Host": hostname, **(headers or {})},
                )
            except httpx.HTTPError as e:
                tally.errors[type(e).__name__] += 1
                continue
            if r.status_code == 200 and r.json().get("predictions") == [0]:
                tally.tracks[r.headers.get(TRACK_HEADER, "?")] += 1
            else:
                tally.errors[f"HTTP {r.status_code}: {r.text[:80]}"] += 1
    return tally


def converge_share(
    send: Callable[[int], Tally],
    track: str,
    target: float,
    tolerance: float,
    deadline_s: float,
    batch: int = 100,
) -> tuple[float, Tally]:
    """Sends batches until one answers without error with `track`'s share within `tolerance`
    of `target` percent; returns the seconds that took and that batch (fails at the deadline)."""
    start = time.monotonic()
    seen: list[str] = []
    while True:
        tally = send(batch)
        elapsed = time.monotonic() - start
        if not tally.errors and abs(tally.share(track) - target) <= tolerance:
            return elapsed, tally
        seen.append(f"{elapsed:.1f}s: {dict(tally.tracks)} {dict(tally.errors)}")
        assert elapsed < deadline_s, (
            f"{track} share did not reach {target}±{tolerance}% in {deadline_s:.0f}s:\n"
            + "\n".join(seen[-10:])
        )


@contextlib.contextmanager
def model_servers(
    netns: NetNamespace, model_name: str, workdir: Path
) -> Iterator[dict[str, ModelServer]]:
    """A stable (iris-v1) and a canary (iris-v2) server in the namespace, ready."""
    servers = {
        "stable": start_model_server(
            netns, "stable", model_name, MODELS / "iris-v1.joblib", workdir
        ),
        "canary": start_model_server(
            netns, "canary", model_name, MODELS / "iris-v2.joblib", workdir
        ),
    }
    try:
        for s in servers.values():
            s.wait_ready()
        yield servers
    finally:
        for s in servers.values():
            s.stop()
