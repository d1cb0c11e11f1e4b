"""The watch cache: when a reconcile may trust memory, and when it must ask the API server."""

from __future__ import annotations

from typing import Any

from conftest import FakeCluster
from modeldeploy_operator.api import LABEL_INSTANCE
from modeldeploy_operator.cache import CachedCluster, WatchCache

Obj = dict[str, Any]
SELECTOR = f"app.kubernetes.io/managed-by=modeldeploy-operator,{LABEL_INSTANCE}=iris"


def obj(kind: str, name: str, rv: str, uid: str = "u1", **extra: Any) -> Obj:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": rv,
            "managedFields": [{"manager": "x"}],
        },
        **extra,
    }


def pod(name: str, rv: str, owner: str = "iris") -> Obj:
    body = obj("Pod", name, rv)
    body["metadata"]["labels"] = {
        "app.kubernetes.io/managed-by": "modeldeploy-operator",
        LABEL_INSTANCE: owner,
    }
    return body


def known_cache(*names: str) -> WatchCache:
    """A cache whose watch has shown these ModelDeployments (children are kept only for one)."""
    cache = WatchCache()
    for name in names or ("iris",):
        cache.seen("ModelDeployment", obj("ModelDeployment", name, "1"), deleted=False)
    return cache


def test_a_miss_is_read_from_the_api_server_and_then_served_from_memory() -> None:
    fake = FakeCluster()
    fake.objects[("Service", "ns", "iris")] = obj("Service", "iris", "5")
    cluster = CachedCluster(fake, known_cache(), ("ns", "iris"), thorough=False)
    first = cluster.get("Service", "ns", "iris")
    second = cluster.get("Service", "ns", "iris")
    assert first is not None
    assert second is not None
    assert fake.calls == ["get Service/iris"]  # one round trip for two reads
    assert "managedFields" not in second["metadata"]
    assert cluster.reads == 1


def test_absent_is_remembered_only_from_a_real_answer() -> None:
    fake, cache = FakeCluster(), known_cache()
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    assert cluster.get("Deployment", "ns", "iris-canary") is None  # a 404: known absent now
    assert cluster.get("Deployment", "ns", "iris-canary") is None
    assert fake.calls == ["get Deployment/iris-canary"]
    # Something created it: the watch says so and the next read sees it without a round trip.
    cache.seen("Deployment", obj("Deployment", "iris-canary", "9"), deleted=False)
    assert cluster.get("Deployment", "ns", "iris-canary") is not None
    assert fake.calls == ["get Deployment/iris-canary"]


def test_an_older_watch_event_does_not_replace_our_newer_write() -> None:
    fake, cache = FakeCluster(), known_cache()
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    cache.stored(
        "Deployment",
        "ns",
        "iris-stable",
        obj("Deployment", "iris-stable", "20", spec={"replicas": 2}),
        owner=("ns", "iris"),
    )
    cache.seen("Deployment", obj("Deployment", "iris-stable", "15", spec={"replicas": 1}), False)
    got = cluster.get("Deployment", "ns", "iris-stable")
    assert got is not None
    assert got["spec"] == {"replicas": 2}
    cache.seen("Deployment", obj("Deployment", "iris-stable", "21", spec={"replicas": 3}), False)
    got = cluster.get("Deployment", "ns", "iris-stable")
    assert got is not None
    assert got["spec"] == {"replicas": 3}


def test_a_read_in_flight_does_not_overwrite_what_a_watch_said_meanwhile() -> None:
    cache = known_cache()
    cache.reading("Service", "ns", "iris")
    cache.seen("Service", obj("Service", "iris", "7"), deleted=False)  # arrives during the GET
    cache.read("Service", "ns", "iris", None, owner=("ns", "iris"))  # a stale 404
    known, body = cache.lookup("Service", "ns", "iris")
    assert known
    assert body is not None
    cache.reading("Service", "ns", "iris-canary")
    cache.read("Service", "ns", "iris-canary", None, owner=("ns", "iris"), failed=True)
    assert cache.lookup("Service", "ns", "iris-canary") == (False, None)  # no answer, no entry


