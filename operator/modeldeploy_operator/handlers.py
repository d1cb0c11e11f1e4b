"""The kopf wiring: which events lead to ``reconcile()``, and how kopf itself is configured.

The only module that imports kopf. Every entry point (create, update, resume, the resync loop and
the watches on the children) funnels into ``Runtime.run``, which serialises work per
ModelDeployment, always re-reads the object (a handler's body may be older than our own last
status write) and runs the synchronous reconcile in a worker thread.

kopf is configured for production (docs/operations.md): its handler state lives in annotations
under ``modeldeploy.io`` from day one (changing the storage later re-runs every handler), no
finalizer is ever added (there are no delete handlers; children go by garbage collection, so a
stopped operator never blocks a delete), kopf posts only warnings as Events (our own Events say
what changed), and watches time out on both ends so a silently dropped connection is noticed.

The periodic resync is our own loop over the ModelDeployments the watch has shown, not
``@kopf.timer``: kopf puts a finalizer on every object a timer or daemon serves (so it can stop
it at deletion), and a finalizer would make every delete wait for a running operator. Child
events from kopf's (re-)listings (``type`` None, every watch reconnect) change nothing, so they
start no run; a change missed in a watch gap is the resync loop's to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf

from modeldeploy_operator import kubeauth, metrics
from modeldeploy_operator.api import (
    GROUP,
    KIND,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_OWNER_NAME,
    LABEL_OWNER_NAMESPACE,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from modeldeploy_operator.builders import HTTP_PORT
from modeldeploy_operator.cache import CachedCluster, WatchCache
from modeldeploy_operator.drift import DriftReport, summarize
from modeldeploy_operator.errors import ApiError, ObjectGoneError
from modeldeploy_operator.kube import Kube
from modeldeploy_operator.metrics import OperatorMetrics
from modeldeploy_operator.plan import orphan_reason
from modeldeploy_operator.reconcile import Baseline, InvalidSpecError, Outcome, reconcile
from modeldeploy_operator.registry import REFRESH_ANNOTATION, CheckKey, Due
from modeldeploy_operator.registry_client import MlflowRegistry
from modeldeploy_operator.rollout import COMMAND_ANNOTATIONS
from modeldeploy_operator.scrape import scrape_pods
from modeldeploy_operator.settings import OperatorSettings
from modeldeploy_operator.tracks import pod_target

log = logging.getLogger(__name__)

CHILD_LABELS = {LABEL_MANAGED_BY: MANAGED_BY}


Key = tuple[str, str]  # (namespace, name)
T = TypeVar("T")
# A drift check has many pods to read and no hurry: a pod that does not answer within this is
# reported as unreadable rather than holding up the others.
DRIFT_SCRAPE_TIMEOUT = 2.0


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class PerObjectLocks:
    """One lock per ModelDeployment, kept only while a run holds or waits for it.

    A dict of locks that is never pruned grows with every object the operator has ever seen
    (and every namespace deleted since); here an entry goes away with its last user, so the
    memory is bounded by the work in flight.
    """

    def __init__(self) -> None:
        self._slots: dict[Key, _Slot] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Key) -> AsyncIterator[None]:
        slot = self._slots.setdefault(key, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[key]

    def __len__(self) -> int:
        return len(self._slots)


@dataclass
class Runtime:
    """Per-process state shared by the handlers; nothing in it outlives the work in flight."""

    settings: OperatorSettings
    kube: Kube
    locks: PerObjectLocks = field(default_factory=PerObjectLocks)
    # runs waiting for the lock (coalesced), and whether one of them asked for a thorough run
    queued: dict[Key, bool] = field(default_factory=dict)
    known: set[Key] = field(default_factory=set)  # ModelDeployments that exist, from the watch
    # What the watches (and our writes) showed of the objects and their children and pods:
    # event-driven runs read it instead of the API server (cache.py says when it is trusted).
    cache: WatchCache = field(default_factory=WatchCache)
    cluster_children: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    # The previous metrics scrape of each object in a rollout with analysis (reconcile.Baseline)
    # and the timer of its next due step or interval; both go when the object does.
    baselines: dict[Key, Baseline] = field(default_factory=dict)
    timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    # When each models:/ reference is to be asked next (registry.resolve); goes with the object.
    registry: MlflowRegistry = field(default_factory=MlflowRegistry)
    registry_due: dict[CheckKey, Due] = field(default_factory=dict)
    # Each object's last drift report (its pods come from the cache); goes when the object does.
    drift: dict[Key, DriftReport] = field(default_factory=dict)
    metrics_port: int = HTTP_PORT  # the serving pods' /metrics port (another one in tests)
    kicks: set[asyncio.Task[None]] = field(default_factory=set)
    resync_task: asyncio.Task[None] | None = None
    drift_task: asyncio.Task[None] | None = None
    logged_in: bool = False  # kopf logs in again only after the API server refused a token
    pool: ThreadPoolExecutor | None = None
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    reconciles: int = 0
    writes: int = 0
    last_success: float = 0.0

    def __post_init__(self) -> None:
        self.metrics.track(lambda: len(self.queued), lambda: len(self.known))

    async def run(
        self,
        namespace: str,
        name: str,
        *,
        coalesce: bool = False,
        thorough: bool = False,
        settle: float = 0.0,
    ) -> None:
        """Reconciles one ModelDeployment. ``coalesce``: a burst of child events while a run is
        already queued for the same object adds nothing (the queued run will see it all; it
        becomes thorough if any of them asked). ``thorough``: read every possible child.
        ``settle``: seconds a coalescing run waits before it starts (more of the burst joins)."""
        key = (namespace, name)
        if coalesce:
            if key in self.queued:
                self.queued[key] = self.queued[key] or thorough
                return
            self.queued[key] = thorough
            if settle:
                # The events of one change come in a burst (a rollout's pod and Deployment
                # status updates): those in the next moment join this run instead of each
                # starting one, now that a run reads memory and takes a fraction of that.
                await asyncio.sleep(settle)
        async with self.locks.hold(key):
            thorough = self.queued.pop(key, False) or thorough
            outcome = await self._measured(key, thorough)
            if outcome is None:
                return  # gone or going: the garbage collector removes the children
            self.reconciles += 1
            self.writes += len(outcome.writes) + int(outcome.status_written)
            if outcome.writes:
                log.info("%s/%s: %s", namespace, name, "; ".join(outcome.writes))
        if outcome.requeue_after is not None:
            self.requeue(key, outcome.requeue_after)
        if outcome.retry is not None:
            raise outcome.retry
        self.last_success = time.time()

    async def _measured(self, key: Key, thorough: bool) -> Outcome | None:
        """One reconcile in a worker, recorded in the metrics: how it ended and how long it took,
        its writes and errors, and the object's gauges from the status it computed. None: the
        object is gone or going."""
        m = self.metrics
        result: str | None = metrics.ERROR
        started = time.monotonic()
        try:
            with m.reconciling():
                outcome = await self._in_worker(self._read_and_reconcile, *key, thorough)
        except ObjectGoneError as e:
            result = metrics.GONE
            log.debug("%s/%s: stopped reconciling: %s", *key, e)
            return None
        except InvalidSpecError:
            result = metrics.INVALID_SPEC
            m.count_error(metrics.INVALID_SPEC_REASON)
            if key in self.known:
                m.invalid_spec(*key)
            raise
        except ApiError as e:
            result = metrics.RETRY if e.retryable else metrics.ERROR
            m.count_error(metrics.api_error_reason(e))
            raise
        except asyncio.CancelledError:
            result = None  # the operator is stopping: not a run that ended
            raise
        except Exception as e:
            m.count_error(type(e).__name__)
            raise
        else:
            if outcome is None:
                result = metrics.GONE
                return None
            result = metrics.OK if outcome.retry is None else metrics.RETRY
            m.count_writes(outcome.writes, outcome.status_written)
            if outcome.retry is not None:
                m.count_error(metrics.api_error_reason(outcome.retry))
            # A run that read the object just before its deletion must not bring back the
            # series forget() removed.
            if key in self.known and outcome.status:
                m.observe_status(*key, outcome.status)
            return outcome
        finally:
            if result is not None:
                m.observe_reconcile(result, time.monotonic() - started)

    def requeue(self, key: Key, delay: float) -> None:
        """Reconcile ``key`` again in ``delay`` seconds (a pause ends, an analysis is due),
        keeping the earliest of the timers asked for."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.5)
        timer = self.timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()

        def fire() -> None:
            self.timers.pop(key, None)
            if key in self.known:
                self.kick(*key)

        self.timers[key] = loop.call_at(when, fire)

    def kick(self, namespace: str, name: str, *, settle: float | None = None) -> None:
        """A coalesced run (``_kick``) started, not awaited: a watch event's handler returns at
        once, so kopf's worker for that object goes on to its next event (which the cache must
        see before the run reads it) and lets go of the body it held, instead of waiting while
        the run settles and queues for the pool (tens of seconds in a burst over 500 objects)."""
        if (namespace, name) in self.queued:
            return  # the queued run will see this event too
        task = asyncio.get_running_loop().create_task(_kick(self, namespace, name, settle=settle))
        self.kicks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self.kicks.discard)

    def _read_and_reconcile(self, namespace: str, name: str, thorough: bool) -> Outcome | None:
        # Not the handler's body: it may be older than our own last status write. The cache
        # keeps the newest of the watch's and our writes' (a thorough run reads it for real).
        cluster = CachedCluster(self.kube, self.cache, (namespace, name), thorough)
        body = cluster.get(KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        return reconcile(
            cluster,
            body,
            self.settings,
            thorough=thorough,
            scrape=lambda targets: scrape_pods(targets, port=HTTP_PORT),
            baselines=self.baselines,
            resolver=self.registry,
            registry_due=self.registry_due,
            drift=self.drift.get((namespace, name)),
        )

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs blocking API work on the reconcile pool: its own threads (not the default
        executor kopf's sync handlers share), as many as MODELDEPLOY_RECONCILE_WORKERS, because a
        reconcile is a chain of round trips and waits far more than it computes."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(
                self.settings.reconcile_workers, thread_name_prefix="reconcile"
            )
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def seen(self, event_type: str | None, key: Key) -> None:
        """A ModelDeployment event (None: kopf's listing): keep ``known`` to what exists."""
        if event_type == "DELETED":
            self.known.discard(key)
            self.cache.forget(*key)
            self.baselines.pop(key, None)
            self.drift.pop(key, None)
            for due in [k for k in self.registry_due if k[:2] == key]:
                del self.registry_due[due]
            self.metrics.forget(*key)
            timer = self.timers.pop(key, None)
            if timer is not None:
                timer.cancel()
        else:
            self.known.add(key)

    async def check_drift_once(self) -> int:
        """Reads every ready serving pod's drift gauges (all objects' pods in one pass of the
        scrape pool) and reconciles each object whose report changed, so its status shows it.
        A round that could read no pod of an object changes nothing for it: its status keeps
        the last report (a pod unreachable from the operator is not a statement about its
        inputs; the log says why). Returns how many objects got a new report."""
        # The ready serving pods the watch cache keeps (every object listed its pods once).
        wanted = {
            key: ready
            for key, pods in self.cache.kept_pods().items()
            if key in self.known
            and (ready := {p["metadata"]["name"]: t for p in pods if (t := pod_target(p))})
        }
        # Pod names are unique per namespace only: one scrape pass covers every namespace.
        targets = {f"{k[0]}/{pod}": t.ip for k, pods in wanted.items() for pod, t in pods.items()}
        if not targets:
            return 0
        scraped = await asyncio.to_thread(
            scrape_pods, targets, port=self.metrics_port, timeout=DRIFT_SCRAPE_TIMEOUT
        )
        s = self.settings
        changed = 0
        for key, pods in wanted.items():
            scrapes = {
                pod: (t.track, got)
                for pod, t in pods.items()
                if (got := scraped.get(f"{key[0]}/{pod}")) is not None
            }
            report = summarize(scrapes, s.drift_threshold, s.drift_min_rows)
            if report is None:
                unread = [r for _, r in scrapes.values() if isinstance(r, str)]
                log.debug("%s/%s: no drift gauges read: %s", *key, "; ".join(unread[:3]))
                continue
            if self.drift.get(key) == report or key not in self.known:
                continue
            self.drift[key] = report
            changed += 1
            self.kick(*key)
        return changed

    async def check_drift_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.drift_seconds)
            try:
                await self.check_drift_once()
            except Exception:  # the next round tries again; never let the loop die
                log.exception("drift check failed")

    def cluster_child_seen(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name"))
        if event_type == "DELETED":
            self.cluster_children.pop(name, None)
        else:
            self.cluster_children[name] = body

    async def resync_once(self, spread_over: float = 0.0) -> int:
        """Reconciles every known ModelDeployment once and sweeps orphaned cluster-scoped
        children, spreading the runs over ``spread_over`` seconds so a large fleet is not one
        burst. Returns how many runs it started. Failures are logged and retried next round."""
        keys = sorted(self.known)
        gap = spread_over / len(keys) if keys else 0.0
        started = 0
        for key in keys:
            if key not in self.known:
                continue  # deleted meanwhile
            try:
                await self.run(*key, coalesce=True, thorough=True)
            except (ApiError, InvalidSpecError) as e:
                log.warning("resync of %s/%s failed: %s", *key, e)
            started += 1
            if gap:
                await asyncio.sleep(gap)
        for child in list(self.cluster_children.values()):
            owner = cluster_owner(child)
            if owner is not None:
                try:
                    await self.sweep(*owner, child)
                except ApiError as e:
                    log.warning("sweep of %s failed: %s", child["metadata"]["name"], e)
        return started

    async def resync_forever(self) -> None:
        """The level-based safety net: every resync interval, every object once (hand edits of
        unwatched children, missed events, watch gaps, orphaned bindings)."""
        interval = self.settings.resync_seconds
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            await self.resync_once(spread_over=interval / 2)
            log.debug(
                "resync of %d objects took %.1fs", len(self.known), time.monotonic() - started
            )

    async def sweep(self, namespace: str, name: str, child: dict[str, Any]) -> bool:
        """Deletes a cluster-scoped child whose ModelDeployment no longer wants it; True if so."""
        try:
            owner = await self._in_worker(self.kube.get, KIND, namespace, name)
            why = orphan_reason(child, owner)
            if why is None:
                return False
            meta = child.get("metadata") or {}
            kind = str(child.get("kind") or "ClusterRoleBinding")
            await self._in_worker(self.kube.delete, kind, "", meta["name"], meta.get("uid"))
        except ApiError as e:
            self.metrics.count_error(metrics.api_error_reason(e))
            raise
        log.info("deleted %s %s: %s", kind, meta["name"], why)
        self.writes += 1
        self.metrics.count_write(kind, "delete")
        return True


def retry_delay(e: ApiError) -> float:
    """Seconds until a reconcile that failed with ``e`` is tried again: conflicts clear up as
    soon as the other writer is done; other errors get a longer pause."""
    return 2 if e.status == 409 else 10 if e.retryable else 60


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf builds the "essence" of every event's object (a deep copy of all of it) and diffs it
    against the last handled one, for create/update handlers, which this operator does not
    have (``needs_run`` decides). Building nothing saves that copy: a sixth of the operator's
    CPU and tens of MiB of in-flight copies during a wave over 500 objects."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"  # never added: no delete handlers
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.watching.connect_timeout = 10
    # kopf keeps one worker per watched object while its events keep coming, and an idle worker
    # holds the last event's whole body (managedFields and all, which the watch cache drops)
    # until it exits: with the default 5 s, every Deployment, Service and pod of a fleet in a
    # rollout stays decoded in full. The handlers only feed the cache and start runs, so a
    # worker's start-up is all a short timeout costs.
    settings.queueing.idle_timeout = 0.5
    settings.networking.request_timeout = ours.api_request_timeout
    settings.networking.connect_timeout = 10
    settings.execution.default_backoff = 10
    settings.peering.standalone = True


def cluster_owner(body: Any) -> Key | None:
    """Cluster-scoped children have no ownerReference: the owner labels say whose they are."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    namespace, name = labels.get(LABEL_OWNER_NAMESPACE), labels.get(LABEL_OWNER_NAME)
    return (str(namespace), str(name)) if namespace and name else None


def _owner_name(body: Any) -> str | None:
    """The ModelDeployment controlling a child, by ownerReference (labels can be edited away)."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            return str(ref.get("name"))
    return None


def connection_info(creds: kubeauth.Credentials) -> kopf.ConnectionInfo:
    """kubeauth's credentials as kopf's watches take them."""
    token = creds.bearer()
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_file,
        ca_data=None if creds.ca_file else creds.ca_pem,
        insecure=creds.insecure or None,
        certificate_path=creds.cert_file,
        certificate_data=None if creds.cert_file else creds.cert_pem,
        private_key_path=creds.key_file,
        private_key_data=None if creds.key_file else creds.key_pem,
        token=token,
        username=None if token else creds.username,
        password=None if token else creds.password,
        default_namespace=creds.namespace,
    )


