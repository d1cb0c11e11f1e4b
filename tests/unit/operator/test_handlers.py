"""The kopf wiring: which handlers exist, how kopf is configured, and the CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from conftest import make_md
from modeldeploy_operator import builders
from modeldeploy_operator.__main__ import parse_args
from modeldeploy_operator.errors import ApiError
from modeldeploy_operator.handlers import Runtime, _kick, _owner_name, configure_kopf, make_registry
from modeldeploy_operator.settings import OperatorSettings


class NoKube:
    """Runtime needs a Kube; these tests never reach it."""


def registry() -> kopf.OperatorRegistry:
    return make_registry(Runtime(settings=OperatorSettings(), kube=NoKube()))  # type: ignore[arg-type]


def test_handlers_cover_every_entry_point() -> None:
    reg = registry()
    # No create/update/resume handlers: kopf's diff base costs a deep copy per event and a
    # write per change; the ModelDeployment watch decides itself (needs_run).
    assert reg._changing.get_all_handlers() == []
    # No timers or daemons: kopf adds a finalizer to every object one of those serves.
    assert reg._spawning.get_all_handlers() == []
    watched = {
        h.selector.plural or h.selector.any_name  # type: ignore[union-attr]
        for h in reg._watching.get_all_handlers()
    }
    assert watched == {
        "modeldeployments",
        "deployments",
        "services",
        "pods",
        "httproutes",
        "clusterrolebindings",
    }
    activities = {h.activity for h in reg._activities.get_all_handlers()}
    assert "authentication" in {str(a) for a in activities}  # an explicit registry needs a login


def test_kopf_settings_use_our_prefix_and_no_finalizer_handlers() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorSettings(watch_server_timeout=123, watch_client_timeout=150))
    assert settings.persistence.progress_storage.prefix == "modeldeploy.io"  # type: ignore[attr-defined]
    assert settings.persistence.diffbase_storage.prefix == "modeldeploy.io"  # type: ignore[attr-defined]
    # no change handlers, so no per-event deep copy of the object to diff
    body = kopf.Body({"metadata": {"name": "iris"}, "spec": {"replicas": 2}})
    assert settings.persistence.diffbase_storage.build(body=body) == {}
    assert settings.watching.server_timeout == 123
    assert isinstance(settings.watching.server_timeout, int)
    assert settings.watching.client_timeout == 150
    assert settings.peering.standalone is True
    # no delete handlers: kopf adds a finalizer only for those
    assert all(str(h.reason) != "delete" for h in registry()._changing.get_all_handlers())


def test_owner_is_found_by_owner_reference() -> None:
    body: dict[str, Any] = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x"},
                {
                    "apiVersion": "modeldeploy.io/v1alpha1",
                    "kind": "ModelDeployment",
                    "name": "iris",
                },
            ]
        }
    }
    assert _owner_name(body) == "iris"
    assert _owner_name({"metadata": {}}) is None


def test_cli_defaults_and_repeated_namespaces() -> None:
    args = parse_args([])
    assert args.namespace == []
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert parse_args(["--namespace", "a", "-n", "b"]).namespace == ["a", "b"]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_SERVER_IMAGE", "registry.local/server:9.9.9")
    monkeypatch.setenv("MODELDEPLOY_RESYNC_SECONDS", "15")
    s = OperatorSettings()
    assert s.server_image == "registry.local/server:9.9.9"
    assert s.resync_seconds == 15


class CountingKube:
    def __init__(self) -> None:
        self.gets = 0

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind == "ModelDeployment"
        self.gets += 1
        return None  # deleted: nothing to reconcile


def test_child_event_bursts_coalesce_into_one_queued_run() -> None:
    kube = CountingKube()
    rt = Runtime(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]

    async def burst() -> None:
        async with rt.locks.hold(("ns", "iris")):  # a reconcile is running: events queue behind
            tasks = [asyncio.create_task(rt.run("ns", "iris", coalesce=True)) for _ in range(20)]
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    asyncio.run(burst())
    assert kube.gets == 1
    assert len(rt.locks) == 0
    assert rt.queued == {}


def test_per_object_state_is_gone_when_the_work_is_done() -> None:
    """Memory must not grow with every ModelDeployment ever seen: after runs over many objects
    (here all deleted, so each run ends early) no lock or queue entry is left."""
    kube = CountingKube()
    rt = Runtime(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]

    async def many() -> int:
        runs = [rt.run(f"ns-{i % 7}", f"md-{i}", coalesce=i % 2 == 0) for i in range(500)]
        runs += [rt.run("ns-0", "md-0") for _ in range(5)]  # waiters on one object
        peak = 0

        async def watch() -> None:
            nonlocal peak
            for _ in range(50):
                peak = max(peak, len(rt.locks))
                await asyncio.sleep(0)

        await asyncio.gather(watch(), *runs)
        return peak

    peak = asyncio.run(many())
    assert kube.gets == 505
    assert peak > 0  # the locks did exist while the runs were in flight
    assert len(rt.locks) == 0
    assert rt.queued == {}


def test_a_lock_serialises_runs_of_one_object_and_leaves_others_free() -> None:
    rt = Runtime(settings=OperatorSettings(), kube=CountingKube())  # type: ignore[arg-type]
    order: list[str] = []

    async def hold(key: tuple[str, str], tag: str, pause: float) -> None:
        async with rt.locks.hold(key):
            order.append(f"{tag} in")
            await asyncio.sleep(pause)
            order.append(f"{tag} out")

    async def main() -> None:
        await asyncio.gather(
            hold(("ns", "a"), "a1", 0.02), hold(("ns", "a"), "a2", 0), hold(("ns", "b"), "b", 0)
        )

    asyncio.run(main())
    # a2 waits for a1; b does not wait for anyone
    assert order.index("a2 in") > order.index("a1 out")
    assert order.index("b out") < order.index("a1 out")
    assert len(rt.locks) == 0


def test_api_errors_become_temporary_errors_with_a_delay() -> None:
    from modeldeploy_operator.handlers import retry_delay

    assert retry_delay(ApiError(409, "Conflict", "x")) == 2
    assert retry_delay(ApiError(503, "ServiceUnavailable", "x")) == 10
    assert retry_delay(ApiError(403, "Forbidden", "x")) == 60


def test_no_handler_makes_kopf_add_a_finalizer() -> None:
    reg = registry()
    handlers = [
        *reg._changing.get_all_handlers(),
        *reg._spawning.get_all_handlers(),
        *reg._watching.get_all_handlers(),
    ]
    assert handlers
    assert not any(getattr(h, "requires_finalizer", False) for h in handlers)


class RunCountingKube(CountingKube):
    """Records which ModelDeployments were read; each is gone by then, so nothing runs."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str]] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind == "ModelDeployment"
        self.asked.append((namespace, name))
        return None