def test_the_object_itself_is_read_through_the_cache_and_never_left_behind() -> None:
    fake, cache = FakeCluster(), WatchCache()
    fake.objects[("ModelDeployment", "ns", "iris")] = obj("ModelDeployment", "iris", "4")
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    assert cluster.get("ModelDeployment", "ns", "iris") is not None  # not seen yet: a GET
    assert cluster.get("ModelDeployment", "ns", "iris") is not None
    assert fake.calls == ["get ModelDeployment/iris"]
    del fake.objects[("ModelDeployment", "ns", "iris")]
    thorough = CachedCluster(fake, cache, ("ns", "iris"), thorough=True)
    assert thorough.get("ModelDeployment", "ns", "iris") is None  # a 404: nothing kept for it
    assert len(cache) == 0
    # A GET that a deletion overtook keeps nothing either.
    cache.seen("ModelDeployment", obj("ModelDeployment", "iris", "5"), deleted=False)
    cache.reading("ModelDeployment", "ns", "iris")
    cache.forget("ns", "iris")
    cache.read("ModelDeployment", "ns", "iris", obj("ModelDeployment", "iris", "5"), owner=None)
    assert len(cache) == 0


def test_a_delete_event_of_an_older_incarnation_keeps_the_new_one() -> None:
    cache = known_cache()
    cache.stored("Deployment", "ns", "d", obj("Deployment", "d", "30", uid="new"), owner=None)
    cache.seen("Deployment", obj("Deployment", "d", "25", uid="old"), deleted=True)
    assert cache.lookup("Deployment", "ns", "d")[1] is not None
    cache.seen("Deployment", obj("Deployment", "d", "31", uid="new"), deleted=True)
    assert cache.lookup("Deployment", "ns", "d") == (False, None)  # unknown: asked next time


def test_thorough_runs_read_for_real_and_refresh_the_cache() -> None:
    fake, cache = FakeCluster(), known_cache()
    cache.seen("Service", obj("Service", "iris", "3"), deleted=False)  # a ghost: deleted in a gap
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=True)
    assert cluster.get("Service", "ns", "iris") is None
    assert fake.calls == ["get Service/iris"]
    assert cache.lookup("Service", "ns", "iris") == (True, None)


def test_pods_are_trusted_after_one_list_and_kept_by_the_watch() -> None:
    fake, cache = FakeCluster(), known_cache()
    cache.seen("Pod", pod("early", "1"), deleted=False)  # seen while the watch was listing
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    fake.pods = [pod("early", "1"), pod("listed-only", "2")]
    assert {p["metadata"]["name"] for p in cluster.list_pods("ns", SELECTOR)} == {
        "early",
        "listed-only",
    }
    cache.seen("Pod", pod("new", "3"), deleted=False)
    cache.seen("Pod", pod("early", "4"), deleted=True)
    cache.seen("Pod", pod("other-object", "5", owner="wine"), deleted=False)
    assert {p["metadata"]["name"] for p in cluster.list_pods("ns", SELECTOR)} == {
        "listed-only",
        "new",
    }
    assert fake.calls == [f"list pods {SELECTOR}"]


def test_a_list_racing_a_pod_event_is_used_once_but_not_trusted() -> None:
    cache = known_cache()
    cache.listing("ns", SELECTOR)
    cache.seen("Pod", pod("p", "1"), deleted=True)  # an event for the object during the LIST
    cache.listed("ns", SELECTOR, [pod("p", "0")])
    assert cache.pods("ns", SELECTOR) is None  # still unknown: the next run lists again
    cache.listing("ns", SELECTOR)
    cache.listed("ns", SELECTOR, None)  # a LIST that failed teaches nothing either
    assert cache.pods("ns", SELECTOR) is None
    cache.listing("ns", SELECTOR)
    cache.listed("ns", SELECTOR, [])
    assert cache.pods("ns", SELECTOR) == []


def test_nothing_is_kept_for_an_object_that_is_gone() -> None:
    """A run that outlived its object, or the pod events of its garbage collection, must not
    leave entries behind that nothing would ever drop."""
    fake, cache = FakeCluster(), known_cache()
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    fake.pods = [pod("p", "1")]
    cluster.list_pods("ns", SELECTOR)
    cache.forget("ns", "iris")
    assert cluster.get("Service", "ns", "iris-stable") is None  # a 404 after the deletion
    cache.seen("Pod", pod("p", "2"), deleted=False)  # its pods terminating afterwards
    cache.seen("Pod", pod("p", "3"), deleted=True)
    cluster.list_pods("ns", SELECTOR)
    assert len(cache) == 0


