"""The operator's own Prometheus metrics: the numbers a platform team alerts on.

Kubernetes shows each ModelDeployment's truth in its status; what it cannot show is the operator
itself (is it reconciling, failing, falling behind?) or the fleet at a glance (how many objects
are Degraded, and why). Both live here, in a registry of the operator's own so nothing else in
the process (kopf, the client libraries) adds series to ``/metrics`` by importing
prometheus-client.

Only prometheus-client and the operator's base tables: no kopf, no API client. ``handlers``
feeds it (each run's outcome, duration and writes, a status it computed, a deletion), and the
per-object part is split into ``gauges_of`` (pure over a status dict) and the bookkeeping that
keeps exactly one series per object and label kind, so a reason or phase that changes does not
leave its old series at 1 and a deleted object leaves nothing behind: cardinality follows the
objects that exist, not every object ever seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from modeldeploy_operator import conditions as c
from modeldeploy_operator.errors import ApiError

PREFIX: Final = "modeldeploy_operator"

# How a run of reconcile() ended (the `outcome` label).
OK: Final = "ok"  # converged as far as it could, status up to date
RETRY: Final = "retry"  # a transient API error (conflict, throttling, 5xx): retried soon
INVALID_SPEC: Final = "invalid_spec"  # the stored spec does not parse: needs a person
GONE: Final = "gone"  # the object (or its namespace) was deleted before or during the run
ERROR: Final = "error"  # a rejected API request or a bug: the operator logs it
OUTCOMES: Final = (OK, RETRY, INVALID_SPEC, GONE, ERROR)
INVALID_SPEC_REASON: Final = c.INVALID_SPEC.name  # its `reason` in errors_total and Degraded

# Reconciles are chains of API round trips: tens of ms when nothing changed, seconds for a new
# object, up to the API request timeout (30 s by default) when the API server is slow.
DURATION_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

STATUS_WRITE_KIND: Final = "ModelDeployment"
STATUS_WRITE_VERB: Final = "patch_status"

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class ObjectGauges:
    """What one ModelDeployment's status says, as gauge values; None: no series (status does
    not say it)."""

    ready: float | None = None
    degraded: tuple[str, float] | None = None  # (reason, 1 while Degraded is True else 0)
    replicas: float | None = None
    ready_replicas: float | None = None
    rollout_phase: str | None = None


def gauges_of(status: Mapping[str, Any]) -> ObjectGauges:
    """The per-object gauge values of a status dict as ``status.compute_status`` writes it."""
    conds = {
        cond.get("type"): cond
        for cond in status.get("conditions") or []
        if isinstance(cond, Mapping)
    }
    ready = conds.get(c.READY)
    degraded = conds.get(c.DEGRADED)
    rollout = status.get("rollout")
    phase = rollout.get("phase") if isinstance(rollout, Mapping) else None
    return ObjectGauges(
        ready=None if ready is None else _truth(ready),
        degraded=None
        if degraded is None
        else (str(degraded.get("reason") or ""), _truth(degraded)),
        replicas=_number(status.get("replicas")),
        ready_replicas=_number(status.get("readyReplicas")),
        rollout_phase=str(phase) if phase else None,
    )


def _truth(cond: Mapping[str, Any]) -> float:
    return 1.0 if cond.get("status") == "True" else 0.0


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def write_labels(write: str) -> tuple[str, str]:
    """(kind, verb) of one ``Outcome.writes`` entry such as ``"apply Deployment iris-stable"``."""
    verb, _, rest = write.partition(" ")
    kind = rest.partition(" ")[0]
    return kind or "unknown", verb or "unknown"


def api_error_reason(e: ApiError) -> str:
    """The ``reason`` label of an API error: the Status reason (a fixed vocabulary such as
    Conflict, Forbidden, Invalid, or the client's exception name for a connection failure), the
    HTTP code when the server gave none."""
    return e.reason or f"HTTP{e.status}"


class OperatorMetrics:
    """Every operator metric, in ``self.registry``.

    Per-object methods (``observe_status``, ``invalid_spec``, ``forget``) are called from the
    event loop only; prometheus-client makes the scrape thread's reads safe.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's own health (memory, CPU, open files, GC) beside ours, as the default
        # registry would have it.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Runs of reconcile() by how they ended (ok, retry, invalid_spec, gone, error).",
            ["outcome"],
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of one reconcile() run, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.api_writes = Counter(
            f"{PREFIX}_api_writes",
            "Writes the operator sent to the API server, by object kind and verb (apply, delete, "
            "patch_status).",
            ["kind", "verb"],
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Failed reconciles and API requests by reason (the API Status reason, InvalidSpec, "
            "or the exception's name).",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Reconciles waiting for their object's running reconcile (coalesced child events).",
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_reconciles_in_flight",
            "Reconciles running now (at most MODELDEPLOY_RECONCILE_WORKERS in worker threads).",
            registry=r,
        )
        self.known = Gauge(
            f"{PREFIX}_known_model_deployments",
            "ModelDeployments the operator's watch shows to exist.",
            registry=r,
        )
        obj = ["namespace", "name"]
        self.ready = Gauge(
            f"{PREFIX}_model_deployment_ready",
            "1 while the ModelDeployment's Ready condition is True.",
            obj,
            registry=r,
        )
        self.degraded = Gauge(
            f"{PREFIX}_model_deployment_degraded",
            "1 while the Degraded condition is True; reason is the condition's current reason "
            "(one series per object).",
            [*obj, "reason"],
            registry=r,
        )
        self.replicas = Gauge(
            f"{PREFIX}_model_deployment_replicas",
            "status.replicas: the replicas wanted over all tracks.",
            obj,
            registry=r,
        )
        self.ready_replicas = Gauge(
            f"{PREFIX}_model_deployment_ready_replicas",
            "status.readyReplicas over all tracks.",
            obj,
            registry=r,
        )
        self.rollout_phase = Gauge(
            f"{PREFIX}_model_deployment_rollout_phase",
            "1 for the current phase of status.rollout (spec.rollout only; one series per object).",
            [*obj, "phase"],
            registry=r,
        )
        for outcome in OUTCOMES:  # present from the start, so rate() and alerts see a zero
            self.reconciles.labels(outcome)
            self.duration.labels(outcome)
        self._objects: dict[Key, ObjectGauges] = {}

    # ------------------------------------------------------------------ the operator's own work
    def observe_reconcile(self, outcome: str, seconds: float) -> None:
        self.reconciles.labels(outcome).inc()
        self.duration.labels(outcome).observe(max(seconds, 0.0))

    @contextlib.contextmanager
    def reconciling(self) -> Iterator[None]:
        """Counts a reconcile as in flight while the block runs."""
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    def count_writes(self, writes: Iterable[str], status_written: bool = False) -> None:
        """An ``Outcome``'s writes ("apply Deployment x", "delete Service y") and its status
        patch."""
        for write in writes:
            self.count_write(*write_labels(write))
        if status_written:
            self.count_write(STATUS_WRITE_KIND, STATUS_WRITE_VERB)

    def count_write(self, kind: str, verb: str) -> None:
        self.api_writes.labels(kind, verb).inc()

    def count_error(self, reason: str) -> None:
        self.errors.labels(reason or "unknown").inc()

    def track(self, queue_depth: Callable[[], int], known: Callable[[], int]) -> None:
        """Reads the queue depth and the number of known objects at scrape time (from the
        scrape thread: the callables must be safe to call there, like ``len`` of a dict)."""
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.known.set_function(lambda: float(known()))

    # ------------------------------------------------------------------ per ModelDeployment
    def observe_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Sets the object's gauges from a status it was just given."""
        self._apply((namespace, name), gauges_of(status))

    def invalid_spec(self, namespace: str, name: str) -> None:
        """The spec does not parse: reconcile wrote Ready False and Degraded True InvalidSpec
        (and left the replica counts in status as they were)."""
        key = (namespace, name)
        before = self._objects.get(key, ObjectGauges())
        self._apply(key, replace(before, ready=0.0, degraded=(INVALID_SPEC_REASON, 1.0)))

    def forget(self, namespace: str, name: str) -> None:
        """The object was deleted: every series of it goes."""
        key = (namespace, name)
        if key in self._objects:
            self._apply(key, ObjectGauges())
            del self._objects[key]

    def objects(self) -> int:
        """How many ModelDeployments have series (for tests and the bounded-memory check)."""
        return len(self._objects)

    def _apply(self, key: Key, new: ObjectGauges) -> None:
        old = self._objects.get(key, ObjectGauges())
        _set_or_remove(self.ready, key, new.ready)
        _set_or_remove(self.replicas, key, new.replicas)
        _set_or_remove(self.ready_replicas, key, new.ready_replicas)
        old_reason = old.degraded[0] if old.degraded else None
        new_reason = new.degraded[0] if new.degraded else None
        if old_reason is not None and old_reason != new_reason:
            self.degraded.remove(*key, old_reason)
        if new.degraded is not None:
            self.degraded.labels(*key, new.degraded[0]).set(new.degraded[1])
        if old.rollout_phase is not None and old.rollout_phase != new.rollout_phase:
            self.rollout_phase.remove(*key, old.rollout_phase)
        if new.rollout_phase is not None:
            self.rollout_phase.labels(*key, new.rollout_phase).set(1.0)
        self._objects[key] = new

    # ------------------------------------------------------------------ serving
    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serves the registry on ``port`` (every path; Prometheus scrapes ``/metrics``) from a
        daemon thread. A port that cannot be bound raises OSError."""
        start_http_server(port, addr=addr, registry=self.registry)


def _set_or_remove(gauge: Gauge, key: Key, value: float | None) -> None:
    if value is None:
        gauge.remove(*key)
    else:
        gauge.labels(*key).set(value)
