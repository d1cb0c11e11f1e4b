"""The FastAPI app: health, readiness, metadata, metrics and the OpenAPI docs, inside ServingApp.

These routes are not the hot path, so FastAPI's conveniences (routing, exception handlers,
``/docs``) are worth their cost here. Inference is not among them: asgi.ServingApp answers it
before a request reaches FastAPI, and this module only documents those routes, from the same
``INFERENCE_ROUTES`` table the ServingApp matches, so the docs and the served paths can't differ.
Routes return pre-encoded JSON; DataPlane errors become ``{"error": ...}`` through the same
``error_reply`` the inference path uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from modeldeploy_server import __version__, schemas
from modeldeploy_server.asgi import INFERENCE_ROUTES, ServingApp, error_body, error_reply
from modeldeploy_server.auth import Reviewer
from modeldeploy_server.codec import encode_json
from modeldeploy_server.dataplane import DataPlane
from modeldeploy_server.errors import ServerError, UnsupportedEndpointError
from modeldeploy_server.metrics import CONTENT_TYPE

JSON = "application/json"


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(encode_json(obj), status_code=status, media_type=JSON)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": schemas.ErrorBody} for c in codes}


def _build_routers(dp: DataPlane) -> list[APIRouter]:
    health = APIRouter(tags=["health"])
    v1 = APIRouter(tags=["KServe V1"])
    v2 = APIRouter(tags=["Open Inference Protocol V2"])

    @health.get("/", include_in_schema=False)
    async def root() -> Response:
        return json_response({"status": "alive"})

    @health.get("/healthz", summary="Liveness: 200 as soon as the process listens")
    async def healthz() -> Response:
        return json_response({"status": "alive", "phase": dp.phase})

    @health.get(
        "/ready", summary="Readiness: 503 until the model is in memory", responses=_responses(503)
    )
    async def ready() -> Response:
        if dp.ready:
            return json_response({"ready": True})
        return json_response({"error": dp.not_ready_message()}, 503)

    @health.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(dp.metrics.exposition(), media_type=CONTENT_TYPE)

    # ---- KServe V1 -------------------------------------------------------------------------

    @v1.get("/v1/models", response_model=schemas.V1ModelsResponse)
    async def v1_models() -> Response:
        return json_response(dp.v1_models())

    @v1.get(
        "/v1/models/{name}",
        response_model=schemas.V1ModelResponse,
        responses=_responses(404, 503),
    )
    async def v1_model(name: str) -> Response:
        return json_response(dp.v1_model(name))

    @v1.post("/v1/models/{name}:explain", responses=_responses(501), include_in_schema=False)
    async def v1_explain(name: str) -> Response:
        raise UnsupportedEndpointError("this server has no explainer; use :predict")

    # ---- Open Inference Protocol V2 --------------------------------------------------------

    @v2.get("/v2/health/live", response_model=schemas.V2Live)
    async def v2_live() -> Response:
        return json_response({"live": True})

    @v2.get("/v2/health/ready", response_model=schemas.V2Ready, responses=_responses(503))
    async def v2_ready() -> Response:
        if dp.ready:
            return json_response({"ready": True})
        return json_response({"error": dp.not_ready_message()}, 503)

    @v2.get("/v2", response_model=schemas.V2ServerMetadata)
    async def v2_server() -> Response:
        return json_response(dp.v2_server_metadata())

    @v2.get("/v2/models", response_model=schemas.V1ModelsResponse, include_in_schema=False)
    async def v2_models() -> Response:
        return json_response(dp.v1_models())

    # The version is a path segment or absent, as in the OIP: one handler per route, since a
    # handler with an optional `version` would also take (and document) a `?version=` query.
    @v2.get(
        "/v2/models/{name}",
        response_model=schemas.V2ModelMetadata,
        responses=_responses(404, 503),
    )
    async def v2_model(name: str) -> Response:
        return json_response(dp.v2_model_metadata(name))

    @v2.get(
        "/v2/models/{name}/versions/{version}",
        response_model=schemas.V2ModelMetadata,
        responses=_responses(404, 503),
    )
    async def v2_model_version(name: str, version: str) -> Response:
        return json_response(dp.v2_model_metadata(name, version))

    @v2.get(
        "/v2/models/{name}/ready",
        response_model=schemas.V2ModelReady,
        responses=_responses(404, 503),
    )
    async def v2_model_ready(name: str) -> Response:
        return json_response(dp.v2_model_ready(name))

    @v2.get(
        "/v2/models/{name}/versions/{version}/ready",
        response_model=schemas.V2ModelReady,
        responses=_responses(404, 503),
    )
    async def v2_model_version_ready(name: str, version: str) -> Response:
        return json_response(dp.v2_model_ready(name, version))

    return [health, v1, v2]


def _install_error_handlers(app: FastAPI, dp: DataPlane) -> None:
    errors = dp.metrics.errors

    async def dataplane_error(_: Request, exc: Exception) -> Response:
        status, body = error_reply(errors, exc)
        return Response(body, status_code=status, media_type=JSON)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        errors.labels("not_found" if exc.status_code == 404 else f"http_{exc.status_code}").inc()
        return Response(
            error_body(str(exc.detail)),
            status_code=exc.status_code,
            media_type=JSON,
            headers=exc.headers,
        )

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors.labels("invalid_request").inc()
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return Response(error_body("; ".join(parts)), status_code=422, media_type=JSON)

    app.add_exception_handler(ServerError, dataplane_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, dataplane_error)  # error_reply answers 500


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's own routes plus the inference routes ServingApp serves, and their schemas."""
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    paths = spec.setdefault("paths", {})
    for route in INFERENCE_ROUTES:
        paths[route.template] = schemas.inference_path(route.template, route.protocol, route.params)
    spec.setdefault("components", {}).setdefault("schemas", {}).update(schemas.component_schemas())
    return spec


