"""kube.py's REST layer over real HTTP: paths, the Status error mapping, a rotated token.

The API server itself is exercised by the integration tests (tests/integration/operator); a
token that rotates between two requests is a fault it cannot be made to show on cue, so a
small HTTP server stands in for it here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from modeldeploy_operator.errors import ApiError
from modeldeploy_operator.kube import Kube, resource_path
from modeldeploy_operator.kubeauth import Credentials


class FakeApiServer(BaseHTTPRequestHandler):
    valid_token = "new"
    seen: list[tuple[str, str, str, str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        auth = self.headers.get("Authorization", "")
        self.seen.append(
            (self.command, self.path, auth, self.headers.get("Content-Type", ""), body)
        )
        if auth != f"Bearer {self.valid_token}":
            self._send(401, {"kind": "Status", "reason": "Unauthorized", "message": "Unauthorized"})
        elif "missing" in self.path:
            self._send(404, {"kind": "Status", "reason": "NotFound", "message": 'not "missing"'})
        elif "invalid" in self.path:
            self._send(
                422,
                {"kind": "Status", "reason": "Invalid", "message": "spec.replicas: Invalid value"},
            )
        elif "html" in self.path:  # a proxy in the way answers in its own words
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>Bad Gateway</h1>")
        else:
            self._send(200, {"kind": "Deployment", "metadata": {"name": "d"}, "echo": body})

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_DELETE = do_POST = _answer  # noqa: N815 (http.server's names)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    FakeApiServer.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_paths_of_namespaced_cluster_scoped_and_custom_kinds() -> None:
    assert resource_path("Deployment", "ml", "a") == "/apis/apps/v1/namespaces/ml/deployments/a"
    assert resource_path("Service", "ml") == "/api/v1/namespaces/ml/services"
    assert (
        resource_path("ClusterRoleBinding", "ignored", "b")
        == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b"
    )
    assert (
        resource_path("HTTPRoute", "ml", "r")
        == "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/r"
    )
    with pytest.raises(ValueError, match="not a kind the operator uses: ConfigMap"):
        resource_path("ConfigMap", "ml", "x")


def test_apply_is_a_forced_server_side_apply(server: str) -> None:
    kube = Kube(Credentials(server=server, token="new"))
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ml"},
    }
    assert kube.apply(manifest)["echo"] == manifest
    method, path, _, ctype, _ = FakeApiServer.seen[-1]
    assert method == "PATCH"
    assert path == (
        "/apis/apps/v1/namespaces/ml/deployments/d?fieldManager=modeldeploy-operator&force=true"
    )
    assert ctype == "application/apply-patch+yaml"
    with pytest.raises(ValueError, match="never writes a Secret"):
        kube.apply({"kind": "Secret", "metadata": {"name": "s", "namespace": "ml"}})


def test_delete_sends_the_uid_precondition_and_404_is_done(server: str) -> None:
    kube = Kube(Credentials(server=server, token="new"))
    kube.delete("Service", "ml", "missing", "uid-1")
    _, path, _, _, body = FakeApiServer.seen[-1]
    assert path == "/api/v1/namespaces/ml/services/missing"
    assert body["preconditions"] == {"uid": "uid-1"}
    assert body["propagationPolicy"] == "Background"


def test_api_status_becomes_api_error_with_reason_and_message(server: str) -> None:
    kube = Kube(Credentials(server=server, token="new"))
    assert kube.get("Deployment", "ml", "missing") is None
    with pytest.raises(ApiError) as err:
        kube.get("Deployment", "ml", "invalid")
    assert (err.value.status, err.value.reason) == (422, "Invalid")
    assert "spec.replicas: Invalid value" in str(err.value)
    with pytest.raises(ApiError) as err:
        kube.get("Deployment", "ml", "html")
    assert err.value.status == 502
    assert "Bad Gateway" in str(err.value)


def test_a_rotated_token_file_is_read_again_after_a_401(server: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    kube = Kube(Credentials(server=server, token_file=str(token)))
    with pytest.raises(ApiError) as err:  # the file still holds the refused token
        kube.get("Deployment", "ml", "d")
    assert err.value.status == 401
    token.write_text("new")  # the kubelet rotated it
    assert kube.get("Deployment", "ml", "d") is not None
    # The first call is refused twice (read again after the 401, still old); the second call
    # still sends the cached token, is refused, and reads the rotated one.
    sent = [s[2] for s in FakeApiServer.seen]
    assert sent == ["Bearer old", "Bearer old", "Bearer old", "Bearer new"]


def test_a_static_token_refused_is_not_retried(server: str) -> None:
    kube = Kube(Credentials(server=server, token="old"))
    with pytest.raises(ApiError) as err:
        kube.list_pods("ml", "app=x")
    assert (err.value.status, err.value.reason) == (401, "Unauthorized")
    assert len(FakeApiServer.seen) == 1
    assert FakeApiServer.seen[0][1] == "/api/v1/namespaces/ml/pods?labelSelector=app%3Dx"


def test_an_unreachable_server_is_an_api_error_not_an_exception_of_urllib3() -> None:
    kube = Kube(Credentials(server="http://127.0.0.1:1", token="t"), request_timeout=2)
    with pytest.raises(ApiError) as err:
        kube.get("Deployment", "ml", "d")
    assert err.value.status == 0
    assert "refused" in str(err.value).lower()


def test_the_operator_does_not_load_the_official_client() -> None:
    """Its generated modules were ~40 MiB of the operator's RSS (docs/operations.md, Scale)."""
    code = (
        "import sys, modeldeploy_operator.__main__ as m\n"
        "m.keep_unused_clients_out()  # what main() does first\n"
        "import modeldeploy_operator.handlers, modeldeploy_operator.cli, kopf\n"
        "print(sorted(m for m in sys.modules if m.startswith(('kubernetes', 'pykube')) and "
        "sys.modules[m] is not None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
