"""Helpers for the operator's integration tests: the cluster handle, the operator process, kubectl,
waiting for convergence, and reading the ModelDeployment's children.

Everything here makes real calls against a real API server; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

REPO_ROOT = Path(__file__).resolve().parents[3]
GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"
CRD_NAME = f"{PLURAL}.{GROUP}"
OPERATOR_NS = "modeldeploy-system"
OPERATOR_SA = "modeldeploy-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
SERVER_IMAGE = "modeldeploy-server:0.1.0"

# The documented contract (docs/architecture.md).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TRACK = "modeldeploy.io/track"

# Convergence deadlines (not assertions about speed: a test only fails when nothing converges).
CONVERGE_S = float(os.environ.get("MODELDEPLOY_TEST_CONVERGE_SECONDS", "120"))

T = TypeVar("T")

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------- waiting
class NotConvergedError(AssertionError):
    pass


def wait_established(kubectl: Callable[..., object], crd: str, timeout: float = 60) -> None:
    """``kubectl wait --for=condition=Established``, asked again while the CRD has no
    status.conditions yet: for a CRD created a moment ago kubectl fails at once ("accessor
    error: <nil> ... expected []interface{}") instead of waiting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl("wait", "--for=condition=Established", f"crd/{crd}", f"--timeout={timeout:g}s")
            return
        except (subprocess.CalledProcessError, RuntimeError) as e:
            said = f"{e} {getattr(e, 'stderr', '') or ''}"
            if "accessor error" not in said or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def wait_until(
    probe: Callable[[], T | bool | None],
    what: str,
    timeout: float = CONVERGE_S,
    interval: float = 0.5,
) -> T:
    """Polls `probe` until it returns something truthy and returns that; fails with `what` and the
    last value (or exception) seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value  # type: ignore[return-value]
            last = value
        except (
            ApiException,
            AssertionError,
            KeyError,
            TypeError,
            subprocess.CalledProcessError,
        ) as e:
            last = e
        if time.monotonic() > deadline:
            raise NotConvergedError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def eventually(check: Callable[[], None], what: str, timeout: float = CONVERGE_S) -> None:
    """Retries `check` (a function that asserts) until it passes or the deadline passes; then the
    last assertion error is raised so the failure names the real difference."""

    def probe() -> bool:
        check()
        return True

    try:
        wait_until(probe, what, timeout)
    except NotConvergedError:
        check()  # one last time, to raise the real assertion
        raise


# ---------------------------------------------------------------------------------------- cluster
@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_bin: Path
    state_dir: Path | None  # None when the cluster was given by MODELDEPLOY_TEST_KUBECONFIG
    api_client: k8s.ApiClient = field(init=False)

    def __post_init__(self) -> None:
        self.api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )

    @property
    def audit_log(self) -> Path | None:
        if self.state_dir is None:
            return None
        path = self.state_dir / "logs" / "audit.log"
        return path if path.exists() else None

    @property
    def simulates_crashes(self) -> bool:
        """True on hack/local-cluster.sh's cluster, whose kwok stages crash pods whose STORAGE_URI
        contains /kwok-crash/."""
        return self.state_dir is not None and (self.state_dir / "kwok-stages.yaml").exists()

    # typed API handles
    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api_client)

    @property
    def autoscaling(self) -> k8s.AutoscalingV2Api:
        return k8s.AutoscalingV2Api(self.api_client)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api_client)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.kubectl_bin), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            err = subprocess.CalledProcessError(
                proc.returncode, cmd, output=proc.stdout, stderr=proc.stderr
            )
            err.add_note(f"kubectl said: {proc.stderr.strip() or proc.stdout.strip()}")
            raise err
        return proc

    def apply_yaml(self, namespace: str, manifest: str | Obj | list[Obj]) -> str:
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = yaml.safe_dump_all(docs)
        return self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest).stdout

    # ModelDeployments
    def get_md(self, namespace: str, name: str) -> Obj:
        return cast(
            Obj, self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )

    def create_md(self, namespace: str, body: Obj) -> Obj:
        return cast(
            Obj,
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body),
        )

    def patch_md(self, namespace: str, name: str, patch: Obj) -> Obj:
        return cast(
            Obj,
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            ),
        )

    def delete_md(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    # children, as plain dicts (the shape kubectl shows)
    def _to_dict(self, obj: Any) -> Obj:
        return cast(Obj, self.api_client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def deployments(self, namespace: str, instance: str) -> list[Obj]:
        items = self.apps.list_namespaced_deployment(
            namespace, label_selector=f"{LABEL_INSTANCE}={instance}"
        ).items
        return [self._to_dict(d) for d in items]

    def deployment(self, namespace: str, name: str) -> Obj:
        return self._to_dict(self.apps.read_namespaced_deployment(name, namespace))

    def services(self, namespace: str, instance: str) -> list[Obj]:
        items = self.core.list_namespaced_service(
            namespace, label_selector=f"{LABEL_INSTANCE}={instance}"
        ).items
        return [self._to_dict(s) for s in items]

    def service(self, namespace: str, name: str) -> Obj:
        return self._to_dict(self.core.read_namespaced_service(name, namespace))

    def hpas(self, namespace: str) -> list[Obj]:
        items = self.autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items
        return [self._to_dict(h) for h in items]

    def replicasets(self, namespace: str, instance: str) -> list[Obj]:
        items = self.apps.list_namespaced_replica_set(
            namespace, label_selector=f"{LABEL_INSTANCE}={instance}"
        ).items
        return [self._to_dict(r) for r in items]

    def pods(self, namespace: str, instance: str) -> list[Obj]:
        items = self.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_INSTANCE}={instance}"
        ).items
        return [self._to_dict(p) for p in items]


def condition(obj: Obj, ctype: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def is_ready(md: Obj) -> bool:
    c = condition(md, "Ready")
    status = md.get("status") or {}
    return bool(
        c
        and c.get("status") == "True"
        and status.get("observedGeneration") == md["metadata"]["generation"]
    )


def wait_md_ready(cluster: Cluster, namespace: str, name: str, timeout: float = CONVERGE_S) -> Obj:
    return wait_until(
        lambda: md if is_ready(md := cluster.get_md(namespace, name)) else None,
        f"ModelDeployment {namespace}/{name} to be Ready at its current generation",
        timeout,
    )


def ready_md(cluster: Cluster, namespace: str, name: str) -> Obj:
    """The ModelDeployment, asserting it is Ready at its current generation (no waiting: for use
    inside `eventually`)."""
    md = cluster.get_md(namespace, name)
    assert is_ready(md), f"{namespace}/{name} not Ready at generation: {md.get('status')}"
    return md


def md_manifest(name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def iris_spec(**overrides: Any) -> Obj:
    spec: Obj = {
        "model": {"storageUri": "s3://models/iris/v1/", "format": "sklearn"},
        "replicas": 2,
    }
    spec.update(overrides)
    return spec


def load_yaml_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"expected one server container, got {containers}"
    c: Obj = containers[0]
    return c


def env_of(c: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env") or [] if "name" in e}


def track_replicas(cluster: Cluster, namespace: str, name: str) -> dict[str, int]:
    """spec.replicas of each track's Deployment, keyed by the track label."""
    out: dict[str, int] = {}
    for d in cluster.deployments(namespace, name):
        track = d["metadata"]["labels"].get(LABEL_TRACK, "?")
        out[track] = int(d["spec"].get("replicas") or 0)
    return out


# ---------------------------------------------------------------------------------------- operator
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """The real operator (`.venv/bin/modeldeploy-operator`) as a subprocess, authenticated as its
    ServiceAccount through `kubeconfig`, logging to `log_path`."""

    def __init__(self, kubeconfig: Path, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.liveness_port = 0
        self.metrics_port = 0  # the operator's Prometheus /metrics, a free port per start

    @property
    def executable(self) -> Path:
        return REPO_ROOT / ".venv" / "bin" / "modeldeploy-operator"

    @property
    def command(self) -> list[str]:
        """The operator's console script, or MODELDEPLOY_TEST_OPERATOR_CMD (split on spaces)."""
        override = os.environ.get("MODELDEPLOY_TEST_OPERATOR_CMD")
        return override.split() if override else [str(self.executable)]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "MODELDEPLOY_SERVER_IMAGE": env.get("MODELDEPLOY_SERVER_IMAGE", SERVER_IMAGE),
                "PYTHONUNBUFFERED": "1",
                # several drift-timer ticks inside the one-minute no-writes window
                "MODELDEPLOY_RESYNC_SECONDS": env.get("MODELDEPLOY_RESYNC_SECONDS", "15"),
                # and several rounds of the pods' drift gauges (kwok pods don't answer: a
                # round that reads none must write nothing)
                "MODELDEPLOY_DRIFT_SECONDS": env.get("MODELDEPLOY_DRIFT_SECONDS", "15"),
            }
        )
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never fall back to in-cluster config
        self.starts += 1
        self.liveness_port = free_port()
        # A free port, not the default 8081: the tests share the host with other operators.
        self.metrics_port = free_port()
        env["MODELDEPLOY_METRICS_PORT"] = str(self.metrics_port)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== operator start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    *self.command,
                    "--liveness",
                    f"http://127.0.0.1:{self.liveness_port}/healthz",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(REPO_ROOT),
                start_new_session=True,
            )

    def wait_alive(self, timeout: float = 60) -> None:
        """Until kopf's liveness endpoint answers 200 (the operator has started its watches)."""

        def alive() -> bool:
            assert self.running(), f"the operator exited; see {self.log_path}"
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2
                ) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(alive, "the operator's liveness endpoint", timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer handling, exactly like an OOM kill or a node loss."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int, max_lines: int = 300) -> str:
        if not self.log_path.exists():
            return "(no operator log)"
        with self.log_path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-max_lines:])


# ---------------------------------------------------------------------------------------- audit
def audit_events(path: Path, offset: int) -> Iterator[Obj]:
    with path.open("rb") as f:
        f.seek(offset)
        for raw in f:
            line = raw.strip()
            if line:
                yield json.loads(line)


MUTATING = {"create", "update", "patch", "delete", "deletecollection"}


def operator_writes(path: Path, offset: int, namespace: str) -> list[str]:
    """Mutating requests the operator's ServiceAccount sent into `namespace` since `offset`, as
    `verb resource/name` lines (any response code: a rejected write is still a write attempt)."""
    out = []
    for ev in audit_events(path, offset):
        if ev.get("stage") != "ResponseComplete":
            continue
        if (ev.get("user") or {}).get("username") != OPERATOR_USER:
            continue
        if ev.get("verb") not in MUTATING:
            continue
        ref = ev.get("objectRef") or {}
        if ref.get("namespace") != namespace:
            continue
        sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
        out.append(f"{ev['verb']} {ref.get('resource')}{sub}/{ref.get('name', '')}")
    return out
