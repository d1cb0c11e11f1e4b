"""kubeauth reads kubeconfigs and ServiceAccounts as kubectl does (tokens that rotate included)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml
from modeldeploy_operator import kubeauth
from modeldeploy_operator.kubeauth import CredentialsError, from_kubeconfig, in_cluster

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(path: Path, **config: object) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **config}))
    return path


def cluster(name: str, server: str, **extra: object) -> dict[str, object]:
    return {"name": name, "cluster": {"server": server, **extra}}


def test_current_context_token_ca_data_and_namespace(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "config",
        clusters=[
            cluster("c", "https://10.0.0.1:6443/", **{"certificate-authority-data": b64(CA)})
        ],
        users=[{"name": "u", "user": {"token": "T0"}}],
        contexts=[{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
        **{"current-context": "x"},
    )
    creds = from_kubeconfig([str(cfg)])
    assert creds.server == "https://10.0.0.1:6443"  # no trailing slash: paths are appended
    assert creds.namespace == "ml"
    assert creds.ca_pem == CA
    assert creds.headers() == {"Authorization": "Bearer T0"}


def test_first_file_wins_for_each_name_and_named_context(tmp_path: Path) -> None:
    """KUBECONFIG=a:b as kubectl merges it; --context picks another context."""
    a = write_config(
        tmp_path / "a",
        clusters=[cluster("c", "https://a")],
        users=[{"name": "u", "user": {"token": "from-a"}}],
        contexts=[{"name": "one", "context": {"cluster": "c", "user": "u"}}],
        **{"current-context": "one"},
    )
    b = write_config(
        tmp_path / "b",
        clusters=[cluster("c", "https://b"), cluster("d", "https://d")],
        users=[{"name": "u", "user": {"token": "from-b"}}, {"name": "v", "user": {"token": "V"}}],
        contexts=[{"name": "two", "context": {"cluster": "d", "user": "v"}}],
        **{"current-context": "two"},
    )
    one = from_kubeconfig([str(a), str(tmp_path / "missing"), str(b)])
    assert (one.server, one.bearer(), one.namespace) == ("https://a", "from-a", "default")
    two = from_kubeconfig([str(a), str(b)], context="two")
    assert (two.server, two.bearer()) == ("https://d", "V")


def test_relative_certificate_paths_are_relative_to_their_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cfg = write_config(
        tmp_path / "sub" / "config",
        clusters=[cluster("c", "https://k", **{"certificate-authority": "ca.crt"})],
        users=[{"name": "u", "user": {"client-certificate": "u.crt", "client-key": "/abs/u.key"}}],
        contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        **{"current-context": "x"},
    )
    creds = from_kubeconfig([str(cfg)])
    assert creds.ca_file == str(tmp_path / "sub" / "ca.crt")
    assert creds.cert_file == str(tmp_path / "sub" / "u.crt")
    assert creds.key_file == "/abs/u.key"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "has no current-context"),
        ({"current-context": "nope"}, "no context 'nope'"),
        (
            {"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "gone"}}]},
            "names cluster 'gone', not defined",
        ),
        (
            {
                "current-context": "x",
                "contexts": [{"name": "x", "context": {"cluster": "c"}}],
                "clusters": [{"name": "c", "cluster": {}}],
            },
            "cluster 'c' in the kubeconfig has no server",
        ),
        (
            {
                "current-context": "x",
                "contexts": [{"name": "x", "context": {"cluster": "c"}}],
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": "https://k", "certificate-authority-data": "%%"},
                    }
                ],
            },
            "not base64 of PEM",
        ),
    ],
)
def test_unusable_kubeconfigs_say_what_is_wrong(
    tmp_path: Path, config: dict[str, object], message: str
) -> None:
    cfg = write_config(tmp_path / "config", **config)
    with pytest.raises(CredentialsError, match=message):
        from_kubeconfig([str(cfg)])


def test_token_file_is_read_again_after_a_refusal(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    cfg = write_config(
        tmp_path / "config",
        clusters=[cluster("c", "https://k")],
        users=[{"name": "u", "user": {"tokenFile": str(token)}}],
        contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        **{"current-context": "x"},
    )
    creds = from_kubeconfig([str(cfg)])
    assert creds.bearer() == "first"
    token.write_text("second")
    assert creds.bearer() == "first"  # cached: not a file read per request
    assert creds.expire_if_refreshable() is True
    assert creds.bearer() == "second"


def test_static_token_is_not_refreshable(tmp_path: Path) -> None:
    creds = kubeauth.Credentials(server="https://k", token="T")
    assert creds.expire_if_refreshable() is False
    assert creds.bearer() == "T"


def test_basic_auth_header() -> None:
    creds = kubeauth.Credentials(server="https://k", username="admin", password="pw")
    assert creds.headers() == {"Authorization": "Basic " + b64("admin:pw")}


def plugin(tmp_path: Path, status: dict[str, object], exit_code: int = 0) -> Path:
    """A real exec credential plugin: counts its runs, checks what kubectl passes it."""
    script = tmp_path / "plugin.py"
    script.write_text(
        f"""import json, os, sys
