"""Where the API server is and how to prove who we are, read as kubectl reads it.

Why not ``kubernetes.config``: importing any part of the official ``kubernetes`` package imports
its generated client, hundreds of model and API modules that took ~40 MiB of the operator's RSS
at 500 ModelDeployments while the operator uses none of them (kube.py speaks plain REST). Both
kube.py and kopf's watches (handlers.login) take their credentials from here, so they always
agree on the cluster and the user.

Sources, in kubectl's order: ``--kubeconfig``/KUBECONFIG (several files separated by os.pathsep:
the first file that names a context, cluster or user wins for that name), ``~/.kube/config``, else
the in-cluster ServiceAccount. What a user can authenticate with: a bearer token (``token`` or
``tokenFile``), a client certificate (file or ``-data``), an ``exec`` credential plugin (the
``client.authentication.k8s.io`` ExecCredential that EKS, GKE's gke-gcloud-auth-plugin and
kubelogin speak), or basic auth. The legacy ``auth-provider`` (removed from kubectl in 1.26) is
honoured only for the access-token it cached, as kopf does.

Tokens that change under a running operator are re-read: the ServiceAccount token file (the
kubelet rotates it, roughly hourly), a ``tokenFile``, an exec plugin's token when it expires.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The kubelet rewrites the projected token well before it expires; a minute is kubectl's
# own client-go re-read period.
TOKEN_FILE_TTL = 60.0
EXEC_TIMEOUT = 60.0


class CredentialsError(Exception):
    """The kubeconfig or ServiceAccount cannot be used; the message says what to fix."""


@dataclass
class Credentials:
    server: str
    namespace: str = "default"
    ca_pem: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    exec_config: dict[str, Any] | None = None
    # Tokens that come from a file or a plugin, with the monotonic time they go stale.
    _cached: tuple[str | None, float] = field(default=(None, 0.0), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bearer(self) -> str | None:
        """The token to send now (static, re-read from its file, or from the exec plugin)."""
        if self.token_file is None and self.exec_config is None:
            return self.token
        with self._lock:
            token, stale_at = self._cached
            if token is None or time.monotonic() >= stale_at:
                self._cached = self._refresh()
            return self._cached[0]

    def expire_if_refreshable(self) -> bool:
        """After a 401: True when the token can be read again (its file, the plugin), and the
        next bearer() will; False for a static token, which a retry would not change."""
        if self.token_file is None and self.exec_config is None:
            return False
        with self._lock:
            self._cached = (None, 0.0)
        return True

    def _refresh(self) -> tuple[str | None, float]:
        if self.token_file is not None:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    return f.read().strip() or None, time.monotonic() + TOKEN_FILE_TTL
            except OSError as e:
                raise CredentialsError(f"cannot read the token file {self.token_file}: {e}") from e
        assert self.exec_config is not None
        status = run_exec_plugin(self.exec_config)
        if status.get("clientCertificateData") and status.get("clientKeyData"):
            self.cert_pem = str(status["clientCertificateData"])
            self.key_pem = str(status["clientKeyData"])
        ttl = float("inf")
        if expiry := status.get("expirationTimestamp"):
            at = datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
            # A little early, so no request is sent with a token that expires on the way.
            ttl = max(0.0, (at - datetime.now(UTC)).total_seconds() - 30.0)
        token = status.get("token")
        return (str(token) if token else None), time.monotonic() + ttl

    def headers(self) -> dict[str, str]:
        token = self.bearer()
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.username is not None and self.password is not None:
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {}

    def ssl_context(self) -> ssl.SSLContext:
        """CA verification (unless insecure) and the client certificate, if there is one."""
        if self.exec_config is not None:
            self.bearer()  # a plugin may hand out a client certificate instead of a token
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_pem)
        if self.cert_file or self.cert_pem:
            with (
                _as_file(self.cert_pem, self.cert_file) as cert,
                _as_file(self.key_pem, self.key_file) as key,
            ):
                if cert is None or key is None:
                    raise CredentialsError("a client certificate needs its key (client-key)")
                try:
                    context.load_cert_chain(certfile=cert, keyfile=key)
                except (ssl.SSLError, OSError) as e:
                    raise CredentialsError(f"cannot load the client certificate: {e}") from e
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@contextlib.contextmanager
def _as_file(pem: str | None, path: str | None) -> Iterator[str | None]:
    """Python's ssl loads certificates only from files: data lives in one just long enough."""
    if path or pem is None:
        yield path
        return
    with tempfile.NamedTemporaryFile("w", suffix=".pem", encoding="ascii") as f:
        f.write(pem)
        f.flush()
        yield f.name


def _pem(data: str | None) -> str | None:
    """kubeconfig's ``*-data`` fields are base64 of PEM."""
    if not data:
        return None
    try:
        return base64.b64decode(data, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError) as e:
        raise CredentialsError(f"a kubeconfig *-data field is not base64 of PEM: {e}") from e


