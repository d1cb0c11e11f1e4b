"""spec.auth's server side against the real kube-apiserver: the real server process reviews real
ServiceAccount tokens with a real TokenReview and SubjectAccessReview, as its pod would.

The setup is what the operator makes for a ModelDeployment with spec.auth (its own tests prove
it does): ServiceAccount `iris-server` bound to deploy/rbac.yaml's ClusterRole
`modeldeploy-server-auth`. Around it, what a platform team would write: a client ServiceAccount
with a Role granting `create` on `modeldeployments/predict` for resourceNames [iris], and one with
nothing. The server runs on loopback (`python -m modeldeploy_server`) with AUTH_* pointing at the
test API server and the server account's token, so nothing here needs a node. No operator runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
import yaml
from gateway_harness import api_server_of, cluster_kubectl
from operator_harness import REPO_ROOT, Cluster, free_port, wait_until
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

CACHE_SECONDS = 3
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
V1_BODY = {"instances": [SETOSA, VIRGINICA]}
V2_BODY = {
    "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": SETOSA + VIRGINICA}]
}
PREDICT_RULE = {
    "apiGroups": ["modeldeploy.io"],
    "resources": ["modeldeployments/predict"],
    "verbs": ["create"],
    "resourceNames": ["iris"],
}


@dataclass
class ServerProc:
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=30)


@dataclass
class AuthSetup:
    cluster: Cluster
    namespace: str
    api_server: str
    ca_file: Path
    tokens: dict[str, str]  # ServiceAccount name -> token
    server: ServerProc


def _server_auth_role(cluster: Cluster) -> None:
    """deploy/rbac.yaml's modeldeploy-server-auth, exactly as shipped (conftest applies only the
    operator's RBAC, and only for clusters it did not start)."""
    docs = yaml.safe_load_all((REPO_ROOT / "deploy" / "rbac.yaml").read_text())
    role = [
        d
        for d in docs
        if d
        and d.get("kind") == "ClusterRole"
        and d["metadata"]["name"] == "modeldeploy-server-auth"
    ]
    assert len(role) == 1, "deploy/rbac.yaml lost ClusterRole modeldeploy-server-auth"
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(role[0])
    )


def _token(cluster: Cluster, namespace: str, account: str) -> str:
    return cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()


def _model(directory: Path) -> Path:
    x, y = load_iris(return_X_y=True)
    path = directory / "model.joblib"
    joblib.dump(RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y), path)
    return path


def start_server(
    directory: Path, model: Path, namespace: str, api: str, ca: Path, token: str, tag: str
) -> ServerProc:
    token_file = directory / f"{tag}.token"
    token_file.write_text(token)
    port = free_port()
    log = directory / f"{tag}.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KUBERNETES_", "AUTH_", "AWS_", "MODEL"))
    }
    env.update(
        {
            "MODEL_NAME": "iris",
            "MODEL_NAMESPACE": namespace,
            "STORAGE_URI": str(model),
            "MODEL_DIR": str(directory / f"{tag}-models"),
            "TERMINATION_LOG": str(directory / f"{tag}.termination-log"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "GRPC_PORT": "0",  # HTTP is what this test calls; 8081 may be taken
            "AUTH_ENABLED": "true",
            "AUTH_CACHE_SECONDS": str(CACHE_SECONDS),
            "AUTH_API_SERVER": api,
            "AUTH_TOKEN_FILE": str(token_file),
            "AUTH_CA_FILE": str(ca),
            "PYTHONUNBUFFERED": "1",
        }
    )
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy_server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    proc = ServerProc(popen, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        assert popen.poll() is None, f"server exited {popen.returncode}:\n{proc.output()}"
        try:
            return httpx.get(f"{proc.url}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, f"the {tag} server to be ready", 120, interval=0.2)
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.fixture(scope="module")
def auth(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthSetup]:
    directory = tmp_path_factory.mktemp("server-auth")
    _server_auth_role(cluster)
    ns = f"it-auth-{uuid.uuid4().hex[:8]}"
    binding = f"modeldeploy-auth.{ns}.iris"  # the name the operator gives it
    cluster.kubectl("create", "namespace", ns)
    server: ServerProc | None = None
    try:
        cluster.apply_yaml(
            ns,
            [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n}}
                for n in ("iris-server", "caller", "stranger", "unbound-server")
            ]
            + [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": binding},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "modeldeploy-server-auth",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "iris-server", "namespace": ns}
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "predict-iris"},
                    "rules": [PREDICT_RULE],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "caller-predicts-iris"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "predict-iris",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "caller", "namespace": ns}],
                },
            ],
        )
        # kubectl create token fails until the ServiceAccount exists: wait for each.
        tokens: dict[str, str] = {}
        for sa in ("iris-server", "caller", "stranger", "unbound-server"):
            tokens[sa] = wait_until(partial(_token, cluster, ns, sa), f"a token for {sa}", 60)
        api, ca = api_server_of(cluster_kubectl(cluster), directory)
        model = _model(directory)
        server = start_server(directory, model, ns, api, ca, tokens["iris-server"], "server")
        yield AuthSetup(cluster, ns, api, ca, tokens, server)
    finally:
        if server is not None:
            server.stop()
        cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def call(setup: AuthSetup, path: str, body: Any = None, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    url = setup.server.url + path
    if body is None:
        return httpx.get(url, headers=headers, timeout=30)
    return httpx.post(url, json=body, headers=headers, timeout=30)


def metric(setup: AuthSetup, name: str) -> float:
    text = httpx.get(setup.server.url + "/metrics", timeout=10).text
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
    ]
    return values[0] if values else 0.0