def make_registry(rt: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # kopf calls this at start and after a 401: the same credentials as kube.py, the
        # current token included (a rotated ServiceAccount token, a plugin's new one).
        creds = rt.kube.rest.credentials
        if rt.logged_in and creds.expire_if_refreshable():
            log.info("the API server refused the watches' token: reading it again")
        rt.logged_in = True
        return connection_info(creds)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, rt.settings)
        rt.resync_task = asyncio.create_task(rt.resync_forever(), name="modeldeploy-resync")
        if rt.settings.drift_seconds:
            rt.drift_task = asyncio.create_task(rt.check_drift_forever(), name="modeldeploy-drift")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in (rt.resync_task, rt.drift_task, *rt.kicks):
            if task is not None:
                task.cancel()

    @kopf.on.probe(id="reconciles", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        return {"reconciles": rt.reconciles, "writes": rt.writes, "lastSuccess": rt.last_success}

    # The ModelDeployment watch is an event handler, not kopf's create/update/resume handlers:
    # those deep-copy every object's essence on each event to diff it against an annotation,
    # and patch that annotation after each change (the copy alone was a sixth of the operator's
    # CPU at 500 objects, and the patch one write per change). needs_run() decides from the
    # event itself; a failed run is requeued (retry_delay), as kopf would have retried it.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def model_deployment_seen(
        type: str | None, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        key = (namespace or "", name)
        before = None if type == "DELETED" else rt.cache.lookup(KIND, *key)[1]
        rt.seen(type, key)
        if type == "DELETED":
            return
        rt.cache.seen(KIND, body, deleted=False)
        if needs_run(body, before):
            rt.kick(*key, settle=0.0)

    @kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, registry=registry)
    # Without the Gateway API CRDs kopf logs that httproutes cannot be served, and goes on.
    @kopf.on.event(
        "gateway.networking.k8s.io", "v1", "httproutes", labels=CHILD_LABELS, registry=registry
    )
    @kopf.on.event(
        group="", version="v1", plural="services", labels=CHILD_LABELS, registry=registry
    )
    async def child_changed(
        type: str | None,
        body: kopf.Body,
        namespace: str | None,
        resource: kopf.Resource,
        **_: Any,
    ) -> None:
        rt.cache.seen(str(body.get("kind") or resource.kind), body, deleted=type == "DELETED")
        owner = _owner_name(body)
        if owner and namespace and type is not None:
            rt.kick(namespace, owner)

    @kopf.on.event(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        labels=CHILD_LABELS,
        registry=registry,
    )
    async def cluster_child_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        rt.cluster_child_seen(type, dict(body))
        owner = cluster_owner(body)
        if owner is None or type == "DELETED":
            if owner is not None:
                rt.kick(*owner)  # put back a binding deleted by hand, if still wanted
            return
        try:
            if not await rt.sweep(*owner, dict(body)) and type is not None:
                await rt.run(*owner, coalesce=True)
        except (ApiError, InvalidSpecError) as e:
            log.warning("handling %s %s failed: %s", body.get("kind"), body["metadata"]["name"], e)

    @kopf.on.event(group="", version="v1", plural="pods", labels=CHILD_LABELS, registry=registry)
    async def pod_changed(
        type: str | None, body: kopf.Body, namespace: str | None, **_: Any
    ) -> None:
        rt.cache.seen("Pod", body, deleted=type == "DELETED")
        owner = (body.get("metadata", {}).get("labels") or {}).get(LABEL_INSTANCE)
        if owner and namespace and type is not None:
            rt.kick(namespace, owner)

    return registry