def test_writes_go_through_and_their_answers_are_kept() -> None:
    fake, cache = FakeCluster(), known_cache()
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    cluster.apply(
        {
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "iris-stable", "namespace": "ns"},
            "spec": {"maxUnavailable": 1},
        }
    )
    got = cluster.get("PodDisruptionBudget", "ns", "iris-stable")
    assert got is not None
    assert got["spec"] == {"maxUnavailable": 1}
    cluster.delete("PodDisruptionBudget", "ns", "iris-stable", None)
    assert cluster.get("PodDisruptionBudget", "ns", "iris-stable") is None
    assert fake.calls == [
        "apply PodDisruptionBudget/iris-stable",
        "delete PodDisruptionBudget/iris-stable",
    ]


def test_secrets_are_never_kept() -> None:
    fake, cache = FakeCluster(), known_cache()
    fake.objects[("Secret", "ns", "modeldeploy-mlflow")] = obj("Secret", "modeldeploy-mlflow", "1")
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    cluster.get("Secret", "ns", "modeldeploy-mlflow")
    cluster.get("Secret", "ns", "modeldeploy-mlflow")
    assert fake.calls == ["get Secret/modeldeploy-mlflow"] * 2
    assert len(cache) == 1  # the ModelDeployment only


def test_everything_recorded_for_an_object_goes_with_it() -> None:
    fake, cache = FakeCluster(), known_cache()
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    for name in ("iris", "iris-stable", "iris-canary"):
        cluster.get("Service", "ns", name)  # absent: recorded as such for this object
    fake.pods = [pod("p", "1")]
    cluster.list_pods("ns", SELECTOR)
    cache.seen("ModelDeployment", obj("ModelDeployment", "iris", "1"), deleted=False)
    cache.seen("ModelDeployment", obj("ModelDeployment", "wine", "1"), deleted=False)
    cache.stored("Service", "ns", "wine", None, owner=("ns", "wine"))
    cache.forget("ns", "iris")
    assert len(cache) == 2  # only the other object and its entry
    assert cache.pods("ns", SELECTOR) is None


def test_pods_are_kept_and_returned_as_metadata_and_status_whichever_way_they_were_read() -> None:
    fake, cache = FakeCluster(), known_cache()
    full = pod("p", "1")
    full["spec"] = {"containers": [{"name": "server", "image": "s:1"}]}
    full["status"] = {"podIP": "10.0.0.1"}
    fake.pods = [full]
    cluster = CachedCluster(fake, cache, ("ns", "iris"), thorough=False)
    listed = cluster.list_pods("ns", SELECTOR)  # a miss: the API server's answer, slimmed
    cached = cluster.list_pods("ns", SELECTOR)  # served from memory
    assert fake.calls == [f"list pods {SELECTOR}"]
    assert listed == cached
    assert set(listed[0]) == {"metadata", "status"}
    assert "managedFields" not in listed[0]["metadata"]
    assert listed[0]["status"] == {"podIP": "10.0.0.1"}
    watched = {**pod("p", "2"), "spec": {"nodeName": "n"}, "status": {"podIP": "10.0.0.2"}}
    cache.seen("Pod", watched, deleted=False)  # the watch's copy is kept the same way
    assert cluster.list_pods("ns", SELECTOR) == [
        {"metadata": {**listed[0]["metadata"], "resourceVersion": "2"}, "status": watched["status"]}
    ]


def test_every_reader_gets_its_own_copy() -> None:
    """Bodies are kept as JSON text: a reconcile that edits what it read (or the watch's dict,
    changed after the event) cannot change what the next run reads."""
    cache = known_cache()
    watched = obj("Deployment", "iris", "3", spec={"replicas": 1})
    cache.seen("Deployment", watched, deleted=False)
    watched["spec"]["replicas"] = 5  # kopf's dict, changed after the event was delivered
    cluster = CachedCluster(FakeCluster(), cache, ("ns", "iris"), thorough=False)
    first = cluster.get("Deployment", "ns", "iris")
    assert first is not None
    assert first["spec"] == {"replicas": 1}
    first["spec"]["replicas"] = 7
    assert cluster.get("Deployment", "ns", "iris") == {**first, "spec": {"replicas": 1}}
    cache.listing("ns", SELECTOR)
    cache.listed("ns", SELECTOR, [{"metadata": pod("p", "1")["metadata"], "status": {}}])
    cluster.list_pods("ns", SELECTOR)[0]["status"]["podIP"] = "10.9.9.9"
    assert cluster.list_pods("ns", SELECTOR)[0]["status"] == {}
    assert cache.kept_pods()[("ns", "iris")][0]["status"] == {}