def test_resync_runs_every_known_object_once_and_forgets_deleted_ones() -> None:
    kube = RunCountingKube()
    rt = Runtime(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]
    for i in range(5):
        rt.seen(None, ("ns", f"md-{i}"))  # kopf's initial listing
    rt.seen("ADDED", ("other", "x"))
    rt.seen("DELETED", ("ns", "md-3"))
    started = asyncio.run(rt.resync_once())
    assert started == 5
    assert sorted(kube.asked) == [
        ("ns", "md-0"),
        ("ns", "md-1"),
        ("ns", "md-2"),
        ("ns", "md-4"),
        ("other", "x"),
    ]
    assert len(rt.locks) == 0


def test_resync_sweeps_known_cluster_children() -> None:

    binding = builders.auth_binding(make_md(auth={}))
    binding["metadata"]["uid"] = "crb-1"
    deleted: list[str] = []

    class Gone(RunCountingKube):
        def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
            deleted.append(name)

    rt = Runtime(settings=OperatorSettings(), kube=Gone())  # type: ignore[arg-type]
    rt.cluster_child_seen(None, binding)
    asyncio.run(rt.resync_once())
    assert deleted == ["modeldeploy-auth.default.iris"]  # its ModelDeployment is gone
    rt.cluster_child_seen("DELETED", binding)
    assert rt.cluster_children == {}


