"""The server's configuration: one pydantic-settings model read from flags and the environment.

The operator configures the container through environment variables only (docs/architecture.md),
while a person running the server by hand wants flags; both land in the same validated
``Settings`` so a typo in either fails at start with a message naming the setting.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    # The first choice is the field name so Settings(field=...) works in code and tests; the rest
    # are the environment variable names of the operator contract.
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Everything the server reads at start. Env names follow docs/architecture.md."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        protected_namespaces=(),
        populate_by_name=True,
        extra="ignore",
    )

    model_name: str = Field("model", validation_alias=_env("model_name", "MODEL_NAME"))
    storage_uri: str = Field("", validation_alias=_env("storage_uri", "STORAGE_URI"))
    # mlflow: a directory MLflow wrote (found by its MLmodel file, which sklearn also detects).
    model_format: Literal["sklearn", "skops", "mlflow"] = Field(
        "sklearn", validation_alias=_env("model_format", "format", "MODEL_FORMAT")
    )
    model_sha256: str = Field("", validation_alias=_env("model_sha256", "MODEL_SHA256"))
    model_dir: Path = Field(Path("/mnt/models"), validation_alias=_env("model_dir", "MODEL_DIR"))
    pvc_root: Path = Field(Path("/mnt/pvc"), validation_alias=_env("pvc_root", "PVC_ROOT"))
    track: str = Field("stable", validation_alias=_env("track", "MODELDEPLOY_TRACK"))
    model_version: str = Field("", validation_alias=_env("model_version", "MODEL_VERSION"))
    termination_log: Path = Field(
        Path("/dev/termination-log"), validation_alias=_env("termination_log", "TERMINATION_LOG")
    )
    host: str = Field("0.0.0.0", validation_alias=_env("host", "HOST"))
    port: int = Field(8080, ge=1, le=65535, validation_alias=_env("port", "PORT"))
    # The Open Inference Protocol's gRPC service (grpc_service.py); KServe's port. 0 turns it off.
    grpc_port: int = Field(8081, ge=0, le=65535, validation_alias=_env("grpc_port", "GRPC_PORT"))

    # Serving knobs (not part of the operator contract; set through spec.server.env).
    max_batch_size: int = Field(
        1024, ge=1, validation_alias=_env("max_batch_size", "MAX_BATCH_SIZE")
    )
    max_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, validation_alias=_env("max_batch_wait_ms", "MAX_BATCH_WAIT_MS")
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, validation_alias=_env("max_body_bytes", "MAX_BODY_BYTES")
    )
    predict_proba: bool = Field(False, validation_alias=_env("predict_proba", "PREDICT_PROBA"))
    fast_forest: bool = Field(True, validation_alias=_env("fast_forest", "FAST_FOREST"))
    skops_trusted_types: str = Field(
        "", validation_alias=_env("skops_trusted_types", "SKOPS_TRUSTED_TYPES")
    )
    download_attempts: int = Field(
        5, ge=1, le=50, validation_alias=_env("download_attempts", "DOWNLOAD_ATTEMPTS")
    )
    download_backoff_s: float = Field(
        1.0, ge=0, le=60, validation_alias=_env("download_backoff_s", "DOWNLOAD_BACKOFF_S")
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias=_env("log_level", "LOG_LEVEL")
    )
    access_log: bool = Field(False, validation_alias=_env("access_log", "ACCESS_LOG"))
    # Drift tracking (docs/server.md, "Drift and data quality"): the operator sets PROFILE_URI
    # from spec.model.profileUri; empty = look for a profile beside the model.
    profile_uri: str = Field("", validation_alias=_env("profile_uri", "PROFILE_URI"))
    drift_window_rows: int = Field(
        10_000,
        ge=100,
        le=10_000_000,
        validation_alias=_env("drift_window_rows", "DRIFT_WINDOW_ROWS"),
    )

    # spec.auth (docs/server.md, "Access control"): the operator sets AUTH_ENABLED,
    # AUTH_CACHE_SECONDS and MODEL_NAMESPACE; the rest default to the pod's in-cluster API access
    # and are overridable for tests and running by hand.
    auth_enabled: bool = Field(False, validation_alias=_env("auth_enabled", "AUTH_ENABLED"))
    auth_cache_seconds: float = Field(
        10.0, ge=0, le=3600, validation_alias=_env("auth_cache_seconds", "AUTH_CACHE_SECONDS")
    )
    auth_cache_size: int = Field(
        10_000, ge=1, le=1_000_000, validation_alias=_env("auth_cache_size", "AUTH_CACHE_SIZE")
    )
    model_namespace: str = Field("", validation_alias=_env("model_namespace", "MODEL_NAMESPACE"))
    auth_api_server: str = Field(
        "", validation_alias=_env("auth_api_server", "AUTH_API_SERVER")
    )  # empty: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
    auth_token_file: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        validation_alias=_env("auth_token_file", "AUTH_TOKEN_FILE"),
    )
    auth_ca_file: str = Field(
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        validation_alias=_env("auth_ca_file", "AUTH_CA_FILE"),
    )  # empty: the system trust store
    auth_audiences: str = Field("", validation_alias=_env("auth_audiences", "AUTH_AUDIENCES"))
    auth_timeout_s: float = Field(
        5.0, gt=0, le=60, validation_alias=_env("auth_timeout_s", "AUTH_TIMEOUT_S")
    )

    @field_validator("model_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if value.startswith("sha256:"):
            value = value.removeprefix("sha256:")
        if value and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
            raise ValueError("MODEL_SHA256 must be 64 hex digits (or empty to skip the check)")
        return value

    @field_validator("model_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("MODEL_NAME must be non-empty and contain no '/'")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _two_ports(self) -> Settings:
        if self.grpc_port == self.port:
            raise ValueError("GRPC_PORT must differ from PORT (or be 0 to turn gRPC off)")
        return self

    @property
    def version(self) -> str:
        """V2 ``model_version``: explicit, else the digest prefix, else the track."""
        return self.model_version or (self.model_sha256[:12] if self.model_sha256 else self.track)

    @property
    def trusted_types(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.skops_trusted_types.split(",") if t.strip())

    @property
    def audiences(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.auth_audiences.split(",") if a.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modeldeploy-server",
        description="Serve one scikit-learn model over KServe V1 and Open Inference Protocol V2. "
        "Every flag can also be given as the environment variable in brackets.",
    )
    add = p.add_argument
    add("--model-name", help="name in /v1/models/{name} and /v2/models/{name} [MODEL_NAME]")
    add("--storage-uri", help="file://, path, http(s)://, s3://, gs://, pvc:// [STORAGE_URI]")
    add("--model-sha256", help="expected sha256 of the artifact [MODEL_SHA256]")
    add(
        "--format",
        dest="model_format",
        choices=["sklearn", "skops", "mlflow"],
        help="[MODEL_FORMAT]",
    )
    add("--model-dir", help="download directory, default /mnt/models [MODEL_DIR]")
    add("--pvc-root", help="where pvc://<claim> is mounted, default /mnt/pvc [PVC_ROOT]")
    add("--track", help="stable|canary, echoed in X-Modeldeploy-Track [MODELDEPLOY_TRACK]")
    add("--model-version", help="V2 model_version label [MODEL_VERSION]")
    add("--termination-log", help="default /dev/termination-log [TERMINATION_LOG]")
    add("--host", help="listen address, default 0.0.0.0 [HOST]")
    add("--port", type=int, help="listen port, default 8080 [PORT]")
    add("--grpc-port", type=int, help="OIP gRPC port, default 8081, 0 = off [GRPC_PORT]")
    add("--max-batch-size", type=int, help="rows per coalesced predict call [MAX_BATCH_SIZE]")
    add("--max-batch-wait-ms", type=float, help="extra wait to fill a batch [MAX_BATCH_WAIT_MS]")
    add("--max-body-bytes", type=int, help="request body limit, 413 above [MAX_BODY_BYTES]")
    add(
        "--predict-proba",
        action="store_const",
        const=True,
        help="V1 returns predict_proba [PREDICT_PROBA]",
    )
    add(
        "--fast-forest",
        action=argparse.BooleanOptionalAction,
        help="serve RandomForest/ExtraTrees without joblib's per-tree dispatch, checked to give "
        "identical results at load; default on [FAST_FOREST]",
    )
    add("--skops-trusted-types", help="extra comma-separated skops types [SKOPS_TRUSTED_TYPES]")
    add("--download-attempts", type=int, help="tries per download [DOWNLOAD_ATTEMPTS]")
    add("--download-backoff-s", type=float, help="first retry delay [DOWNLOAD_BACKOFF_S]")
    add("--log-level", help="debug|info|warning|error [LOG_LEVEL]")
    add("--access-log", action="store_const", const=True, help="log every request [ACCESS_LOG]")
    add(
        "--profile-uri", help="reference profile for drift; default: beside the model [PROFILE_URI]"
    )
    add("--drift-window-rows", type=int, help="rows PSI is computed over [DRIFT_WINDOW_ROWS]")
    add(
        "--auth",
        dest="auth_enabled",
        action=argparse.BooleanOptionalAction,
        help="require a bearer token the Kubernetes API server accepts and allows to create "
        "modeldeployments/predict on this model; default off [AUTH_ENABLED]",
    )
    add("--auth-cache-seconds", type=float, help="decision cache time [AUTH_CACHE_SECONDS]")
    add("--auth-cache-size", type=int, help="tokens remembered at most [AUTH_CACHE_SIZE]")
    add("--model-namespace", help="the ModelDeployment's namespace [MODEL_NAMESPACE]")
    add("--auth-api-server", help="API server URL, default in-cluster [AUTH_API_SERVER]")
    add("--auth-token-file", help="this server's own token for the reviews [AUTH_TOKEN_FILE]")
    add("--auth-ca-file", help="CA bundle of the API server, empty = system [AUTH_CA_FILE]")
    add("--auth-audiences", help="comma-separated token audiences to require [AUTH_AUDIENCES]")
    add("--auth-timeout-s", type=float, help="deadline of one review [AUTH_TIMEOUT_S]")
    return p


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Flags win over the environment; anything not given falls back to env, then defaults."""
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**overrides)
