"""The HTTP transport: FastAPI routers that turn requests into DataPlane calls and back.

Routes read raw body bytes and return pre-encoded JSON, so FastAPI does routing and OpenAPI docs
but never validates bodies on the hot path. Cross-cutting concerns live in one pure-ASGI
middleware (cheaper than BaseHTTPMiddleware): the X-Modeldeploy-Track header on every response,
the body-size limit, and request metrics labelled by route template.

The two inference routes (V1 ``:predict``, V2 ``/infer``) are also served straight from that
middleware, which wraps the FastAPI app and matches them with the routes' own compiled patterns:
FastAPI's route matching, dependency solving and exception middleware cost about
0.4 ms a request here, more than a small model's predict. The FastAPI routes stay registered,
with the same behaviour, for the OpenAPI docs and for ``create_app(fast_path=False)``; the unit
tests run every case through both.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modeldeploy_server import __version__, schemas
from modeldeploy_server.batcher import predict_seconds
from modeldeploy_server.codec import encode_json
from modeldeploy_server.dataplane import DataPlane
from modeldeploy_server.errors import (
    InferenceError,
    PayloadTooLargeError,
    ServerError,
    UnsupportedEndpointError,
)
from modeldeploy_server.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

JSON = "application/json"
TRACK_HEADER = b"x-modeldeploy-track"
VERSION_HEADER = b"x-modeldeploy-model-version"
TIMING_HEADER = b"server-timing"


def _timing_header() -> list[tuple[bytes, bytes]]:
    """W3C Server-Timing with the model call's share, when this request reached the model."""
    seconds = predict_seconds.get()
    if seconds is None:
        return []
    return [(TIMING_HEADER, f"predict;dur={seconds * 1000:.3f}".encode())]


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(encode_json(obj), status_code=status, media_type=JSON)


def _error_body(message: str) -> bytes:
    return encode_json({"error": message})


def _inference_body(result: dict[str, Any]) -> bytes:
    """A predict/infer answer as JSON. Output JSON can't hold is the model's doing: say so."""
    try:
        return encode_json(result)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InferenceError(
            f"the model's output cannot be written as JSON ({exc}); its predict must return "
            "numbers, strings or booleans"
        ) from None


def _error_reply(errors: Counter, exc: Exception) -> tuple[int, bytes]:
    """Status and body for an exception out of the DataPlane, counted in ``errors`` by reason.

    Shared by the FastAPI exception handlers and the inference fast path, so both answer alike.
    """
    if isinstance(exc, ServerError):
        errors.labels(exc.reason).inc()
        return exc.status, _error_body(exc.message)
    errors.labels("internal").inc()
    log.error("unhandled error", exc_info=exc)
    return 500, _error_body(f"internal error: {type(exc).__name__}")


# The FastAPI endpoints the middleware serves itself, by function name, with their protocol.
_FAST_ENDPOINTS = {"v1_predict": "v1", "v2_infer": "v2"}
# (the route's own compiled path regex, its template as the metrics label, protocol)
FastRoute = tuple[re.Pattern[str], str, str]


def _fast_routes(routers: list[APIRouter]) -> tuple[FastRoute, ...]:
    """The inference routes as the routers declare them (included without a prefix), so both
    paths match the same URLs; FastAPI >= 0.165 keeps included routers unflattened in app.routes.
    """
    return tuple(
        (route.path_regex, route.path, _FAST_ENDPOINTS[route.name])
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.name in _FAST_ENDPOINTS
    )


class _ClientGoneError(Exception):
    """The client went away before its body arrived; there is no one to answer."""


def _protocol(path: str) -> str:
    if path.startswith("/v1/"):
        return "v1"
    if path.startswith("/v2"):
        return "v2"
    return "http"