def needs_run(body: Any, before: Any) -> bool:
    """Whether a ModelDeployment event asks for a reconcile. ``before``: the object as last seen
    (by the watch or as our own status write returned it; None: never seen by this process, so
    a new object or the first listing after a start). Not for our own status writes echoed
    back, nor a re-listing that shows nothing new: those change nothing a reconcile reads."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False  # the garbage collector removes the children
    if before is None or pending_command(body):
        return True
    observed = (body.get("status") or {}).get("observedGeneration")
    if meta.get("generation") != observed:
        return True  # a spec change (kubectl apply, kubectl scale, the HPA) not yet reconciled
    old = before.get("metadata") or {}
    return any(meta.get(k) != old.get(k) for k in ("labels", "annotations", "ownerReferences"))


def pending_command(body: Any) -> bool:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    handled = ((body.get("status") or {}).get("rollout") or {}).get("commands") or {}
    refresh = annotations.get(REFRESH_ANNOTATION)
    if refresh and refresh != ((body.get("status") or {}).get("registry") or {}).get("refreshed"):
        return True
    return any(
        annotations.get(key) and annotations.get(key) != handled.get(cmd)
        for cmd, key in COMMAND_ANNOTATIONS.items()
    )


async def _kick(rt: Runtime, namespace: str, name: str, *, settle: float | None = None) -> None:
    """A coalesced run after an event (``settle``: seconds to wait for the rest of its burst;
    default MODELDEPLOY_EVENT_SETTLE_SECONDS). kopf does not retry event handlers: a run that
    failed on the API is requeued here; an invalid spec waits for the next change (status
    says what to fix)."""
    wait = rt.settings.event_settle_seconds if settle is None else settle
    try:
        await rt.run(namespace, name, coalesce=True, settle=wait)
    except InvalidSpecError as e:
        log.warning("%s/%s: %s", namespace, name, e)
    except ApiError as e:
        delay = retry_delay(e)
        log.warning("reconcile of %s/%s failed, retrying in %gs: %s", namespace, name, delay, e)
        if (namespace, name) in rt.known:
            rt.requeue((namespace, name), delay)


def run_operator(
    *,
    namespaces: Sequence[str],
    liveness: str | None,
    verbose: bool = False,
    quiet: bool = False,
    log_format: str = "full",
) -> None:
    """Runs kopf with this registry until it is stopped; ``namespaces`` empty: cluster-wide."""
    kopf.configure(verbose=verbose, quiet=quiet, log_format=kopf.LogFormat[log_format.upper()])
    if not verbose:
        # kopf logs "Handler ... succeeded" for every watch event of every child and pod: tens of
        # thousands of lines in a rollout of a large fleet, and a measurable share of the
        # operator's CPU. Our own log says what was written; kopf's warnings and errors stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings = OperatorSettings()
    # One pooled connection per reconcile worker, so no worker waits for a connection.
    try:
        creds = kubeauth.load()
    except kubeauth.CredentialsError as e:
        raise SystemExit(f"cannot reach the API server: {e}") from e
    kube = Kube(
        creds,
        connections=settings.reconcile_workers + 4,
        request_timeout=settings.api_request_timeout,
    )
    rt = Runtime(settings=settings, kube=kube)
    if settings.metrics_port:
        try:
            rt.metrics.serve(settings.metrics_port)
        except OSError as e:  # a taken port is a configuration error: say which, and stop
            raise SystemExit(
                f"cannot serve metrics on port {settings.metrics_port}: {e} "
                "(set MODELDEPLOY_METRICS_PORT to a free port, or 0 to turn metrics off)"
            ) from e
        log.info("serving Prometheus metrics on :%d/metrics", settings.metrics_port)
    registry = make_registry(rt)
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
    )