def test_permitted_service_account_gets_v1_and_v2_predictions(auth: AuthSetup) -> None:
    token = auth.tokens["caller"]
    v1 = call(auth, "/v1/models/iris:predict", V1_BODY, token)
    assert v1.status_code == 200, v1.text
    assert v1.json() == {"predictions": [0, 2]}
    v2 = call(auth, "/v2/models/iris/infer", V2_BODY, token)
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == [0, 2]
    meta = call(auth, "/v2/models/iris", token=token)
    assert meta.status_code == 200
    assert meta.json()["name"] == "iris"


def test_authenticated_but_not_permitted_is_403_naming_the_grant(auth: AuthSetup) -> None:
    for path, body in (("/v1/models/iris:predict", V1_BODY), ("/v2/models/iris/infer", V2_BODY)):
        r = call(auth, path, body, auth.tokens["stranger"])
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        ns = auth.namespace
        assert error.startswith(
            f"system:serviceaccount:{ns}:stranger may not create modeldeployments/predict on "
            f"{ns}/iris: grant it with a Role in {ns}"
        )
    # The server's own account may review tokens, not call the model.
    own = call(auth, "/v1/models/iris:predict", V1_BODY, auth.tokens["iris-server"])
    assert own.status_code == 403


def test_no_token_or_a_garbage_token_is_401(auth: AuthSetup) -> None:
    bare = call(auth, "/v1/models/iris:predict", V1_BODY)
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"].startswith("Bearer")
    assert "missing bearer token" in bare.json()["error"]
    forged = auth.tokens["caller"][:-8] + "AAAAAAAA"  # a JWT whose signature doesn't verify
    for token in ("garbage", forged):
        r = call(auth, "/v2/models/iris/infer", V2_BODY, token)
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert "not accepted by the Kubernetes API server" in r.json()["error"]


def test_health_and_metrics_stay_open(auth: AuthSetup) -> None:
    for path in ("/healthz", "/ready", "/v2/health/live", "/v2/health/ready", "/metrics"):
        assert call(auth, path).status_code == 200, path


def test_repeated_requests_are_answered_from_the_cache(auth: AuthSetup) -> None:
    token = auth.tokens["caller"]
    name = 'modeldeploy_auth_requests_total{cache="hit",outcome="allowed"}'
    before = metric(auth, name)
    for _ in range(20):
        assert call(auth, "/v1/models/iris:predict", V1_BODY, token).status_code == 200
    # cacheSeconds is short, so a review may fall inside the loop; most answers are hits.
    assert metric(auth, name) - before >= 15


def test_server_account_without_the_cluster_role_answers_503_naming_it(
    auth: AuthSetup, tmp_path: Path
) -> None:
    unbound = start_server(
        tmp_path,
        _model(tmp_path),
        auth.namespace,
        auth.api_server,
        auth.ca_file,
        auth.tokens["unbound-server"],
        "unbound",
    )
    try:
        r = httpx.post(
            unbound.url + "/v1/models/iris:predict",
            json=V1_BODY,
            headers={"authorization": f"Bearer {auth.tokens['caller']}"},
            timeout=30,
        )
    finally:
        unbound.stop()
    assert r.status_code == 503, r.text
    assert "may not create TokenReviews" in r.json()["error"]
    assert "modeldeploy-server-auth" in r.json()["error"]
    assert auth.tokens["caller"] not in unbound.output()  # tokens are never logged


def test_revoked_role_binding_takes_effect_after_cache_seconds(auth: AuthSetup) -> None:
    """Last in the module: it takes the caller's permission away."""
    token = auth.tokens["caller"]
    assert call(auth, "/v1/models/iris:predict", V1_BODY, token).status_code == 200
    auth.cluster.kubectl("delete", "rolebinding", "caller-predicts-iris", "-n", auth.namespace)
    revoked_at = time.monotonic()

    def forbidden() -> bool:
        return call(auth, "/v1/models/iris:predict", V1_BODY, token).status_code == 403

    # RBAC's informer sees the deletion within a moment; the cached decision lives at most
    # cacheSeconds more. The deadline is generous; the figure is reported, not asserted.
    wait_until(forbidden, "the revoked caller to get 403", CACHE_SECONDS + 30, interval=0.2)
    took = time.monotonic() - revoked_at
    print(f"revocation took effect after {took:.1f} s (cacheSeconds {CACHE_SECONDS})")
    assert auth.server.popen.poll() is None
