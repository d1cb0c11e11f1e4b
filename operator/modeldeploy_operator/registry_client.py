"""The MLflow tracking server's REST API, asked which version a models:/ reference names.

The operator's third I/O (beside kube.py and scrape.py), behind registry.Resolver. It uses the
registry endpoints every MLflow since 2.x serves (``/api/2.0/mlflow/...``): the alias lookup,
the model version, ``get-latest-versions`` for ``/latest`` (the highest version number, as
MLflow's own ``models:/<name>/latest`` means), and ``get-download-uri`` for where the version's
artifacts are (under MLflow 3 a version's ``source`` is a ``models:/m-<id>`` logged model, not a
location; the download URI is).

urllib, not http.client: the tracking server is an ordinary service a cluster may reach through
an egress proxy, so HTTP(S)_PROXY and NO_PROXY from the operator's environment apply, as they do
for the MLflow client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

from modeldeploy_operator.registry import ModelVersion, RegistryError, RegistryRef

API: Final = "/api/2.0/mlflow"
# An answer larger than this is not a registry's JSON.
MAX_BODY_BYTES: Final = 1024 * 1024


class MlflowRegistry:
    """A registry.Resolver over HTTP; ``timeout`` bounds each request (seconds)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def resolve(
        self, ref: RegistryRef, tracking_uri: str, headers: Mapping[str, str]
    ) -> ModelVersion:
        base = tracking_uri.rstrip("/") + API
        if ref.latest:
            body = self._call(
                base, "POST", "/registered-models/get-latest-versions", {"name": ref.name}, headers
            )
            versions = [_model_version(v) for v in body.get("model_versions") or []]
            if not versions:
                raise RegistryError("not_found", f"registered model {ref.name!r} has no versions")
            mv = max(versions, key=lambda v: int(v["version"]))
        else:
            # an alias and a version number are each one GET answering {"model_version": ...}
            path, params = (
                ("/registered-models/alias", {"name": ref.name, "alias": ref.alias})
                if ref.alias is not None
                else ("/model-versions/get", {"name": ref.name, "version": ref.version})
            )
            body = self._call(base, "GET", path, params, headers)
            mv = _model_version(body.get("model_version"))
        version = str(mv["version"])
        status = str(mv.get("status") or "READY")
        if status != "READY":
            raise RegistryError(
                "unusable",
                f"version {version} is {status}, not READY"
                + (f" ({mv['status_message']})" if mv.get("status_message") else ""),
            )
        where = self._call(
            base,
            "GET",
            "/model-versions/get-download-uri",
            {"name": ref.name, "version": version},
            headers,
        )
        artifact_uri = where.get("artifact_uri")
        if not isinstance(artifact_uri, str) or not artifact_uri:
            raise RegistryError(
                "unreachable", f"get-download-uri for version {version} returned no artifact_uri"
            )
        run_id = mv.get("run_id")
        return ModelVersion(version, artifact_uri, str(run_id) if run_id else None)

    def _call(
        self,
        base: str,
        method: str,
        path: str,
        params: Mapping[str, str | None],
        headers: Mapping[str, str],
    ) -> dict[str, Any]:
        url = base + path
        data = None
        if method == "GET":
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        else:
            data = json.dumps(params).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only (CRD pattern)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for k, v in headers.items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read(MAX_BODY_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise _http_error(e, path) from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise RegistryError("unreachable", f"{method} {path} failed: {reason}") from e
        return _json(raw, path)


def _json(raw: bytes, path: str) -> dict[str, Any]:
    if len(raw) > MAX_BODY_BYTES:
        raise RegistryError("unreachable", f"{path} answered with over 1 MiB: not MLflow's API")
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise RegistryError(
            "unreachable", f"{path} did not answer with JSON (is trackingUri MLflow's address?)"
        ) from e
    if not isinstance(body, dict):
        raise RegistryError("unreachable", f"{path} answered with JSON that is not an object")
    return body


def _http_error(e: urllib.error.HTTPError, path: str) -> RegistryError:
    try:
        said: Any = json.loads(e.read(MAX_BODY_BYTES) or b"{}")
    except ValueError:
        said = {}
    said = said if isinstance(said, dict) else {}
    code = str(said.get("error_code") or "")
    message = str(said.get("message") or e.reason or "").strip()
    # MLflow says RESOURCE_DOES_NOT_EXIST for a missing model or version, and
    # INVALID_PARAMETER_VALUE "alias ... not found" for a missing alias.
    if code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in message.lower()
    ):
        return RegistryError("not_found", f"the registry says: {message}")
    if e.code in (401, 403):
        return RegistryError(
            "unreachable",
            f"the tracking server refused the credentials (HTTP {e.code}: {message}); check "
            "the token in spec.model.mlflow.secretName",
        )
    return RegistryError(
        "unreachable", f"{path} answered HTTP {e.code}" + (f": {code} {message}" if message else "")
    )


def _model_version(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict) or "version" not in raw:
        raise RegistryError("unreachable", "the registry's answer has no model_version")
    try:
        int(str(raw["version"]))
    except ValueError as e:
        raise RegistryError(
            "unreachable", f"the registry answered version {raw['version']!r}"
        ) from e
    return raw
