"""The HTTP front door: one pure-ASGI app that serves inference itself and hands the rest on.

``ServingApp`` is what uvicorn runs. It answers the inference routes (V1 ``:predict``, V2
``/infer``) directly from ``INFERENCE_ROUTES``: read the body, decode it (codec.py), call the
DataPlane, encode, send. That is the only implementation of those routes: FastAPI's route
matching, dependency solving and exception middleware cost about 0.4 ms a request here, more than
a small model's predict, so FastAPI (app.py) serves only the health, metadata, metrics and docs
routes, and documents the inference routes from the same table. Around both, this module adds
what every response needs: the X-Modeldeploy-Track and model-version headers, the body-size
limit, and request metrics labelled by route template; inference answers also carry
``Server-Timing`` with the predict time their result brought back. With ``spec.auth`` on, every
request outside ``OPEN_PATHS`` passes ``auth.Reviewer.authorize`` here, once, before anything
else reads it: inference and FastAPI's routes alike, and any route added later (fail closed).

No web framework is imported here (import-linter): the hot path is plain ASGI.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter

from modeldeploy_server.auth import Decision, Reviewer
from modeldeploy_server.codec import decode_v1, decode_v2, encode_json, encode_v1, encode_v2
from modeldeploy_server.dataplane import DataPlane
from modeldeploy_server.errors import InvalidInputError, PayloadTooLargeError, ServerError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"
OCTETS = b"application/octet-stream"
HEADER_LENGTH = b"inference-header-content-length"
TRACK_HEADER = b"x-modeldeploy-track"
VERSION_HEADER = b"x-modeldeploy-model-version"
TIMING_HEADER = b"server-timing"


@dataclass(frozen=True, slots=True)
class InferenceRoute:
    """One inference route: its template (also the metrics label and the OpenAPI path)."""

    template: str
    protocol: Literal["v1", "v2"]
    pattern: re.Pattern[str]
    params: tuple[str, ...]


def _route(template: str, protocol: Literal["v1", "v2"]) -> InferenceRoute:
    # {param} matches one path segment, as Starlette's default convertor does for the other
    # routes, anchored at both ends.
    params = tuple(re.findall(r"\{(\w+)\}", template))
    regex = re.escape(template)
    for p in params:
        regex = regex.replace(re.escape(f"{{{p}}}"), f"(?P<{p}>[^/]+)")
    return InferenceRoute(template, protocol, re.compile(f"^{regex}$"), params)


INFERENCE_ROUTES: tuple[InferenceRoute, ...] = (
    _route("/v1/models/{name}:predict", "v1"),
    _route("/v2/models/{name}/infer", "v2"),
    _route("/v2/models/{name}/versions/{version}/infer", "v2"),
)


# What stays open when spec.auth is on: the kubelet's probes and Prometheus carry no token, and
# none of these says anything about the model beyond "up". `/` is KServe's liveness root, `/v2`
# the OIP server metadata (server name, version, extensions: the same for every model). The
# model's metadata and the OpenAPI document (/docs, /openapi.json, which describe this model by
# name) are protected like inference; so is every path not listed, including unknown ones.
OPEN_PATHS = frozenset(
    {"/healthz", "/ready", "/v2/health/live", "/v2/health/ready", "/metrics", "/", "/v2"}
)


def error_body(message: str) -> bytes:
    return encode_json({"error": message})


def error_reply(errors: Counter, exc: Exception) -> tuple[int, bytes]:
    """Status and body for an exception out of the DataPlane, counted in ``errors`` by reason.

    Shared by the inference path and FastAPI's exception handlers, so both answer alike.
    """
    if isinstance(exc, ServerError):
        errors.labels(exc.reason).inc()
        return exc.status, error_body(exc.message)
    errors.labels("internal").inc()
    log.error("unhandled error", exc_info=exc)
    return 500, error_body(f"internal error: {type(exc).__name__}")


class _ClientGoneError(Exception):
    """The client went away before its body arrived; there is no one to answer."""


def _protocol(path: str) -> str:
    if path.startswith("/v1/"):
        return "v1"
    if path.startswith("/v2"):
        return "v2"
    return "http"


class ServingApp:
    """Inference, the track headers, the body limit and request metrics; the rest to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        dataplane: DataPlane,
        max_body_bytes: int,
        auth: Reviewer | None = None,
    ) -> None:
        self.app = app  # FastAPI: health, metadata, metrics, docs
        self.dp = dataplane
        self.auth = auth  # None: spec.auth off, nothing is checked
        self.max_body = max_body_bytes
        self.routes = INFERENCE_ROUTES
        self.extra_headers = [
            (TRACK_HEADER, dataplane.info.track.encode("latin-1")),
            (VERSION_HEADER, dataplane.info.version.encode("latin-1")),
        ]

    def _record(self, endpoint: str, protocol: str, status: int, seconds: float) -> None:
        self.dp.metrics.record_request(endpoint, protocol, str(status), seconds)

    async def _send_json(
        self,
        send: Send,
        status: int,
        body: bytes,
        *headers: tuple[bytes, bytes],
        content_type: bytes = JSON,
    ) -> int:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    *self.extra_headers,
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        extra = self.extra_headers
        limit = self.max_body

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
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
            path = scope["path"]
            route = match = None
            for candidate in self.routes:
                match = candidate.pattern.match(path)
                if match is not None:
                    route = candidate
                    endpoint, protocol = route.template, route.protocol
                    break
            length = 0
            credentials: list[bytes] = []
            header_length: str | None = None
            for key, value in scope["headers"]:
                if key == b"content-length":
                    length = int(value) if value.isdigit() else 0
                elif key == b"authorization":
                    credentials.append(value)
                elif key == HEADER_LENGTH:
                    header_length = value.decode("latin-1").strip()
            # Access control first: a caller who may not use the model learns nothing else
            # (not the body limit, not which methods a route takes).
            if self.auth is not None and path not in OPEN_PATHS:
                decision = await self.auth.authorize(credentials)
                if not decision.allowed:
                    if not endpoint:
                        endpoint, protocol = "auth_denied", _protocol(path)
                    status = await self._deny(send, decision)
                    return
            if length > limit:
                status = await self._reject_413(send, length)
                return
            if route is not None and match is not None:
                if scope["method"] != "POST":
                    self.dp.metrics.errors.labels("http_405").inc()
                    status = await self._send_json(
                        send, 405, error_body("Method Not Allowed"), (b"allow", b"POST")
                    )
                    return
                status = await self._infer(
                    route, match.groupdict(), header_length, limited_receive, send
                )
                return
            await self.app(scope, limited_receive, send_with_headers)
        finally:
            if not endpoint:
                route_seen = scope.get("route")
                endpoint = getattr(route_seen, "path", None) or "unmatched"
                protocol = _protocol(scope["path"])
            self._record(endpoint, protocol, status, time.perf_counter() - started)

    async def _deny(self, send: Send, decision: Decision) -> int:
        # Not the hot path (a denial is answered once per request, not per batch): labels() is
        # fine here.
        self.dp.metrics.errors.labels(decision.reason).inc()
        return await self._send_json(send, decision.status, decision.body, *decision.headers)

    async def _reject_413(self, send: Send, length: int) -> int:
        self.dp.metrics.errors.labels(PayloadTooLargeError.reason).inc()
        body = error_body(
            f"request body is {length} bytes, over the {self.max_body}-byte limit "
            "(MAX_BODY_BYTES); send fewer rows per request"
        )
        return await self._send_json(send, 413, body)

    async def _infer(
        self,
        route: InferenceRoute,
        params: dict[str, str],
        header_length: str | None,
        receive: Receive,
        send: Send,
    ) -> int:
        """One V1 predict or V2 infer request: the only code that answers them.

        ``header_length`` is the Inference-Header-Content-Length header: the body is then a JSON
        header followed by binary tensors (V2 only; V1 has no binary form).
        """
        dp = self.dp
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
            name = params["name"]
            version = params.get("version")
            # 404/503 before the body is parsed: a request for a model that isn't there is
            # answered as such whatever it carries.
            dp.require_ready(name, version)
            binary_header: int | None = None
            if route.protocol == "v1":
                if header_length is not None:
                    raise InvalidInputError(
                        "V1 :predict takes JSON only; binary tensors (header "
                        "Inference-Header-Content-Length) are V2: POST to /v2/models/"
                        f"{name}/infer"
                    )
                v1 = await dp.v1_predict(name, decode_v1(body))
                payload, seconds = encode_v1(v1), v1.predict_seconds
            else:
                request = decode_v2(body, header_length)
                v2 = await dp.v2_infer(name, version, request)
                payload, binary_header = encode_v2(
                    v2, binary_all=request.binary_all, binary_outputs=request.binary_outputs
                )
                seconds = v2.predict_seconds
        except _ClientGoneError:
            return 499  # nginx's "client closed request": counted, never sent
        except Exception as exc:
            status, error = error_reply(dp.metrics.errors, exc)
            return await self._send_json(send, status, error)
        timing = (TIMING_HEADER, f"predict;dur={seconds * 1000:.3f}".encode())
        if binary_header is not None:
            return await self._send_json(
                send,
                200,
                payload,
                timing,
                (HEADER_LENGTH, str(binary_header).encode()),
                content_type=OCTETS,
            )
        return await self._send_json(send, 200, payload, timing)
