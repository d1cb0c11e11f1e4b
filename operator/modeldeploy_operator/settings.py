"""The operator's own knobs, read once from the environment with pydantic-settings.

Everything a cluster admin may want to tune per installation (the default server image, probe
budgets, the resync interval) lives here so the pure builders receive one typed value instead
of reading the environment themselves, and a typo in a variable fails at start, by name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Environment variables are the field names upper-cased with the MODELDEPLOY_ prefix."""

    model_config = SettingsConfigDict(env_prefix="MODELDEPLOY_", extra="ignore", frozen=True)

    server_image: str = Field(
        "modeldeploy-server:0.1.0", description="Server image when spec.server.image is unset."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy when spec.server.imagePullPolicy is unset."
    )
    cluster_domain: str = Field("cluster.local", description="Used in status.url.")
    default_cpu_request: str = Field(
        "250m", description="CPU request when spec.resources is unset."
    )
    default_memory_request: str = Field(
        "512Mi", description="Memory request when spec.resources is unset."
    )
    startup_budget_seconds: int = Field(
        600,
        ge=30,
        description="How long a pod may take to download and load its model before it is "
        "restarted (startupProbe failureThreshold x periodSeconds).",
    )
    progress_deadline_seconds: int = Field(
        900,
        ge=60,
        description="Deployment progressDeadlineSeconds; must exceed the startup budget.",
    )
    drain_seconds: int = Field(
        10,
        ge=0,
        le=300,
        description="preStop sleep so endpoints and load balancers stop routing to a pod "
        "before the server receives SIGTERM.",
    )
    termination_grace_seconds: int = Field(
        45, ge=1, description="terminationGracePeriodSeconds: drain + in-flight requests."
    )
    model_dir_size_limit: str | None = Field(
        None, description="sizeLimit of the model emptyDir (unset = node default)."
    )
    reconcile_workers: int = Field(
        16,
        ge=1,
        le=256,
        description="Reconciles running at once (threads; each is a chain of API round trips).",
    )
    event_settle_seconds: float = Field(
        1.0,
        ge=0,
        le=30,
        description="How long the reconcile after a child or pod event waits, so the burst of "
        "events of one change (a rollout's pod and Deployment status updates) costs one run.",
    )
    resync_seconds: float = Field(
        60.0, gt=0, description="Interval of the resync loop that re-reconciles every object."
    )
    drift_seconds: float = Field(
        60.0,
        ge=0,
        description="How often the serving pods' drift gauges are read into the DataDrift "
        "condition and the DRIFT column (0 = never).",
    )
    drift_threshold: float = Field(
        0.25,
        gt=0,
        description="PSI from which a feature (or the predictions) counts as drifting "
        "(DataDrift True); 0.25 is the customary 'significant shift'.",
    )
    drift_min_rows: int = Field(
        200,
        ge=1,
        description="Served rows a track's drift window must hold before its PSI is judged.",
    )
    # An integer: the API server rejects a fractional ?timeoutSeconds= with 400 BadRequest.
    watch_server_timeout: int = Field(
        300, gt=0, description="Server-side timeout of each watch request (seconds)."
    )
    watch_client_timeout: float = Field(
        330.0, gt=0, description="Client-side timeout of each watch request (seconds)."
    )
    api_request_timeout: float = Field(
        30.0, gt=0, description="Timeout of each non-watch API request (seconds)."
    )
    # Its own port rather than a route on kopf's liveness server: that server has one path and
    # runs the probe handlers on the event loop, while prometheus-client serves from a thread of
    # its own, so a scrape still answers when the loop is busy (docs/operations.md).
    metrics_port: int = Field(
        8081, ge=0, le=65535, description="Port of the operator's Prometheus /metrics (0 = off)."
    )