runs = {str(tmp_path / "runs")!r}
with open(runs, "a") as f:
    f.write(os.environ["PLUGIN_FLAVOUR"] + " " + " ".join(sys.argv[1:]) + "\\n")
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False
if {exit_code}:
    print("token expired, run login", file=sys.stderr)
    sys.exit({exit_code})
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {json.dumps(status)}}}))
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def exec_creds(tmp_path: Path, script: Path) -> kubeauth.Credentials:
    return kubeauth.Credentials(
        server="https://k",
        exec_config={
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(script), "--cluster", "prod"],
            "env": [{"name": "PLUGIN_FLAVOUR", "value": "eks"}],
        },
    )


def test_exec_plugin_token_is_cached_until_it_expires(tmp_path: Path) -> None:
    creds = exec_creds(
        tmp_path, plugin(tmp_path, {"token": "P1", "expirationTimestamp": "2999-01-01T00:00:00Z"})
    )
    assert creds.headers() == {"Authorization": "Bearer P1"}
    assert creds.bearer() == "P1"
    runs = (tmp_path / "runs").read_text().splitlines()
    assert runs == ["eks --cluster prod"]  # its args and env, once


def test_exec_plugin_token_past_expiry_is_asked_again(tmp_path: Path) -> None:
    creds = exec_creds(
        tmp_path, plugin(tmp_path, {"token": "P", "expirationTimestamp": "2000-01-01T00:00:00Z"})
    )
    creds.bearer()
    creds.bearer()
    assert len((tmp_path / "runs").read_text().splitlines()) == 2


def test_exec_plugin_failure_names_the_plugin_and_its_message(tmp_path: Path) -> None:
    creds = exec_creds(tmp_path, plugin(tmp_path, {}, exit_code=3))
    with pytest.raises(CredentialsError, match=r"exited 3: token expired, run login"):
        creds.bearer()


def test_exec_plugin_that_is_not_installed_shows_its_install_hint() -> None:
    creds = kubeauth.Credentials(
        server="https://k",
        exec_config={"command": "/nonexistent/aws-iam-authenticator", "installHint": "brew it"},
    )
    with pytest.raises(CredentialsError, match=r"aws-iam-authenticator.*brew it"):
        creds.bearer()


def test_in_cluster_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("modeldeploy-system")
    (tmp_path / "ca.crt").write_text(CA)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    creds = in_cluster(str(tmp_path))
    assert creds.server == "https://[fd00::1]:443"
    assert creds.namespace == "modeldeploy-system"
    assert creds.ca_file == str(tmp_path / "ca.crt")
    assert creds.bearer() == "sa-token"
    assert creds.expire_if_refreshable() is True  # the kubelet rotates it


def test_no_kubeconfig_and_not_in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CredentialsError, match="set KUBECONFIG or --kubeconfig"):
        in_cluster(str(tmp_path))


def test_load_prefers_the_given_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(
        tmp_path / "config",
        clusters=[cluster("c", "https://given")],
        users=[{"name": "u", "user": {"token": "T"}}],
        contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        **{"current-context": "x"},
    )
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "absent"), str(cfg)]))
    assert kubeauth.load().server == "https://given"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert kubeauth.load(str(cfg)).server == "https://given"  # --kubeconfig over KUBECONFIG


def test_a_client_certificate_without_its_key_is_refused() -> None:
    creds = kubeauth.Credentials(server="https://k", cert_pem=CA)
    with pytest.raises(CredentialsError, match="needs its key"):
        creds.ssl_context()


def test_a_broken_client_certificate_is_refused(tmp_path: Path) -> None:
    creds = kubeauth.Credentials(server="https://k", cert_pem=CA, key_pem="not a key")
    with pytest.raises(CredentialsError, match="cannot load the client certificate"):
        creds.ssl_context()