class ServingMiddleware:
    """Adds the track header, enforces the body limit and records request metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        dataplane: DataPlane,
        max_body_bytes: int,
        fast_routes: tuple[FastRoute, ...] = (),
    ) -> None:
        self.app = app
        self.dp = dataplane
        self.max_body = max_body_bytes
        self.fast_routes = fast_routes
        self.extra_headers = [
            (TRACK_HEADER, dataplane.info.track.encode("latin-1")),
            (VERSION_HEADER, dataplane.info.version.encode("latin-1")),
        ]
        # (endpoint, protocol, status) -> bound metric children; labels() costs ~10 µs a call.
        # Bounded: endpoints are route templates ("unmatched" otherwise), statuses a few codes.
        self._observers: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _record(self, endpoint: str, protocol: str, status: int, seconds: float) -> None:
        key = (endpoint, protocol, status)
        children = self._observers.get(key)
        if children is None:
            m = self.dp.metrics
            children = (
                m.requests.labels(endpoint, protocol, str(status)),
                m.latency.labels(endpoint, protocol),
            )
            self._observers[key] = children
        children[0].inc()
        children[1].observe(seconds)

    async def _reject_413(self, send: Send, length: int) -> int:
        body = _error_body(
            f"request body is {length} bytes, over the {self.max_body}-byte limit "
            "(MAX_BODY_BYTES); send fewer rows per request"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *self.extra_headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self.dp.metrics.errors.labels(PayloadTooLargeError.reason).inc()
        return 413

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        predict_seconds.set(None)  # a server may run several requests in one context
        status = 500
        extra = self.extra_headers
        limit = self.max_body

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra, *_timing_header()]
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            # Catches chunked bodies that carry no Content-Length.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(
                        f"request body is over the {limit}-byte limit (MAX_BODY_BYTES); "
                        "send fewer rows per request"
                    )
            return message

        endpoint = protocol = ""
        try:
            for key, value in scope["headers"]:
                if key == b"content-length":
                    length = int(value) if value.isdigit() else 0
                    if length > limit:
                        status = await self._reject_413(send, length)
                        return
                    break
            if scope["method"] == "POST":
                for pattern, template, proto in self.fast_routes:
                    match = pattern.match(scope["path"])  # anchored, as Starlette uses it
                    if match is not None:
                        endpoint, protocol = template, proto
                        status = await self._serve_inference(
                            proto, match.groupdict(), limited_receive, send
                        )
                        return
            await self.app(scope, limited_receive, send_with_headers)
        finally:
            if not endpoint:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or "unmatched"
                protocol = _protocol(scope["path"])
            self._record(endpoint, protocol, status, time.perf_counter() - started)

    async def _serve_inference(
        self, protocol: str, params: dict[str, str], receive: Receive, send: Send
    ) -> int:
        """One V1 predict or V2 infer request, answered exactly as the FastAPI route would."""
        try:
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGoneError
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            if protocol == "v1":
                result = await self.dp.v1_predict(params["name"], body)
            else:
                result = await self.dp.v2_infer(params["name"], params.get("version"), body)
            status, payload = 200, _inference_body(result)
        except _ClientGoneError:
            return 499  # nginx's "client closed request": counted, never sent
        except Exception as exc:
            status, payload = _error_reply(self.dp.metrics.errors, exc)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *self.extra_headers,
                    *_timing_header(),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return status


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

    @v1.post(
        "/v1/models/{name}:predict",
        response_model=schemas.V1PredictResponse,
        responses=_responses(400, 404, 413, 503),
        openapi_extra=schemas.request_body(schemas.V1PredictRequest),
    )
    async def v1_predict(name: str, request: Request) -> Response:
        return Response(
            _inference_body(await dp.v1_predict(name, await request.body())), media_type=JSON
        )

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

    @v2.get(
        "/v2/models/{name}",
        response_model=schemas.V2ModelMetadata,
        responses=_responses(404, 503),
    )
    @v2.get(
        "/v2/models/{name}/versions/{version}",
        response_model=schemas.V2ModelMetadata,
        responses=_responses(404, 503),
    )
    async def v2_model(name: str, version: str | None = None) -> Response:
        return json_response(dp.v2_model_metadata(name, version))

    @v2.get(
        "/v2/models/{name}/ready",
        response_model=schemas.V2ModelReady,
        responses=_responses(404, 503),
    )
    @v2.get(
        "/v2/models/{name}/versions/{version}/ready",
        response_model=schemas.V2ModelReady,
        responses=_responses(404, 503),
    )
    async def v2_model_ready(name: str, version: str | None = None) -> Response:
        return json_response(dp.v2_model_ready(name, version))

    infer_doc: dict[str, Any] = {
        "response_model": schemas.V2InferResponse,
        "responses": _responses(400, 404, 413, 503),
        "openapi_extra": schemas.request_body(schemas.V2InferRequest),
    }

    @v2.post("/v2/models/{name}/infer", **infer_doc)
    @v2.post("/v2/models/{name}/versions/{version}/infer", **infer_doc)
    async def v2_infer(name: str, request: Request, version: str | None = None) -> Response:
        return Response(
            _inference_body(await dp.v2_infer(name, version, await request.body())), media_type=JSON
        )

    return [health, v1, v2]


def _install_error_handlers(app: FastAPI, dp: DataPlane) -> None:
    errors = dp.metrics.errors

    async def dataplane_error(_: Request, exc: Exception) -> Response:
        status, body = _error_reply(errors, exc)
        return Response(body, status_code=status, media_type=JSON)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        errors.labels("not_found" if exc.status_code == 404 else f"http_{exc.status_code}").inc()
        return Response(
            _error_body(str(exc.detail)),
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
        return Response(_error_body("; ".join(parts)), status_code=422, media_type=JSON)

    app.add_exception_handler(ServerError, dataplane_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, dataplane_error)  # _error_reply answers 500


def create_app(
    dataplane: DataPlane,
    *,
    max_body_bytes: int = 10 * 1024 * 1024,
    on_startup: Callable[[], Coroutine[Any, Any, None]] | None = None,
    fast_path: bool = True,
) -> ServingMiddleware:
    """Build the app: ServingMiddleware around FastAPI (its ``.app``).

    ``on_startup`` runs as a background task so the port opens at once.

    ``fast_path=False`` leaves inference to the FastAPI routes (slower, same answers).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import asyncio

        task = asyncio.get_running_loop().create_task(on_startup()) if on_startup else None
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            await dataplane.stop()

    app = FastAPI(
        title="modeldeploy model server",
        version=__version__,
        description=(
            f"Serves the scikit-learn model **{dataplane.info.name}** over KServe V1 and the "
            "Open Inference Protocol (V2). Every response carries `X-Modeldeploy-Track`."
        ),
        lifespan=lifespan,
    )
    routers = _build_routers(dataplane)
    for router in routers:
        app.include_router(router)
    _install_error_handlers(app, dataplane)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            spec.setdefault("components", {}).setdefault("schemas", {}).update(
                schemas.component_schemas()
            )
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Outside FastAPI, not in its middleware stack: FastAPI's own __call__ (its telemetry check
    # alone costs ~50 µs) and Starlette's ServerErrorMiddleware stay off the inference fast path.
    return ServingMiddleware(
        app,
        dataplane=dataplane,
        max_body_bytes=max_body_bytes,
        fast_routes=_fast_routes(routers) if fast_path else (),
    )