class Listener(Protocol):
    """Another port the server answers on, over the same DataPlane (grpc_service.GrpcServer)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(
    dataplane: DataPlane,
    *,
    max_body_bytes: int = 10 * 1024 * 1024,
    on_startup: Callable[[], Coroutine[Any, Any, None]] | None = None,
    auth: Reviewer | None = None,
    listeners: Sequence[Listener] = (),
) -> ServingApp:
    """Build the app uvicorn runs: ServingApp around FastAPI (its ``.app``).

    ``on_startup`` runs as a background task so the port opens at once. ``auth`` (spec.auth)
    is checked by ServingApp for every request but the open ones, and closed at shutdown.
    ``listeners`` start before it, on the same event loop: uvicorn opens its port only after the
    lifespan's startup, so one that can't bind (a StartupError) fails the start before anything
    listens. At shutdown they drain before the batcher stops, since their calls still need it.
    """

    async def close() -> None:
        await dataplane.stop()
        if auth is not None:
            await auth.close()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:  # unwinds last in, first out
            stack.push_async_callback(close)
            for listener in listeners:
                await listener.start()
                stack.push_async_callback(listener.stop)
            if on_startup is not None:
                task = asyncio.get_running_loop().create_task(on_startup())
                stack.callback(task.cancel)  # a no-op once it is done
            yield

    app = FastAPI(
        title="modeldeploy model server",
        version=__version__,
        description=(
            f"Serves the scikit-learn model **{dataplane.info.name}** over KServe V1 and the "
            "Open Inference Protocol (V2). Every response carries `X-Modeldeploy-Track`."
        ),
        lifespan=lifespan,
    )
    for router in _build_routers(dataplane):
        app.include_router(router)
    _install_error_handlers(app, dataplane)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # FastAPI sits inside ServingApp, not the other way round: FastAPI's own __call__ (its
    # telemetry check alone costs ~50 µs) and Starlette's ServerErrorMiddleware stay off the
    # inference path.
    return ServingApp(app, dataplane=dataplane, max_body_bytes=max_body_bytes, auth=auth)
