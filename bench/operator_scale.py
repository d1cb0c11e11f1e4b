"""Benchmark: how the operator copes with many ModelDeployments at once (issue 14).

On the local control plane (hack/local-cluster.sh: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok's fake node), with the operator running as its own ServiceAccount
(`python -m modeldeploy_operator`, the stable entry point; nothing of the operator is imported):

1. create N ModelDeployments at once (server-side apply from a pool of threads, as a GitOps tool
   or a `kubectl apply` of many does) and wait until every one is Ready=True at its generation
   with its children (Deployment <name>-stable with its replicas ready, Services <name> and
   <name>-stable, all controlled by it);
2. change every one (server-side apply of the same manifest with `spec.replicas: 2`) and wait
   until every one is Ready at the new generation with 2 ready replicas;
3. a quiet minute: count the operator's writes from the audit log.

For each phase it prints the wall time, when the Deployments were done (the cluster's share)
versus when the ModelDeployments' status said so (the operator's share), the operator's API
writes (audit log, by verb/resource), the GETs/LISTs the API server served for the resources the
operator reads (apiserver_request_total; the other clients use informers, so these are the
operator's), CPU seconds per process, the load average, and the operator's RSS (peak and end, from
/proc). A phase that does not converge within --timeout prints what the stragglers wait for.
Figures are reported, never asserted: the exit status is 0 when a target is missed.

    .venv/bin/python bench/operator_scale.py                     # N=500 on .local-cluster/bench
    .venv/bin/python bench/operator_scale.py --n 20 --keep-cluster
    .venv/bin/python bench/operator_scale.py --cluster-dir /tmp/scale-cluster
    .venv/bin/python bench/operator_scale.py --kubeconfig ~/.kube/config   # any cluster
    .venv/bin/python bench/operator_scale.py --operator-env MODELDEPLOY_RESYNC_SECONDS=15

The operator runs from whatever `modeldeploy_operator` the given --python imports (PYTHONPATH is
passed through), so a work tree's code can be measured without reinstalling.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[1]
LOCAL_CLUSTER = REPO / "hack" / "local-cluster.sh"
GROUP, VERSION, PLURAL, KIND = "modeldeploy.io", "v1alpha1", "modeldeployments", "ModelDeployment"
OPERATOR_NS, OPERATOR_SA = "modeldeploy-system", "modeldeploy-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
RBAC_KINDS = {
    "Namespace",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
}
MUTATING = {"create", "update", "patch", "delete", "deletecollection"}
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
# What the operator reads per reconcile (the other clients list+watch these through informers).
READ_RESOURCES = {"modeldeployments", "deployments", "services", "horizontalpodautoscalers", "pods"}
FIELD_MANAGER = "bench-user"
TARGETS = {"create": 60.0, "update": 60.0}
TARGET_RSS_MIB = 200.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

Obj = dict[str, Any]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_str() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


def run(cmd: list[str], *, env: dict[str, str] | None = None, input: str | None = None) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, input=input, check=False, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


# ------------------------------------------------------------------------------------- cluster
@dataclass
class Cluster:
    kubeconfig: Path
    operator_kubeconfig: Path
    kubectl: Path
    state_dir: Path | None  # the local control plane's state dir (audit log, pids), if ours
    started: bool = False

    @property
    def audit_log(self) -> Path | None:
        if self.state_dir is None:
            return None
        p = self.state_dir / "logs" / "audit.log"
        return p if p.exists() else None

    def component_pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.state_dir is None:
            return out
        for c in COMPONENTS:
            with contextlib.suppress(OSError, ValueError):
                out[c] = int((self.state_dir / "pids" / f"{c}.pid").read_text().strip())
        return out

    def kubectl_run(self, *args: str, input: str | None = None) -> str:
        return run([str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args], input=input)


def cluster_env(state_dir: Path) -> dict[str, str]:
    return {**os.environ, "MODELDEPLOY_CLUSTER_DIR": str(state_dir)}


def local_cluster(state_dir: Path) -> Cluster:
    env = cluster_env(state_dir)
    already = (
        subprocess.run(
            ["bash", str(LOCAL_CLUSTER), "status"], capture_output=True, env=env, check=False
        ).returncode
        == 0
    )
    log(f"{'using' if already else 'starting'} the local control plane in {state_dir}")
    kubeconfig = Path(run(["bash", str(LOCAL_CLUSTER), "up"], env=env).strip().splitlines()[-1])
    bin_dir = ""
    for line in run(["bash", str(LOCAL_CLUSTER), "env"], env=env).splitlines():
        if line.startswith("BIN_DIR="):
            bin_dir = line.split("=", 1)[1]
    kubectl = Path(bin_dir) / "kubectl"
    c = Cluster(kubeconfig, Path(), kubectl, state_dir, started=not already)
    apply_crds(c)
    out = run(["bash", str(LOCAL_CLUSTER), "operator-kubeconfig"], env=env)
    c.operator_kubeconfig = Path(out.strip().splitlines()[-1])
    return c


def external_cluster(kubeconfig: Path, operator_kubeconfig: Path | None, tmp: Path) -> Cluster:
    kubectl = Path(os.environ.get("KUBECTL", "kubectl"))
    cached = Path.home() / ".cache" / "modeldeploy"
    for cand in sorted(cached.glob("k8s-*/bin/kubectl")):
        kubectl = cand
    c = Cluster(kubeconfig, operator_kubeconfig or Path(), kubectl, None)
    apply_crds(c)
    if operator_kubeconfig is None:
        c.operator_kubeconfig = write_operator_kubeconfig(c, tmp / "operator.kubeconfig")
    return c


def apply_crds(c: Cluster) -> None:
    crds = REPO / "crds"
    how = "-k" if (crds / "kustomization.yaml").exists() else "-f"
    c.kubectl_run("apply", "--server-side", "--force-conflicts", how, str(crds))
    for attempt in range(60):
        try:
            c.kubectl_run(
                "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s"
            )
            return
        except RuntimeError as e:
            # A CRD created a moment ago has no status.conditions, and kubectl fails at once.
            if "accessor error" not in str(e) or attempt == 59:
                raise
            time.sleep(0.5)


def write_operator_kubeconfig(c: Cluster, path: Path) -> Path:
    """The operator's ServiceAccount on a cluster given by kubeconfig (what `local-cluster.sh
    operator-kubeconfig` does on the local one)."""
    rendered = c.kubectl_run("kustomize", str(REPO / "deploy"))
    docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in RBAC_KINDS]
    c.kubectl_run(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    for _ in range(60):
        try:
            token = c.kubectl_run(
                "create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration=24h"
            ).strip()
            break
        except RuntimeError:
            time.sleep(1)
    else:
        raise RuntimeError("no ServiceAccount token for the operator")
    admin = json.loads(c.kubectl_run("config", "view", "--raw", "--minify", "-o", "json"))
    cl = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cl:
        ca = Path(cl.pop("certificate-authority")).read_bytes()
        cl["certificate-authority-data"] = base64.b64encode(ca).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cl}],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "op", "context": {"cluster": "c", "user": OPERATOR_SA}}],
        "current-context": "op",
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


def api_client(kubeconfig: Path, pool: int) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=cfg
    )
    cfg.connection_pool_maxsize = pool
    return k8s.ApiClient(cfg)


# ------------------------------------------------------------------------------------ operator
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    def __init__(self, cmd: list[str], kubeconfig: Path, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        full_env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        with log_path.open("ab") as f:
            self.proc = subprocess.Popen(
                [*cmd, "--liveness", f"http://127.0.0.1:{self.port}/healthz"],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=str(REPO),
                start_new_session=True,
            )
        self.rss_peak_kib = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.rss_peak_kib = max(self.rss_peak_kib, self.rss_kib())

    def reset_peak(self) -> None:
        self.rss_peak_kib = self.rss_kib()

    def rss_kib(self, field_name: str = "VmRSS") -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def health(self) -> Obj:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
                data: Obj = json.loads(r.read() or b"{}")
                return data
        except (OSError, ValueError):
            return {}

    def wait_alive(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the operator exited ({self.proc.returncode}); see {self.log_path}"
                )
            if self.health():
                return
            time.sleep(0.5)
        raise RuntimeError(f"the operator's liveness endpoint did not answer; see {self.log_path}")

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


# ------------------------------------------------------------------------------- cache (watches)
class Cache:
    """A list+watch of one resource in the namespace, raw JSON (no client models), calling
    `on_change(obj)` on every change."""

    def __init__(
        self,
        lister: Callable[..., Any],
        args: tuple[Any, ...],
        on_change: Callable[[Obj], None],
    ) -> None:
        self.lister, self.args, self.on_change = lister, args, on_change
        self.objects: dict[str, Obj] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._resp: Any = None
        self.synced = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _list(self) -> str:
        resp = self.lister(*self.args, _preload_content=False, _request_timeout=60)
        data = json.loads(resp.data)
        with self.lock:
            self.objects = {o["metadata"]["name"]: o for o in data.get("items") or []}
        for o in list(self.objects.values()):
            self.on_change(o)
        self.synced.set()
        return str(data["metadata"]["resourceVersion"])

    def _lines(self, resp: Any) -> Iterator[bytes]:
        buf = b""
        for chunk in resp.stream(amt=None, decode_content=False):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield line

    def _loop(self) -> None:
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                self._resp = self.lister(
                    *self.args,
                    watch=True,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=240,
                    _preload_content=False,
                    _request_timeout=300,
                )
                for line in self._lines(self._resp):
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        rv = ""  # expired: list again
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev.get("type") == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self.lock:
                        if ev["type"] == "DELETED":
                            self.objects.pop(name, None)
                        else:
                            self.objects[name] = obj
                    self.on_change(obj)
            except Exception as e:  # a broken watch is re-established from a fresh list
                if self._stop.is_set():
                    return
                log(f"watch {self.lister.__name__} restarts after {type(e).__name__}: {e}")
                rv = ""
                time.sleep(1)

    def get(self, name: str) -> Obj | None:
        with self.lock:
            return self.objects.get(name)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            if self._resp is not None:
                self._resp.close()


# ------------------------------------------------------------------------------------- tracking
def condition(obj: Obj | None, ctype: str) -> Obj:
    for c in (obj or {}).get("status", {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def controlled_by(child: Obj | None, md: Obj) -> bool:
    for ref in (child or {}).get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") == md["metadata"].get("uid"):
            return True
    return False


@dataclass
class Phase:
    name: str
    replicas: int
    names: list[str]
    start: float = 0.0
    end: float | None = None
    dep_done: dict[str, float] = field(default_factory=dict)  # cluster side: Deployment ready
    md_done: dict[str, float] = field(default_factory=dict)  # all: status + children
    generation: dict[str, int] = field(default_factory=dict)  # the generation to be Ready at


class Tracker:
    def __init__(
        self, custom: k8s.CustomObjectsApi, apps: k8s.AppsV1Api, core: k8s.CoreV1Api, ns: str
    ) -> None:
        self.phase: Phase | None = None
        self.core = core
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.mds = Cache(
            custom.list_namespaced_custom_object, (GROUP, VERSION, ns, PLURAL), self._md_event
        )
        self.deps = Cache(apps.list_namespaced_deployment, (ns,), self._child_event)
        self.svcs = Cache(core.list_namespaced_service, (ns,), self._child_event)
        for c in (self.mds, self.deps, self.svcs):
            c.synced.wait(60)

    def stop(self) -> None:
        for c in (self.mds, self.deps, self.svcs):
            c.stop()

    def _child_event(self, obj: Obj) -> None:
        for ref in obj.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("kind") == KIND:
                self.evaluate(str(ref.get("name")))

    def _md_event(self, obj: Obj) -> None:
        self.evaluate(obj["metadata"]["name"])

    def deployment_ready(self, name: str, replicas: int) -> bool:
        dep = self.deps.get(f"{name}-stable")
        if dep is None:
            return False
        st = dep.get("status") or {}
        return bool(
            dep["spec"].get("replicas") == replicas
            and st.get("observedGeneration") == dep["metadata"].get("generation")
            and st.get("updatedReplicas") == replicas
            and st.get("readyReplicas") == replicas
            and st.get("availableReplicas") == replicas
            and (st.get("replicas") or 0) == replicas
        )

    def why_not(self, name: str, p: Phase) -> str:
        """What a straggler waits for (first unmet condition)."""
        md = self.mds.get(name)
        if md is None:
            return "ModelDeployment missing"
        gen = md["metadata"].get("generation")
        if name in p.generation and gen != p.generation[name]:
            return "spec change not stored yet"
        st = md.get("status") or {}
        dep = self.deps.get(f"{name}-stable")
        if dep is None:
            return "no Deployment"
        if dep["spec"].get("replicas") != p.replicas:
            return f"Deployment spec.replicas={dep['spec'].get('replicas')} (operator)"
        if not self.deployment_ready(name, p.replicas):
            return "Deployment not rolled out (controller-manager/scheduler/kwok)"
        for svc in (name, f"{name}-stable"):
            if self.svcs.get(svc) is None:
                return f"no Service {svc}"
        if st.get("observedGeneration") != gen:
            return "status.observedGeneration behind (operator)"
        ready = condition(md, "Ready")
        if ready.get("status") != "True":
            return f"Ready={ready.get('status')} {ready.get('reason')} in status (operator)"
        if st.get("readyReplicas") != p.replicas:
            return f"status.readyReplicas={st.get('readyReplicas')} (operator)"
        return "done"

    def evaluate(self, name: str) -> None:
        with self.lock:
            p = self.phase
            if p is None or p.end is not None:
                return
            md = self.mds.get(name)
            if md is None:
                return
            now = time.monotonic()
            if self.deployment_ready(name, p.replicas):
                p.dep_done.setdefault(name, now)
            else:
                p.dep_done.pop(name, None)
            if self._md_ready(md, p):
                p.md_done.setdefault(name, now)
            else:
                p.md_done.pop(name, None)
            if len(p.md_done) == len(p.names):
                p.end = now
            self.changed.notify_all()

    def _md_ready(self, md: Obj, p: Phase) -> bool:
        name = md["metadata"]["name"]
        gen = md["metadata"].get("generation")
        if name in p.generation and gen != p.generation[name]:
            return False
        st = md.get("status") or {}
        if st.get("observedGeneration") != gen or st.get("readyReplicas") != p.replicas:
            return False
        if condition(md, "Ready").get("status") != "True":
            return False
        if not self.deployment_ready(name, p.replicas):
            return False
        children = [self.deps.get(f"{name}-stable"), self.svcs.get(name)]
        children.append(self.svcs.get(f"{name}-stable"))
        return all(c is not None and controlled_by(c, md) for c in children)

    def begin(self, p: Phase) -> None:
        with self.lock:
            p.start = time.monotonic()
            self.phase = p

    def reevaluate_all(self) -> None:
        assert self.phase is not None
        for n in self.phase.names:
            self.evaluate(n)


# ----------------------------------------------------------------------------------- measuring
def audit_since(path: Path | None, offset: int) -> Iterator[Obj]:
    if path is None:
        return
    with path.open("rb") as f:
        f.seek(offset)
        for raw in f:
            with contextlib.suppress(ValueError):
                ev = json.loads(raw)
                if ev.get("stage") == "ResponseComplete":
                    yield ev


def audit_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


def short_user(u: str) -> str:
    u = u.removeprefix("system:serviceaccount:")
    return "operator" if u == f"{OPERATOR_NS}:{OPERATOR_SA}" else u.removeprefix("kube-system:")


def summarise_audit(path: Path | None, offset: int, ns: str) -> dict[str, Any]:
    op: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    others: Counter[str] = Counter()
    reads: Counter[str] = Counter()
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    for ev in audit_since(path, offset):
        ref = ev.get("objectRef") or {}
        user = short_user((ev.get("user") or {}).get("username", ""))
        if ev.get("verb") in ("get", "list") and user == "operator":
            # only with an audit policy that logs the operator's reads (the default does not)
            reads[f"{ev['verb']} {ref.get('resource')}"] += 1
            continue
        if ev.get("verb") not in MUTATING:
            continue
        code = str((ev.get("responseStatus") or {}).get("code", ""))
        if user == "operator":
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            op[f"{ev['verb']} {ref.get('resource')}{sub}"] += 1
            if not code.startswith("2"):
                codes[code] += 1
        elif ref.get("namespace") == ns:
            others[user] += 1
        if ref.get("namespace") == ns:
            ts = str(ev.get("stageTimestamp", ""))
            first.setdefault(user, ts)
            last[user] = ts
    return {
        "operator": op,
        "operator_errors": codes,
        "others": others,
        "reads": reads,
        "last": last,
    }


def apiserver_reads(c: Cluster) -> Counter[str]:
    """GET/LIST served by the API server for the resources the operator reads (all clients)."""
    out: Counter[str] = Counter()
    try:
        text = c.kubectl_run("get", "--raw", "/metrics")
    except (RuntimeError, OSError) as e:  # metrics are a nice-to-have
        log(f"no apiserver metrics: {e}")
        return out
    pat = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")
    for line in text.splitlines():
        m = pat.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("verb") in ("GET", "LIST") and labels.get("resource") in READ_RESOURCES:
            out[f"{labels['verb']} {labels['resource']}"] += int(float(m.group(2)))
    return out


@dataclass
class Snapshot:
    t: float
    wall: float
    audit: int
    reads: Counter[str]
    cpu: dict[str, float]
    health: Obj
    log_size: int


def snapshot(c: Cluster, admin: k8s.ApiClient, op: Operator) -> Snapshot:
    cpu = {name: cpu_seconds(pid) for name, pid in c.component_pids().items()}
    cpu["operator"] = cpu_seconds(op.pid)
    return Snapshot(
        time.monotonic(),
        time.time(),
        audit_size(c.audit_log),
        apiserver_reads(c),
        cpu,
        op.health(),
        op.log_path.stat().st_size if op.log_path.exists() else 0,
    )


def reconciles_of(health: Obj) -> tuple[int, int] | None:
    for v in health.values():
        if isinstance(v, dict) and "reconciles" in v:
            return int(v["reconciles"]), int(v.get("writes", 0))
    return None


def log_counts(path: Path, start: int, end: int) -> Counter[str]:
    out: Counter[str] = Counter()
    with path.open("rb") as f:
        f.seek(start)
        for raw in f.read(max(0, end - start)).decode(errors="replace").splitlines():
            for word in ("WARNING", "ERROR", "retrying", "TemporaryError", "Throttl"):
                if word in raw:
                    out[word] += 1
    return out


def report(
    title: str,
    c: Cluster,
    ns: str,
    op: Operator,
    before: Snapshot,
    after: Snapshot,
    n_reconciled: int | None = None,
) -> None:
    wall = after.t - before.t
    log(f"--- {title}: {wall:.1f} s wall, {load_str()}")
    audit = summarise_audit(c.audit_log, before.audit, ns)
    if c.audit_log is not None:
        total = sum(audit["operator"].values())
        per = f" ({total / n_reconciled:.1f} per object)" if n_reconciled else ""
        log(f"    operator writes (audit): {total}{per}: {dict(audit['operator'].most_common())}")
        if audit["operator_errors"]:
            log(f"    operator writes refused, by HTTP code: {dict(audit['operator_errors'])}")
        log(f"    others' writes in the namespace: {dict(audit['others'].most_common(8))}")
        ends = {}
        for user, ts in audit["last"].items():
            with contextlib.suppress(ValueError):
                ends[user] = datetime.fromisoformat(ts).timestamp() - before.wall
        if ends:
            log(
                "    last write into the namespace, s after the phase began: "
                + ", ".join(f"{u} {v:.0f}" for u, v in sorted(ends.items(), key=lambda x: x[1]))
            )
    if audit["reads"]:
        total = sum(audit["reads"].values())
        per = f" ({total / n_reconciled:.1f} per object)" if n_reconciled else ""
        log(f"    operator reads (audit): {total}{per}: {dict(audit['reads'].most_common())}")
    reads = after.reads - before.reads
    if reads:
        per = f" ({sum(reads.values()) / n_reconciled:.1f} per object)" if n_reconciled else ""
        log(
            f"    API reads of the operator's resources (apiserver, all clients){per}: "
            f"{dict(reads.most_common())}"
        )
    rec_a, rec_b = reconciles_of(after.health), reconciles_of(before.health)
    if rec_a and rec_b:
        log(
            f"    operator reconciles: {rec_a[0] - rec_b[0]}, writes it counted: "
            f"{rec_a[1] - rec_b[1]} (liveness probe, may lag)"
        )
    cpu = {k: after.cpu.get(k, 0) - before.cpu.get(k, 0) for k in after.cpu}
    log(
        "    CPU seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + f" (over {wall:.0f} s on {os.cpu_count()} cores)"
    )
    log(
        f"    operator RSS: peak {op.rss_peak_kib / 1024:.0f} MiB, now {op.rss_kib() / 1024:.0f} "
        f"MiB (VmHWM since start {op.rss_kib('VmHWM') / 1024:.0f} MiB)"
    )
    counts = log_counts(op.log_path, before.log_size, after.log_size)
    if counts:
        log(f"    operator log lines: {dict(counts)}")


# ---------------------------------------------------------------------------------------- bench
def md_manifest(name: str, replicas: int) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"storageUri": "s3://models/iris/v1/", "format": "sklearn"},
            "replicas": replicas,
        },
    }


def apply_all(
    custom: k8s.CustomObjectsApi, ns: str, names: list[str], replicas: int, threads: int
) -> dict[str, int]:
    """Server-side apply of every manifest, `threads` at a time; returns name -> generation."""

    def one(name: str) -> tuple[str, int]:
        for attempt in range(5):
            try:
                resp = custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    ns,
                    PLURAL,
                    name,
                    md_manifest(name, replicas),
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type="application/apply-patch+yaml",
                    _preload_content=False,
                    _request_timeout=60,
                )
                return name, int(json.loads(resp.data)["metadata"]["generation"])
            except ApiException as e:
                if attempt == 4 or e.status not in (409, 429, 500, 503, 504):
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, names))


def wait_phase(t: Tracker, p: Phase, timeout: float) -> None:
    deadline = p.start + timeout
    next_progress = time.monotonic() + 10
    t.reevaluate_all()
    with t.lock:
        while p.end is None and time.monotonic() < deadline:
            t.changed.wait(1.0)
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + 10
                log(
                    f"    {p.name} +{now - p.start:.0f}s: {len(p.dep_done)}/{len(p.names)} "
                    f"Deployments rolled out, {len(p.md_done)}/{len(p.names)} ModelDeployments "
                    f"Ready; {load_str()}"
                )
                if len(p.md_done) + 20 >= len(p.names):
                    t.reevaluate_all()  # cheap, and catches an event we might have missed


def phase_result(t: Tracker, p: Phase, timeout: float) -> None:
    n = len(p.names)

    def rel(ts: dict[str, float]) -> str:
        if not ts:
            return "none"
        vals = sorted(v - p.start for v in ts.values())
        return (
            f"{len(vals)}/{n}: p50 {vals[len(vals) // 2]:.1f} s, "
            f"p90 {vals[int(len(vals) * 0.9)]:.1f} s, last {vals[-1]:.1f} s"
        )

    if p.end is not None:
        log(
            f"*** {p.name}: all {n} Ready in {p.end - p.start:.1f} s "
            f"(target < {TARGETS[p.name]:.0f} s)"
        )
    else:
        log(f"*** {p.name}: NOT converged within {timeout:.0f} s: {len(p.md_done)}/{n} Ready")
        why = Counter(t.why_not(name, p) for name in p.names if name not in p.md_done)
        log(f"    stragglers wait for: {dict(why.most_common())}")
        with contextlib.suppress(ApiException):
            for node in t.core.list_node().items:
                ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
                cond = f"{ready[0].status} {ready[0].reason}" if ready else "?"
                log(f"    node {node.metadata.name}: Ready={cond}")
    log(f"    Deployments rolled out (cluster side): {rel(p.dep_done)}")
    log(f"    ModelDeployments Ready with children:  {rel(p.md_done)}")
    lags = sorted(p.md_done[k] - p.dep_done[k] for k in p.md_done if k in p.dep_done)
    if lags:
        log(
            f"    status lag after the Deployment was done (operator side): "
            f"p50 {lags[len(lags) // 2]:.1f} s, p90 {lags[int(len(lags) * 0.9)]:.1f} s, "
            f"max {lags[-1]:.1f} s"
        )


def cleanup(core: k8s.CoreV1Api, custom: k8s.CustomObjectsApi, ns: str, timeout: float) -> None:
    """Deletes the namespace and waits for it to go, so the next run starts from a quiet
    cluster; says what holds it up if it does not go."""
    t = time.monotonic()
    try:
        core.delete_namespace(ns)
    except ApiException as e:
        log(f"could not delete namespace {ns}: {e.reason}")
        return
    while time.monotonic() - t < timeout:
        try:
            core.read_namespace(ns)
        except ApiException as e:
            if e.status == 404:
                log(f"namespace {ns} deleted in {time.monotonic() - t:.0f} s")
                return
        time.sleep(2)
    held: Counter[str] = Counter()
    with contextlib.suppress(ApiException):
        for md in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
            for f in md["metadata"].get("finalizers") or []:
                held[f] += 1
    log(
        f"namespace {ns} still terminating after {timeout:.0f} s; finalizers on "
        f"ModelDeployments: {dict(held) or 'none'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=500, help="ModelDeployments (default 500)")
    ap.add_argument(
        "--cluster-dir",
        type=Path,
        default=REPO / ".local-cluster" / "bench",
        help="local control plane state dir (hack/local-cluster.sh up)",
    )
    ap.add_argument("--kubeconfig", type=Path, help="use this cluster (admin) instead")
    ap.add_argument(
        "--operator-kubeconfig",
        type=Path,
        help="with --kubeconfig: the operator's credentials (default: a token of "
        "its ServiceAccount, RBAC from deploy/)",
    )
    ap.add_argument("--keep-cluster", action="store_true", help="leave a cluster we started up")
    ap.add_argument("--keep-namespace", action="store_true", help="leave the objects behind")
    ap.add_argument("--timeout", type=float, default=600, help="per phase (default 600 s)")
    ap.add_argument("--quiet-seconds", type=float, default=60)
    ap.add_argument("--threads", type=int, default=16, help="concurrent applies (default 16)")
    ap.add_argument("--python", default=sys.executable, help="runs -m modeldeploy_operator")
    ap.add_argument("--operator-cmd", help="instead of '<python> -m modeldeploy_operator'")
    ap.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator (repeatable)",
    )
    ap.add_argument("--skip-update", action="store_true")
    ap.add_argument(
        "--cleanup-timeout", type=float, default=180, help="wait for the namespace to go"
    )
    args = ap.parse_args(argv)

    log(f"operator_scale: N={args.n}, {os.cpu_count()} cores, {load_str()}")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"operator-scale-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    if args.kubeconfig:
        c = external_cluster(args.kubeconfig, args.operator_kubeconfig, tmp)
    else:
        c = local_cluster(args.cluster_dir.resolve())
    admin = api_client(c.kubeconfig, args.threads + 8)
    custom, apps, core = k8s.CustomObjectsApi(admin), k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"modeldeploy-bench": "1"}}})
    log_dir = c.state_dir / "logs" if c.state_dir else tmp
    op_log = log_dir / f"operator-{ns}.log"
    cmd = (
        shlex.split(args.operator_cmd)
        if args.operator_cmd
        else [args.python, "-m", "modeldeploy_operator"]
    )
    env = dict(kv.split("=", 1) for kv in args.operator_env)
    tracker: Tracker | None = None
    op = Operator(cmd, c.operator_kubeconfig, env, op_log)
    try:
        op.wait_alive()
        log(
            f"operator pid {op.pid} ({shlex.join(cmd)}), log {op_log}, env {env or '{}'}; "
            f"RSS {op.rss_kib() / 1024:.0f} MiB idle; namespace {ns}"
        )
        for _ in range(120):  # the namespace's ServiceAccount, as a user would find it
            try:
                core.read_namespaced_service_account("default", ns)
                break
            except ApiException:
                time.sleep(0.5)
        tracker = Tracker(custom, apps, core, ns)
        names = [f"md-{i:04d}" for i in range(args.n)]

        # 1. create
        p1 = Phase("create", 1, names)
        op.reset_peak()
        s0 = snapshot(c, admin, op)
        tracker.begin(p1)
        t = time.monotonic()
        p1.generation = apply_all(custom, ns, names, 1, args.threads)
        log(f"=== create: {args.n} applied in {time.monotonic() - t:.1f} s; waiting ({load_str()})")
        wait_phase(tracker, p1, args.timeout)
        phase_result(tracker, p1, args.timeout)
        s1 = snapshot(c, admin, op)
        report("create", c, ns, op, s0, s1, args.n)
        peaks = {"create": op.rss_peak_kib}

        # 2. update wave
        if not args.skip_update:
            time.sleep(2)
            p2 = Phase("update", 2, names)
            op.reset_peak()
            s1 = snapshot(c, admin, op)
            tracker.begin(p2)
            t = time.monotonic()
            p2.generation = apply_all(custom, ns, names, 2, args.threads)
            log(
                f"=== update: {args.n} re-applied with replicas 2 in "
                f"{time.monotonic() - t:.1f} s; waiting ({load_str()})"
            )
            wait_phase(tracker, p2, args.timeout)
            phase_result(tracker, p2, args.timeout)
            s2 = snapshot(c, admin, op)
            report("update", c, ns, op, s1, s2, args.n)
            peaks["update"] = op.rss_peak_kib
            s1 = s2

        # 3. quiet minute
        op.reset_peak()
        time.sleep(2)
        s_q = snapshot(c, admin, op)
        log(f"=== quiet: {args.quiet_seconds:.0f} s without changes ({load_str()})")
        time.sleep(args.quiet_seconds)
        s_e = snapshot(c, admin, op)
        report("quiet", c, ns, op, s_q, s_e)
        audit = summarise_audit(c.audit_log, s_q.audit, ns)
        writes = sum(audit["operator"].values())
        peaks["quiet"] = op.rss_peak_kib

        log("=== summary")
        results = [("create", p1)] + ([("update", p2)] if not args.skip_update else [])
        for label, p in results:
            took = (
                f"{p.end - p.start:.1f} s" if p.end else f"> {args.timeout:.0f} s (not converged)"
            )
            log(f"    {label:7s} N={args.n}: {took}  (target < {TARGETS[label]:.0f} s)")
        if c.audit_log is not None:
            log(f"    quiet   {args.quiet_seconds:.0f} s: {writes} operator writes (target 0)")
        else:
            log("    quiet: no audit log on this cluster (use the local control plane)")
        peak_all = max(peaks.values()) / 1024
        log(
            f"    operator RSS peak {peak_all:.0f} MiB "
            + ", ".join(f"{k} {v / 1024:.0f}" for k, v in peaks.items())
            + f"; end {op.rss_kib() / 1024:.0f} MiB (target < {TARGET_RSS_MIB:.0f} MiB); "
            + load_str()
        )
    finally:
        if tracker is not None:
            tracker.stop()
        if not args.keep_namespace:
            # While the operator still runs: a finalizer it added would otherwise block this.
            cleanup(core, custom, ns, args.cleanup_timeout)
        op.stop()
        if c.started and not args.keep_cluster:
            log("stopping the local control plane we started")
            subprocess.run(
                ["bash", str(LOCAL_CLUSTER), "down"],
                env=cluster_env(c.state_dir or Path()),
                capture_output=True,
                check=False,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
