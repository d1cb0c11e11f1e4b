"""Process entry point: ``modeldeploy-server`` and ``python -m modeldeploy_server``.

Wires settings, logging, the DataPlane, the app and uvicorn together, and turns a failed start
into a non-zero exit status (after bootstrap has written the termination log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modeldeploy_server.config import Settings, load_settings

if TYPE_CHECKING:
    from modeldeploy_server.grpc_service import GrpcServer

# How long a SIGTERM lets requests in flight finish, REST (uvicorn) and gRPC alike.
GRACEFUL_SHUTDOWN_S = 20


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # fsspec/botocore chatter at INFO would bury our own progress lines.
    for noisy in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "google"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _server_class() -> Any:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop would end with
        exit status 143 and Kubernetes would record the container as failed; exit 0 instead.

        ``drain_first`` (the gRPC server) starts draining the moment uvicorn starts its own
        shutdown, so both drain at once instead of one after the other; the app's lifespan then
        waits for it before the batcher stops.
        """

        def __init__(self, config: uvicorn.Config, drain_first: Sequence[GrpcServer] = ()):
            super().__init__(config)
            self.drain_first = drain_first

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for listener in self.drain_first:
                listener.begin_stop()
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):
                        captured.clear()

    return GracefulServer


def run(settings: Settings) -> int:
    import uvicorn

    from modeldeploy_server.app import create_app
    from modeldeploy_server.bootstrap import bring_up, write_termination_log
    from modeldeploy_server.dataplane import DataPlane, ServingInfo
    from modeldeploy_server.metrics import Metrics
    from modeldeploy_server.storage.uri import redact_uri

    log = logging.getLogger("modeldeploy_server")
    dataplane = DataPlane(
        ServingInfo(
            name=settings.model_name,
            version=settings.version,
            track=settings.track,
            storage_uri=redact_uri(settings.storage_uri),
            sha256=settings.model_sha256,
            predict_proba_v1=settings.predict_proba,
        ),
        Metrics(),
        max_batch_rows=settings.max_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000,
    )
    reviewer = None
    if settings.auth_enabled:
        from modeldeploy_server.auth import Reviewer, config_from_settings
        from modeldeploy_server.errors import StartupError

        try:
            auth_config = config_from_settings(settings)
            reviewer = Reviewer(auth_config, dataplane.metrics)
        except StartupError as exc:  # misconfigured, like a bad flag: exit 2, say what to fix
            write_termination_log(settings.termination_log, exc.message)
            log.error("%s", exc.message)
            return 2
        log.info(
            "access control on: callers need create on modeldeployments/predict of %s, "
            "reviewed by %s, decisions cached %g s",
            auth_config.target,
            auth_config.api_server,
            auth_config.cache_seconds,
        )
    grpc_server: GrpcServer | None = None
    if settings.grpc_port:
        from modeldeploy_server.grpc_service import GrpcServer

        grpc_server = GrpcServer(
            dataplane,
            host=settings.host,
            port=settings.grpc_port,
            auth=reviewer,
            max_message_bytes=settings.max_body_bytes,
            grace_s=GRACEFUL_SHUTDOWN_S,
        )
    listeners = [grpc_server] if grpc_server is not None else []
    exit_code = 0
    server: uvicorn.Server | None = None

    def on_fatal(_: str) -> None:
        nonlocal exit_code
        exit_code = 1
        if server is not None:
            server.should_exit = True

    app = create_app(
        dataplane,
        max_body_bytes=settings.max_body_bytes,
        on_startup=lambda: bring_up(settings, dataplane, on_fatal, env=dict(os.environ)),
        auth=reviewer,
        listeners=listeners,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",  # uvloop when installed (it is, via uvicorn[standard])
        http="auto",  # httptools likewise
        access_log=settings.access_log,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _server_class()(config, listeners)
    log.info(
        "modeldeploy-server starting on %s:%d%s for model %s (track %s)",
        settings.host,
        settings.port,
        f", gRPC on port {settings.grpc_port}" if grpc_server is not None else "",
        settings.model_name,
        settings.track,
    )
    try:
        server.run()
    except SystemExit as exc:
        # uvicorn exits this way when the lifespan's startup fails (the gRPC port, bound there,
        # could not be, and said so) or it cannot bind its own port afterwards
        if grpc_server is not None and grpc_server.failure is not None:
            message = grpc_server.failure
        else:
            message = f"could not listen on {settings.host}:{settings.port}; is the port in use?"
            log.error(message)
        write_termination_log(settings.termination_log, message)
        return int(exc.code) if isinstance(exc.code, int) and exc.code else 1
    if exit_code == 0 and not server.started:
        return 1
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        # a check across settings (GRPC_PORT vs PORT) has no location: its message alone
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        message = f"invalid server configuration: {problems}"
        print(message, file=sys.stderr)
        from pathlib import Path

        from modeldeploy_server.bootstrap import write_termination_log

        write_termination_log(
            Path(os.environ.get("TERMINATION_LOG", "/dev/termination-log")), message
        )
        return 2
    _configure_logging(settings.log_level)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
