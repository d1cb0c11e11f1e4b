"""What the watches have shown, so an event-driven reconcile reads memory instead of the API server.

A reconcile used to cost a chain of round trips (the ModelDeployment, three to seven children,
a pod LIST, then its writes). With 500 objects those reads were most of the operator's time
and a large share of the API server's CPU (docs/operations.md, "Scale"), and each of them
waited behind the others on a busy control plane. kopf already watches ModelDeployments,
Deployments, Services, HTTPRoutes and Pods; this keeps what those watches delivered (and what
our own writes returned), the way an informer cache does for a Go controller.

The rules that keep it honest:

* **A miss is "unknown", not "absent".** Only a DELETED event, our own delete or a 404 from a
  real read records that an object does not exist; anything else unknown is read from the API
  server (and kept). So a restarted operator, whose watches are still listing, never takes
  a child it has not seen yet for a missing one (and never applies over a same-named child
  that someone else controls).
* **Newer wins.** Watch events can arrive after the response of our own later write; an entry
  is replaced only by a body with a resourceVersion at least as new. (resourceVersions are
  etcd revisions on every API server this runs against; when one is not a number, the latest
  arrival wins.) A read result is stored only if no event touched the key (for a pod LIST:
  the object's pods) while it was in flight, so a slow GET or LIST never overwrites what a
  watch said meanwhile; one in-flight flag per read says so, and goes with the read.
* **Pods of an object are trusted only after one LIST of them** that no pod event raced; the
  pod watch keeps them from then on. A watch may have been listing when the object's first
  pods appeared.
* **Thorough runs (the resync loop) read everything for real** and refresh the cache, so a
  deletion lost in a watch gap (kopf's re-listing only adds) or a hand edit of an unwatched
  child (HorizontalPodAutoscaler, PodDisruptionBudget, ServiceAccount, ClusterRoleBinding,
  whose entries come from our own writes) is found within a resync interval, as before.
* **Memory goes with the object.** Bodies are kept without ``metadata.managedFields`` (often
  half an object, and never read), pods as their metadata and status only (a reconcile never
  reads a pod's spec, most of its size; a LIST the cache did not answer returns the same slim
  pods, so a run sees the same whichever way it read them), and all of them as compact JSON
  text, decoded for each reader: decoded dicts take six times the memory, and a run reads a
  handful of bodies, so the decoding costs little. Every entry recorded for a
  ModelDeployment goes when it is deleted, and nothing is recorded for one that is gone (a
  run that outlived it, the pod events of its garbage collection); watched objects go with
  their DELETED events. Secrets are never kept.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from modeldeploy_operator.api import KIND, LABEL_INSTANCE
from modeldeploy_operator.reconcile import Cluster

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name); namespace "" for cluster-scoped kinds
Owner = tuple[str, str]  # (namespace, ModelDeployment name)

POD = "Pod"
NEVER_KEPT = frozenset({"Secret"})


@dataclass(frozen=True)
class _Body:
    """A kept body as compact JSON: a sixth of the memory of the decoded dicts (one of our
    Deployments: 3.7 KB of text, 22 KB of dicts, lists and strings), and every reader gets its
    own copy (a reconcile cannot change what the next one reads)."""

    text: str
    version: int | None
    uid: str | None

    @classmethod
    def of(cls, body: Obj) -> _Body:
        meta = body.get("metadata") or {}
        return cls(json.dumps(body, separators=(",", ":")), _version(body), meta.get("uid"))

    def decoded(self) -> Obj:
        out: Obj = json.loads(self.text)
        return out


@dataclass
class _Entry:
    body: _Body | None  # None: known not to exist (only for an object's child, dropped with it)
    owner: Owner | None


def _version(body: Obj | None) -> int | None:
    rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def _meta(body: Any) -> Obj:
    return {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}


def slim(body: Any) -> Obj:
    """A plain dict of ``body`` without managedFields (shared nested values, not a deep copy)."""
    out: Obj = dict(body)
    if out.get("metadata") is not None:
        out["metadata"] = _meta(body)
    return out


def slim_pod(body: Any) -> Obj:
    """A pod as reconciles read it: its metadata (without managedFields) and status."""
    return {"metadata": _meta(body), "status": body.get("status") or {}}


def _selector(selector: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in selector.split(",") if "=" in part)


class WatchCache:
    """Thread-safe: the event loop feeds it from the watches, reconcile workers read it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, _Entry] = {}
        self._owned: dict[Owner, set[Key]] = {}  # keys recorded for an object, to drop with it
        # The pods of each object whose pods were listed once (by the pods' instance label);
        # the watch keeps them from then on. Pods of other objects are not kept: nothing would
        # read them before that object's first LIST, which replaces them all.
        self._pods: dict[Owner, dict[str, _Body]] = {}
        # Reads in flight -> whether an event touched what they read meanwhile: a GET by its key,
        # a pod LIST by (Pod, namespace, instance). The per-object lock serialises runs, so one
        # read per key at a time.
        self._in_flight: dict[Key, bool] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects) + sum(len(p) for p in self._pods.values())

    # -- fed by the watches (kopf's events, its listings included)
    def seen(self, kind: str, body: Any, deleted: bool) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if kind == POD:
            self._pod_seen(namespace, name, body, deleted)
            return
        key = (kind, namespace, name)
        new = None if deleted else _Body.of(slim(body))  # encoded before taking the lock
        with self._lock:
            self._touch(key)
            old = self._objects.get(key)
            if new is None:
                # Only the incarnation that was deleted: ours may already have replaced it.
                old_uid = old.body.uid if old is not None and old.body is not None else None
                if old is not None and old_uid in (None, meta.get("uid")):
                    self._put(key, None, old.owner)
                return
            if old is not None and old.body is not None and not self._newer(new, old.body):
                return
            self._objects[key] = _Entry(new, old.owner if old else None)

    def _pod_seen(self, namespace: str, name: str, body: Any, deleted: bool) -> None:
        instance = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_INSTANCE)
        if not instance:
            return
        owner = (namespace, str(instance))
        new = None if deleted else _Body.of(slim_pod(body))
        with self._lock:
            self._touch((POD, *owner))
            pods = self._pods.get(owner)
            if pods is None:
                return
            old = pods.get(name)
            if new is None:
                pods.pop(name, None)
            elif old is None or self._newer(new, old):
                pods[name] = new

    @staticmethod
    def _newer(new: _Body, old: _Body) -> bool:
        a, b = new.version, old.version
        return a is None or b is None or a >= b

    def _touch(self, key: Key) -> None:
        if key in self._in_flight:
            self._in_flight[key] = True

    def _put(self, key: Key, body: _Body | None, owner: Owner | None) -> None:
        if body is None and owner is None:
            self._objects.pop(key, None)  # an owner-less tombstone: nothing would ever drop it
            return
        self._objects[key] = _Entry(body, owner)
        if owner is not None:
            self._owned.setdefault(owner, set()).add(key)

    def forget(self, namespace: str, name: str) -> None:
        """The ModelDeployment is gone: drop it and everything recorded for it."""
        owner = (namespace, name)
        with self._lock:
            self._touch((KIND, namespace, name))
            self._objects.pop((KIND, namespace, name), None)
            for key in self._owned.pop(owner, set()):
                entry = self._objects.get(key)
                if entry is not None and entry.owner == owner:
                    del self._objects[key]
            self._pods.pop(owner, None)

    # -- used by reconciles
    def lookup(self, kind: str, namespace: str, name: str) -> tuple[bool, Obj | None]:
        """(known, body): known False means ask the API server."""
        with self._lock:
            entry = self._objects.get((kind, namespace, name))
        if entry is None:
            return False, None
        return True, entry.body.decoded() if entry.body is not None else None

    def stored(
        self, kind: str, namespace: str, name: str, body: Obj | None, *, owner: Owner | None
    ) -> None:
        """Records a write's response (None: deleted): the newest there is. ``owner``: the
        object it is recorded for (None for a ModelDeployment itself)."""
        new = self._encoded(kind, body)
        with self._lock:
            self._store((kind, namespace, name), new, owner)

    def reading(self, kind: str, namespace: str, name: str) -> None:
        """A real GET of this key starts now; ``read`` takes its answer."""
        with self._lock:
            self._in_flight[(kind, namespace, name)] = False

    def read(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: Obj | None,
        *,
        owner: Owner | None,
        failed: bool = False,
    ) -> None:
        """The GET's answer (None: a 404; failed: no answer), recorded as ``stored`` does unless
        an event touched the key while it was in flight."""
        key = (kind, namespace, name)
        new = None if failed else self._encoded(kind, body)
        with self._lock:
            raced = self._in_flight.pop(key, True)
            if not (failed or raced):
                self._store(key, new, owner)

    @staticmethod
    def _encoded(kind: str, body: Obj | None) -> _Body | None:
        return _Body.of(slim(body)) if body is not None and kind not in NEVER_KEPT else None

    def _store(self, key: Key, body: _Body | None, owner: Owner | None) -> None:
        if key[0] in NEVER_KEPT:
            return
        if owner is not None and (KIND, *owner) not in self._objects:
            return  # a run that outlived its object: nothing would ever drop the entry
        old = self._objects.get(key)
        kept = old.body if old is not None else None
        if body is not None and kept is not None and not self._newer(body, kept):
            return
        self._put(key, body, owner or (old.owner if old else None))

    def pods(self, namespace: str, selector: str) -> list[Obj] | None:
        """The pods matching ``selector`` (which names one object's instance label), or None
        when they were never listed: ask the API server."""
        wanted = _selector(selector)
        owner = (namespace, wanted.get(LABEL_INSTANCE, ""))
        with self._lock:
            kept = self._pods.get(owner)
            if kept is None:
                return None
            kept_bodies = list(kept.values())
        pods = [b.decoded() for b in kept_bodies]
        return [
            p
            for p in pods
            if all(
                ((p.get("metadata") or {}).get("labels") or {}).get(k) == v
                for k, v in wanted.items()
            )
        ]

    def kept_pods(self) -> dict[Owner, list[Obj]]:
        """Every object's pods, for those whose pods were listed once."""
        with self._lock:
            kept = {owner: list(pods.values()) for owner, pods in self._pods.items()}
        return {owner: [b.decoded() for b in bodies] for owner, bodies in kept.items()}

    def listing(self, namespace: str, selector: str) -> None:
        """A real pod LIST for the object ``selector`` names starts now."""
        owner = (namespace, _selector(selector).get(LABEL_INSTANCE, ""))
        with self._lock:
            self._in_flight[(POD, *owner)] = False

    def listed(self, namespace: str, selector: str, items: list[Obj] | None) -> None:
        """Its result (None: it failed; pods as ``slim_pod`` made them): trusted from now on,
        unless a pod event came in while it was in flight (then the next run lists again) or the
        object is gone meanwhile."""
        owner = (namespace, _selector(selector).get(LABEL_INSTANCE, ""))
        kept = {str(p["metadata"]["name"]): _Body.of(p) for p in items or []}
        with self._lock:
            raced = self._in_flight.pop((POD, *owner), True)
            if items is None or raced or not owner[1] or (KIND, *owner) not in self._objects:
                return
            self._pods[owner] = kept