def test_listing_events_of_children_start_no_run() -> None:
    """A watch reconnect re-lists every child (type None): nothing changed, so no reconcile."""
    kube = RunCountingKube()
    rt = Runtime(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]
    reg = make_registry(rt)
    pods = next(h for h in reg._watching.get_all_handlers() if h.selector.plural == "pods")  # type: ignore[union-attr]
    body = {"metadata": {"name": "p", "labels": {"app.kubernetes.io/instance": "iris"}}}

    async def deliver(event_type: str | None) -> None:
        await pods.fn(type=event_type, body=body, namespace="ns")
        await asyncio.gather(*rt.kicks)

    asyncio.run(deliver(None))
    assert kube.asked == []
    asyncio.run(deliver("MODIFIED"))
    assert kube.asked == [("ns", "iris")]


def _md(generation: int, observed: int | None, rv: str = "1", **meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris",
            "namespace": "ns",
            "generation": generation,
            "resourceVersion": rv,
            **meta,
        },
        "status": {} if observed is None else {"observedGeneration": observed},
    }
    return body


def test_needs_run_acts_on_changes_and_not_on_our_own_status_writes() -> None:
    from modeldeploy_operator.handlers import needs_run

    done = _md(3, 3)
    assert needs_run(done, None)  # never seen by this process: a new object or a restart
    assert not needs_run(done, done)  # our status write echoed back, or a re-listing
    assert needs_run(_md(4, 3), done)  # a spec change (generation) not reconciled yet
    assert needs_run(_md(3, 3, labels={"team": "a"}), done)  # metadata the children carry
    assert needs_run(_md(3, 3, annotations={"modeldeploy.io/pause": "x"}), done)
    assert not needs_run(_md(4, 3, deletionTimestamp="2026-01-01T00:00:00Z"), done)


def test_model_deployment_events_start_runs_only_when_something_changed() -> None:
    rt = Runtime(settings=OperatorSettings(), kube=RunCountingKube())  # type: ignore[arg-type]
    runs: list[tuple[str, str]] = []

    async def run(namespace: str, name: str, **_: Any) -> None:
        runs.append((namespace, name))

    rt.run = run  # type: ignore[method-assign]
    handler = next(
        h
        for h in make_registry(rt)._watching.get_all_handlers()
        if "modeldeployments" in (h.selector.plural, h.selector.any_name)  # type: ignore[union-attr]
    )

    def deliver(event_type: str | None, body: dict[str, Any]) -> None:
        async def handle() -> None:
            await handler.fn(type=event_type, body=body, namespace="ns", name="iris")
            await asyncio.gather(*rt.kicks)  # the handler starts runs without waiting for them

        asyncio.run(handle())

    deliver(None, _md(2, 2, rv="10"))  # the first listing after a start: resume
    assert len(runs) == 1
    deliver(None, _md(2, 2, rv="10"))  # a re-listing after a watch reconnect: nothing new
    deliver("MODIFIED", _md(2, 2, rv="11"))  # a status-only write
    assert len(runs) == 1
    deliver("MODIFIED", _md(3, 2, rv="12"))  # kubectl apply of a new spec
    assert len(runs) == 2
    assert rt.cache.lookup("ModelDeployment", "ns", "iris")[1]["metadata"]["generation"] == 3  # type: ignore[index]
    deliver("DELETED", _md(3, 3, rv="13"))
    assert rt.cache.lookup("ModelDeployment", "ns", "iris") == (False, None)
    assert ("ns", "iris") not in rt.known


def test_a_run_failing_on_the_api_is_retried_later() -> None:
    rt = Runtime(settings=OperatorSettings(), kube=RunCountingKube())  # type: ignore[arg-type]
    rt.known.add(("ns", "iris"))

    async def run(namespace: str, name: str, **_: Any) -> None:
        raise ApiError(409, "Conflict", "the object has been modified")

    rt.run = run  # type: ignore[method-assign]

    async def kick() -> float:
        await _kick(rt, "ns", "iris")
        timer = rt.timers[("ns", "iris")]
        delay = timer.when() - asyncio.get_running_loop().time()
        timer.cancel()
        return delay

    assert 1.0 < asyncio.run(kick()) <= 2.0  # retry_delay of a conflict