def run_exec_plugin(config: dict[str, Any]) -> dict[str, Any]:
    """Runs an ``exec`` credential plugin as kubectl does; returns its ExecCredential status."""
    command = config.get("command")
    if not command:
        raise CredentialsError("the kubeconfig user's exec has no command")
    api_version = str(config.get("apiVersion") or "client.authentication.k8s.io/v1")
    env = dict(os.environ)
    env.update({str(e["name"]): str(e["value"]) for e in config.get("env") or []})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    try:
        done = subprocess.run(
            [str(command), *(str(a) for a in config.get("args") or [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        hint = config.get("installHint") or ""
        raise CredentialsError(f"the exec credential plugin {command!r} failed: {e}. {hint}") from e
    if done.returncode != 0:
        raise CredentialsError(
            f"the exec credential plugin {command!r} exited {done.returncode}: "
            f"{done.stderr.strip()[-500:]}"
        )
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError) as e:
        raise CredentialsError(
            f"the exec credential plugin {command!r} did not print an ExecCredential: {e}"
        ) from e
    if not isinstance(status, dict):
        raise CredentialsError(f"the exec credential plugin {command!r} printed no status")
    return status


def load(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """The kubeconfig's (current or named) context, else the in-cluster ServiceAccount."""
    paths = [p for p in (kubeconfig or os.environ.get("KUBECONFIG") or "").split(os.pathsep) if p]
    if not paths and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        default = os.path.expanduser("~/.kube/config")
        if os.path.exists(default):
            paths = [default]
    if paths:
        return from_kubeconfig(paths, context)
    return in_cluster()


def in_cluster(sa_dir: str = SA_DIR) -> Credentials:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = os.path.join(sa_dir, "token")
    if not host or not os.path.exists(token_file):
        raise CredentialsError(
            "no kubeconfig (set KUBECONFIG or --kubeconfig) and not in a pod with a "
            f"ServiceAccount token ({token_file})"
        )
    namespace = "default"
    with contextlib.suppress(OSError), open(os.path.join(sa_dir, "namespace")) as f:
        namespace = f.read().strip() or namespace
    ca = os.path.join(sa_dir, "ca.crt")
    host = f"[{host}]" if ":" in host else host  # an IPv6 service address
    return Credentials(
        server=f"https://{host}:{port}",
        namespace=namespace,
        ca_file=ca if os.path.exists(ca) else None,
        token_file=token_file,
    )


def from_kubeconfig(paths: list[str], context: str | None = None) -> Credentials:
    current: str | None = None
    named: dict[str, dict[str, dict[str, Any]]] = {"contexts": {}, "clusters": {}, "users": {}}
    bases: dict[tuple[str, str], str] = {}  # relative paths are relative to their own file
    for path in paths:
        path = os.path.expanduser(path)
        try:
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
        except FileNotFoundError:
            continue  # kubectl skips a listed file that does not exist
        except (OSError, yaml.YAMLError) as e:
            raise CredentialsError(f"cannot read the kubeconfig {path}: {e}") from e
        current = current or config.get("current-context")
        for section, key in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for item in config.get(section) or []:
                if item.get("name") not in named[section]:
                    named[section][item["name"]] = item.get(key) or {}
                    bases[(section, item["name"])] = os.path.dirname(os.path.abspath(path))
    name = context or current
    if not name:
        raise CredentialsError(f"the kubeconfig ({os.pathsep.join(paths)}) has no current-context")
    if name not in named["contexts"]:
        raise CredentialsError(f"the kubeconfig has no context {name!r}")
    ctx = named["contexts"][name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in named["clusters"]:
        raise CredentialsError(f"context {name!r} names cluster {cluster_name!r}, not defined")
    cluster = named["clusters"][cluster_name]
    user = named["users"].get(user_name or "", {})

    def rel(section: str, item: Any, value: Any) -> str | None:
        # No value, no lookup: an undefined user's fields are all empty.
        return os.path.join(bases[(section, item)], str(value)) if value else None

    server = cluster.get("server")
    if not server:
        raise CredentialsError(f"cluster {cluster_name!r} in the kubeconfig has no server")
    # A legacy auth-provider: only the access-token it cached (as kopf does).
    provider_token = ((user.get("auth-provider") or {}).get("config") or {}).get("access-token")
    return Credentials(
        server=str(server).rstrip("/"),
        namespace=str(ctx.get("namespace") or "default"),
        ca_pem=_pem(cluster.get("certificate-authority-data")),
        ca_file=rel("clusters", cluster_name, cluster.get("certificate-authority")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        cert_pem=_pem(user.get("client-certificate-data")),
        key_pem=_pem(user.get("client-key-data")),
        cert_file=rel("users", user_name, user.get("client-certificate")),
        key_file=rel("users", user_name, user.get("client-key")),
        token=user.get("token") or provider_token,
        token_file=None if user.get("token") else rel("users", user_name, user.get("tokenFile")),
        username=user.get("username"),
        password=user.get("password"),
        exec_config=user.get("exec"),
    )