class CachedCluster:
    """``reconcile.Cluster`` for one run over one ModelDeployment: reads from the cache where it
    knows, from ``inner`` (kube.Kube) otherwise or when ``thorough``; writes go to ``inner``
    and their responses into the cache."""

    def __init__(self, inner: Cluster, cache: WatchCache, owner: Owner, thorough: bool) -> None:
        self.inner, self.cache, self.owner, self.thorough = inner, cache, owner, thorough
        self.reads = 0  # round trips this run made for reads (the rest came from memory)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        if not self.thorough and kind not in NEVER_KEPT:
            known, body = self.cache.lookup(kind, namespace, name)
            if known:
                return body
        self.reads += 1
        # The ModelDeployment's own entry is nobody's child: forget() drops it.
        owner = None if (kind, namespace, name) == (KIND, *self.owner) else self.owner
        self.cache.reading(kind, namespace, name)
        body, failed = None, True
        try:
            body = self.inner.get(kind, namespace, name)
            failed = False
        finally:
            self.cache.read(kind, namespace, name, body, owner=owner, failed=failed)
        return body

    def apply(self, manifest: Obj) -> Obj:
        obj = self.inner.apply(manifest)
        meta = manifest["metadata"]
        self.cache.stored(
            manifest["kind"], str(meta.get("namespace") or ""), meta["name"], obj, owner=self.owner
        )
        return obj

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        self.inner.delete(kind, namespace, name, uid)
        self.cache.stored(kind, namespace, name, None, owner=self.owner)

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        if not self.thorough:
            pods = self.cache.pods(namespace, selector)
            if pods is not None:
                return pods
        self.reads += 1
        self.cache.listing(namespace, selector)
        items: list[Obj] | None = None
        try:
            items = [slim_pod(p) for p in self.inner.list_pods(namespace, selector)]
        finally:
            self.cache.listed(namespace, selector, items)
        return items

    def patch_status(self, namespace: str, name: str, patch: Obj) -> Obj | None:
        obj = self.inner.patch_status(namespace, name, patch)
        if obj:
            self.cache.stored(KIND, namespace, name, obj, owner=None)
        return obj

    def event(self, md: Obj, type_: str, reason: str, message: str) -> None:
        self.inner.event(md, type_, reason, message)
