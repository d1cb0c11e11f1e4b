"""Prometheus metrics for one server process, in a registry of its own.

A private registry (instead of prometheus-client's global one) lets tests build many apps in one
process and keeps the exposition to what this server means. Label sets are bounded on purpose:
endpoints are route templates, never raw paths, and class labels come from the model's
``classes_`` (capped), so a caller cannot blow up the series count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_CLASS_LABELS = 100

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    """Every metric the server exports; methods are safe to call from the predict thread."""

    def __init__(self) -> None:
        # *_created series double the exposition size and no dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "modeldeploy_requests",
            "HTTP requests by route template, protocol and status code.",
            ["endpoint", "protocol", "status"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.latency = Histogram(
            "modeldeploy_request_duration_seconds",
            "Time from request start to the last response byte, by route template.",
            ["endpoint", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "modeldeploy_errors",
            "Requests answered with an error, by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "modeldeploy_batch_rows",
            "Rows per coalesced model call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "modeldeploy_batch_requests",
            "Requests coalesced into one model call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.request_rows = Histogram(
            "modeldeploy_request_rows",
            "Rows per inference request.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.predict_seconds = Histogram(
            "modeldeploy_predict_duration_seconds",
            "Time inside the model's predict/predict_proba per coalesced batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predicted_class = Counter(
            "modeldeploy_predicted_class",
            "Predicted labels of a classifier (at most 100 distinct label values).",
            ["class"],
            registry=r,
        )
        self.predicted_value = Histogram(
            "modeldeploy_predicted_value",
            "Predicted values of a regressor.",
            buckets=(-1000, -100, -10, -1, 0, 1, 10, 100, 1000, 10000),
            registry=r,
        )
        self.load_seconds = Gauge(
            "modeldeploy_model_load_seconds",
            "Seconds spent loading the model into memory (after the download).",
            registry=r,
        )
        self.download_seconds = Gauge(
            "modeldeploy_model_download_seconds",
            "Seconds spent fetching and verifying the artifact.",
            registry=r,
        )
        self.download_bytes = Gauge(
            "modeldeploy_model_download_bytes",
            "Size of the fetched artifact in bytes.",
            registry=r,
        )
        self.ready = Gauge(
            "modeldeploy_model_ready", "1 once the model is in memory and serving.", registry=r
        )
        self.info = Gauge(
            "modeldeploy_model_info",
            "Constant 1, labelled with what this process serves.",
            [
                "name",
                "version",
                "uri",
                "sha256",
                "format",
                "estimator",
                "sklearn_version",
                "trained_sklearn_version",
                "track",
            ],
            registry=r,
        )
        self.version_mismatch = Gauge(
            "modeldeploy_model_sklearn_version_mismatch",
            "1 when loading raised scikit-learn's InconsistentVersionWarning.",
            ["trained_sklearn_version", "sklearn_version"],
            registry=r,
        )
        # spec.auth: children are bound (and so exported) only when the reviewer exists.
        self.auth_requests = Counter(
            "modeldeploy_auth_requests",
            "Requests checked by spec.auth, by outcome (allowed, unauthenticated, forbidden, "
            "unavailable) and cache (hit; miss: reviewed for it; coalesced: waited on another "
            "request's review of the same token).",
            ["outcome", "cache"],
            registry=r,
        )
        self.auth_review_seconds = Histogram(
            "modeldeploy_auth_review_duration_seconds",
            "TokenReview plus SubjectAccessReview against the API server, per review, by "
            "result (answered, unavailable).",
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Bound children by predicted value: labels() costs ~10 µs, a dict lookup ~50 ns.
        self._class_children: dict[Any, Any] = {}

    def _class_child(self, value: Any) -> Any:
        child = self._class_children.get(value)
        if child is None:
            label = str(value)
            if len(self._class_children) >= _MAX_CLASS_LABELS:
                label = "__other__"
            child = self.predicted_class.labels(label)
            self._class_children[value] = child  # bounded: a classifier predicts its classes_
        return child

    def record_request(self, endpoint: str, protocol: str, status: str, seconds: float) -> None:
        """One answered request of any transport (REST or gRPC), by route and status.

        The bound children are cached per (endpoint, protocol, status): labels() costs ~10 µs
        a call, more than the rest of a small request's bookkeeping. Bounded: endpoints are
        route templates or method names, statuses a few codes.
        """
        key = (endpoint, protocol, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(endpoint, protocol, status),
                self.latency.labels(endpoint, protocol),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_predictions(self, pred: np.ndarray[Any, Any], classifier: bool) -> None:
        """Count classes (classifiers) or histogram values (regressors) for one batch."""
        if pred.ndim != 1 or pred.size == 0:
            return
        if classifier:
            if pred.size <= 16:  # the usual small batch: np.unique costs more than a loop
                for value in pred.tolist():
                    self._class_child(value).inc()
                return
            values, counts = np.unique(pred, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                self._class_child(value).inc(count)
        elif pred.dtype.kind in "iuf":
            for value in pred[:1000].tolist():
                self.predicted_value.observe(value)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
