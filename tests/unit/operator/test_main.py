"""The kopf wiring: which handlers exist, how kopf is configured, and the CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from modeldeploy_operator.__main__ import parse_args
from modeldeploy_operator.errors import ApiError
from modeldeploy_operator.main import Runtime, _owner_name, configure_kopf, make_registry
from modeldeploy_operator.settings import OperatorSettings


class NoKube:
    """Runtime needs a Kube; these tests never reach it."""


def registry() -> kopf.OperatorRegistry:
    return make_registry(Runtime(settings=OperatorSettings(), kube=NoKube()))  # type: ignore[arg-type]


def test_handlers_cover_every_entry_point() -> None:
    reg = registry()
    changing = reg._changing.get_all_handlers()
    assert {h.id for h in changing} == {"reconcile"}
    assert len(changing) == 3  # create, update, resume
    spawning = reg._spawning.get_all_handlers()
    assert [h.id for h in spawning] == ["drift"]
    watched = {
        h.selector.plural or h.selector.any_name  # type: ignore[union-attr]
        for h in reg._watching.get_all_handlers()
    }
    assert watched == {"deployments", "services", "pods"}
    activities = {h.activity for h in reg._activities.get_all_handlers()}
    assert "authentication" in {str(a) for a in activities}  # an explicit registry needs a login


def test_kopf_settings_use_our_prefix_and_no_finalizer_handlers() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorSettings(watch_server_timeout=123, watch_client_timeout=150))
    assert settings.persistence.progress_storage.prefix == "modeldeploy.io"  # type: ignore[attr-defined]
    assert settings.persistence.diffbase_storage.prefix == "modeldeploy.io"  # type: ignore[attr-defined]
    assert settings.watching.server_timeout == 123
    assert isinstance(settings.watching.server_timeout, int)
    assert settings.watching.client_timeout == 150
    assert settings.peering.standalone is True
    # no delete handlers: kopf adds a finalizer only for those
    assert registry()._changing.get_all_handlers()
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

    def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return None  # deleted: nothing to reconcile


def test_child_event_bursts_coalesce_into_one_queued_run() -> None:
    kube = CountingKube()
    rt = Runtime(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]

    async def burst() -> None:
        lock = rt.locks.setdefault(("ns", "iris"), asyncio.Lock())
        async with lock:  # a reconcile is running: events queue behind it
            tasks = [asyncio.create_task(rt.run("ns", "iris", coalesce=True)) for _ in range(20)]
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    asyncio.run(burst())
    assert kube.gets == 1


def test_api_errors_become_temporary_errors_with_a_delay() -> None:
    from modeldeploy_operator.main import _temporary

    assert _temporary(ApiError(409, "Conflict", "x")).delay == 2
    assert _temporary(ApiError(503, "ServiceUnavailable", "x")).delay == 10
    assert _temporary(ApiError(403, "Forbidden", "x")).delay == 60
