"""Bring the model up behind a listening server: fetch, verify, load, warm up, go ready.

It runs as a background task started by the app's lifespan, with the blocking work in a daemon
thread, so ``/healthz`` answers during a long download (startupProbe) and SIGTERM is never held up
by it. On failure it writes one sentence to the termination log and asks the process to exit
non-zero, which is how Kubernetes learns *why* the pod can't serve.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from modeldeploy_server.config import Settings
from modeldeploy_server.dataplane import DataPlane
from modeldeploy_server.errors import StartupError
from modeldeploy_server.profile import Profile, ProfileError, parse_profile
from modeldeploy_server.runtime.base import Runtime
from modeldeploy_server.runtime.mlflow import load_mlflow_runtime
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime
from modeldeploy_server.storage.fetch import Artifact, fetch
from modeldeploy_server.storage.sidecar import SidecarError, find_beside, read_file
from modeldeploy_server.storage.uri import redact_uri

log = logging.getLogger(__name__)
T = TypeVar("T")
_TERMINATION_MESSAGE_LIMIT = 4096  # Kubernetes keeps at most 4096 bytes per container


def write_termination_log(path: Path, message: str) -> None:
    """Best effort: outside Kubernetes the file may not exist or be writable."""
    data = message.strip().encode("utf-8")[:_TERMINATION_MESSAGE_LIMIT]
    try:
        path.write_bytes(data)
    except OSError as exc:
        log.warning("could not write termination log %s: %s", path, exc)


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    # Not run_in_executor: executor threads are joined at exit, and a hung download must not
    # keep a terminating pod alive.
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if fut.done():  # the awaiting task was cancelled (shutdown)
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)  # type: ignore[arg-type]

    def runner() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=runner, name="model-bootstrap", daemon=True).start()
    return await fut


def load_runtime(artifact: Artifact, settings: Settings) -> Runtime:
    """Load the artifact into the runtime for its format, warmed up.

    The one place a format picks its runtime: an MLflow directory (storage found its MLmodel,
    under format mlflow or sklearn) gets the MLflow runtime, a model file the scikit-learn one;
    how either predicts (the forest fast path or the estimator) is decided inside it, once.
    """
    runtime: Runtime
    if artifact.mlmodel is not None:
        runtime = load_mlflow_runtime(
            artifact.mlmodel,
            artifact.model_path,
            extra_trusted=settings.trusted_types,
            fast_forest=settings.fast_forest,
        )
    else:
        # A storageUri naming one model file (not the directory MLflow wrote) ends up here.
        if settings.model_format == "mlflow":
            raise StartupError(
                f"format is mlflow but {artifact.model_path.name} has no MLmodel beside it; "
                "point storageUri at the directory MLflow wrote",
                reason="wrong_format",
            )
        runtime = load_sklearn_runtime(
            artifact.model_path,
            settings.model_format,
            extra_trusted=settings.trusted_types,
            fast_forest=settings.fast_forest,
        )
    runtime.warm_up()
    return runtime


@dataclass(frozen=True, slots=True)
class Reference:
    """The reference profile drift is measured against, or why there is none."""

    profile: Profile | None
    source: str  # where it came from, for the metadata
    off_reason: str = "no reference profile"


def find_profile(settings: Settings, model_path: Path, env: dict[str, str] | None) -> Reference:
    """PROFILE_URI if set, else a profile beside the model. Never raises: a profile that can't
    be read or parsed turns drift tracking off, with the reason in the metadata and the log."""
    environ = dict(os.environ) if env is None else env
    uri = settings.profile_uri
    try:
        if uri:
            source, data = redact_uri(uri), read_file(uri, pvc_root=settings.pvc_root, env=environ)
        else:
            found = find_beside(
                settings.storage_uri, model_path, pvc_root=settings.pvc_root, env=environ
            )
            if found is None:
                return Reference(None, "")
            source, data = found
        name = PurePosixPath(source).name or source
        return Reference(parse_profile(data, name), source)
    except (SidecarError, ProfileError, StartupError) as exc:
        reason = exc.message if isinstance(exc, StartupError) else str(exc)
        log.warning("drift tracking off: %s", reason)
        return Reference(None, "", f"reference profile unusable: {reason}")


async def bring_up(
    settings: Settings,
    dataplane: DataPlane,
    on_fatal: Callable[[str], Any],
    env: dict[str, str] | None = None,
) -> None:
    """Fetch and load; on failure record why and call ``on_fatal(message)``."""
    m = dataplane.metrics
    try:
        dataplane.set_phase("downloading")
        started = time.perf_counter()
        artifact: Artifact = await _in_daemon_thread(
            lambda: fetch(
                settings.storage_uri,
                model_dir=settings.model_dir,
                pvc_root=settings.pvc_root,
                fmt=settings.model_format,
                sha256=settings.model_sha256,
                env=env,
                attempts=settings.download_attempts,
                backoff_s=settings.download_backoff_s,
            )
        )
        m.download_seconds.set(time.perf_counter() - started)
        m.download_bytes.set(artifact.size)
        log.info(
            "fetched %s (%d bytes, sha256 %s) in %.2fs",
            artifact.model_path.name,
            artifact.size,
            artifact.sha256,
            time.perf_counter() - started,
        )
        dataplane.set_phase("loading")
        runtime = await _in_daemon_thread(lambda: load_runtime(artifact, settings))
        ref = await _in_daemon_thread(lambda: find_profile(settings, artifact.model_path, env))
        await dataplane.set_ready(
            runtime,
            artifact.sha256,
            profile=ref.profile,
            profile_source=ref.source,
            drift_off_reason=ref.off_reason,
            drift_window_rows=settings.drift_window_rows,
        )
        log.info("drift tracking %s", dataplane.drift.describe() if dataplane.drift else "off")
        facts = runtime.info
        log.info(
            "model %s ready: %s, input %s, loaded in %.2fs, predicting through %s",
            settings.model_name,
            facts.model_class,
            " ".join(f"{t.name} {list(t.shape)}" for t in runtime.inputs),
            facts.load_seconds,
            facts.predict_path,
        )
    except asyncio.CancelledError:
        raise
    except StartupError as exc:
        _fail(exc.message, exc.reason, settings, dataplane, on_fatal)
    except Exception as exc:  # anything unforeseen still has to reach the pod status
        log.exception("unexpected failure while bringing the model up")
        _fail(
            f"the server could not start: {type(exc).__name__}: {exc}",
            "internal",
            settings,
            dataplane,
            on_fatal,
        )


def _fail(
    message: str,
    reason: str,
    settings: Settings,
    dataplane: DataPlane,
    on_fatal: Callable[[str], Any],
) -> None:
    log.error("cannot serve (%s): %s", reason, message)
    dataplane.metrics.errors.labels(f"startup_{reason}").inc()
    dataplane.set_failed(message)
    write_termination_log(settings.termination_log, message)
    on_fatal(message)
