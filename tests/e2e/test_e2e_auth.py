"""spec.auth on a real node: real server pods review real client pods' ServiceAccount tokens.

A ModelDeployment with spec.auth runs as its own ServiceAccount bound to modeldeploy-server-auth
(the operator does that); its probes keep working without a token (the Deployment gets Ready).
Two client pods of the server image call the model through its Service with the token the
kubelet mounted for them: the one whose ServiceAccount a Role allows to create
`modeldeployments/predict` on the model gets predictions over V1 and V2; the other gets 403, and
a request without a token gets 401.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from .conftest import SERVER_IMAGE, Kubectl
from .test_e2e import V1_BODY, V2_BODY, model_deployment, url, wait_ready

# Standard library only (the image guarantees nothing else). One JSON line per call.
CLIENT = r"""
import json, sys, time, urllib.error, urllib.request
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read().strip()
results = []
for path, body, send_token in json.loads(sys.argv[1]):
    headers = {"Content-Type": "application/json"}
    if send_token:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(10):  # the Service may need a moment; bounded
        try:
            req = urllib.request.Request(sys.argv[2] + path, data=data, headers=headers)
            with urllib.request.urlopen(req, timeout=10) as r:
                results.append({"path": path, "status": r.status, "body": r.read().decode()})
            break
        except urllib.error.HTTPError as e:
            results.append({"path": path, "status": e.code, "body": e.read().decode(),
                            "www_authenticate": e.headers.get("WWW-Authenticate")})
            break
        except OSError as e:
            if attempt == 9:
                results.append({"path": path, "status": 0, "body": repr(e)})
            time.sleep(1)
print("AUTHCLIENT " + json.dumps(results))
"""

# (path, body or None for a GET, send the token)
CALLS: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("/v1/models/iris:predict", V1_BODY, True),
    ("/v2/models/iris/infer", V2_BODY, True),
    ("/v1/models/iris:predict", V1_BODY, False),
    ("/healthz", None, False),
    ("/metrics", None, False),
]


def run_client(kubectl: Kubectl, ns: str, account: str, base: str) -> dict[tuple[str, bool], Any]:
    """Runs CLIENT in a pod as `account`; returns its results by (path, with token)."""
    name = f"client-{account}-{uuid.uuid4().hex[:5]}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": account,
                "automountServiceAccountToken": True,
                "containers": [
                    {
                        "name": "client",
                        "image": SERVER_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "-c", CLIENT, json.dumps(CALLS), base],
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                    }
                ],
            },
        }
    )

    def finished() -> str | None:
        phase = kubectl.json("get", "pod", "-n", ns, name)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    kubectl.wait_for(f"client pod {name}", finished, timeout=300)
    logs = kubectl.run("logs", "-n", ns, name).stdout
    line = next((x for x in logs.splitlines() if x.startswith("AUTHCLIENT ")), None)
    assert line, f"client printed no result:\n{logs}"
    results = json.loads(line.removeprefix("AUTHCLIENT "))
    return {(path, token): r for (path, _, token), r in zip(CALLS, results, strict=True)}


def test_permitted_service_account_gets_predictions_another_gets_403(
    kubectl: Kubectl, model_store: str, namespace: str
) -> None:
    md = model_deployment("iris.yaml")
    md["spec"]["auth"] = {"enabled": True, "cacheSeconds": 5}
    kubectl.apply(md, namespace)
    wait_ready(kubectl, namespace, "iris")  # the probes got through without a token

    pod = kubectl.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=iris")
    assert {p["spec"]["serviceAccountName"] for p in pod["items"]} == {"iris-server"}

    rbac = "rbac.authorization.k8s.io"
    for account in ("caller", "stranger"):
        kubectl.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
            namespace,
        )
    kubectl.apply(
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": {"name": "predict-iris"},
            "rules": [
                {
                    "apiGroups": ["modeldeploy.io"],
                    "resources": ["modeldeployments/predict"],
                    "verbs": ["create"],
                    "resourceNames": ["iris"],
                }
            ],
        },
        namespace,
    )
    kubectl.apply(
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "caller-predicts-iris"},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "predict-iris"},
            "subjects": [{"kind": "ServiceAccount", "name": "caller", "namespace": namespace}],
        },
        namespace,
    )
    base = url(namespace, "iris", "")

    caller = run_client(kubectl, namespace, "caller", base)
    v1 = caller[("/v1/models/iris:predict", True)]
    assert v1["status"] == 200, v1
    assert json.loads(v1["body"]) == {"predictions": [0, 2]}
    v2 = caller[("/v2/models/iris/infer", True)]
    assert v2["status"] == 200, v2
    assert json.loads(v2["body"])["outputs"][0]["data"] == [0, 2]
    bare = caller[("/v1/models/iris:predict", False)]
    assert bare["status"] == 401, bare
    assert bare["www_authenticate"].startswith("Bearer")
    assert caller[("/healthz", False)]["status"] == 200
    assert caller[("/metrics", False)]["status"] == 200

    stranger = run_client(kubectl, namespace, "stranger", base)
    for path in ("/v1/models/iris:predict", "/v2/models/iris/infer"):
        denied = stranger[(path, True)]
        assert denied["status"] == 403, denied
        assert json.loads(denied["body"])["error"].startswith(
            f"system:serviceaccount:{namespace}:stranger may not create "
            f"modeldeployments/predict on {namespace}/iris"
        )
