"""The Open Inference Protocol over gRPC: KServe's ``inference.GRPCInferenceService``.

The same DataPlane, micro-batcher, metrics and access control as the REST side (asgi.py), in the
same process and on the same event loop, on a port of its own (GRPC_PORT, KServe's 8081). This
module is that protocol's codec and its transport: a ``ModelInferRequest`` becomes the
``V2Request`` the DataPlane takes (inputs from ``raw_input_contents`` through binary.py, the
same bytes the REST binary extension carries, or from each input's typed ``InferTensorContents``,
checked like codec.py checks JSON ``data``, with the same messages), and the ``V2Result`` becomes
a ``ModelInferResponse`` whose outputs travel in ``raw_output_contents``, as Triton answers and as
tritonclient and KServe's InferenceGRPCClient read by default.

DataPlane errors keep their message and map their HTTP status onto a gRPC code (``GRPC_CODES``);
with ``spec.auth`` on every call but ServerLive, ServerReady and ServerMetadata (REST's open
``/v2/health/*`` and ``/v2``) passes the same ``Reviewer.authorize`` with its ``authorization``
metadata. Requests are counted in the REST side's metrics, with protocol ``grpc``, the full method
name as the endpoint and the gRPC code's name as the status. No web framework is imported here,
and only this module imports grpc and the generated code in ``oip/`` (import-linter).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
from grpc import aio

from modeldeploy_server.auth import Reviewer
from modeldeploy_server.binary import raw_from_array, tensor_from_raw
from modeldeploy_server.codec import Array, Tensor, V2Request, V2Result, check_shape
from modeldeploy_server.dataplane import DataPlane
from modeldeploy_server.datatypes import V2_DTYPES
from modeldeploy_server.errors import (
    InvalidInputError,
    ModelNotReadyError,
    ServerError,
    StartupError,
    UnsupportedEndpointError,
    brief,
)
from modeldeploy_server.oip import grpc_predict_v2_pb2 as pb
from modeldeploy_server.oip import grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
if TYPE_CHECKING:  # generic in the type stubs only
    Context = aio.ServicerContext[Any, Any]
R = TypeVar("R")

# A ServerError's HTTP status -> the gRPC code it is answered with (anything else: INTERNAL).
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

# Which InferTensorContents field holds each datatype's typed values (the proto's comments say
# so). FP16 has none: it travels in raw_input_contents only.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# Calls answered without a token when spec.auth is on: REST's open /v2/health/* and /v2 (they say
# nothing about the model beyond "up"; the kubelet's gRPC probe carries no token either).
OPEN_METHODS = frozenset({"ServerLive", "ServerReady", "ServerMetadata"})

TRACK_KEY = "x-modeldeploy-track"
VERSION_KEY = "x-modeldeploy-model-version"
TIMING_KEY = "server-timing"


def grpc_code(status: int) -> grpc.StatusCode:
    return GRPC_CODES.get(status, grpc.StatusCode.INTERNAL)


# ---------------------------------------------------------------------------------- the codec
def _shape(where: str, shape: Sequence[int], datatype: str) -> list[int]:
    """The shape as a list, after the checks codec.py makes of a JSON tensor's header."""
    dims = check_shape(where, list(shape))
    if datatype not in V2_DTYPES:
        raise InvalidInputError(
            f"{where}: datatype {brief(datatype)} is not supported; use one of "
            f"{', '.join(V2_DTYPES)}"
        )
    return dims


def _typed(where: str, datatype: str, shape: list[int], contents: Any) -> Array:
    """The array an input's typed InferTensorContents hold."""
    field = CONTENTS_FIELD.get(datatype)
    given = [f.name for f, _ in contents.ListFields()]
    if field is None:
        raise InvalidInputError(
            f"{where}: {datatype} has no typed contents field; send its data as little-endian "
            "bytes in raw_input_contents"
        )
    stray = [g for g in given if g != field]
    if stray:
        raise InvalidInputError(
            f"{where}: datatype {datatype} takes its values in contents.{field}, but contents "
            f"has {', '.join(stray)}"
        )
    values = getattr(contents, field)
    if datatype == "BYTES":
        arr: Array = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    else:
        try:
            arr = np.asarray(values, dtype=V2_DTYPES[datatype])
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInputError(f"{where}: data can't be read as {datatype}: {exc}") from None
    want = math.prod(shape)
    if arr.size != want:
        raise InvalidInputError(
            f"{where}: shape {shape} needs {want} values but data holds {arr.size}"
        )
    return arr.reshape(shape)


def _parameters(params: Any) -> dict[str, Any] | None:
    if not params:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def request_from_proto(msg: pb.ModelInferRequest) -> V2Request:
    """The V2Request a ModelInferRequest carries; InvalidInputError naming the input at fault."""
    inputs = msg.inputs
    if not inputs:
        raise InvalidInputError(
            "the request has no inputs: ModelInferRequest.inputs must hold at least one tensor"
        )
    raw = msg.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidInputError(
            f"the request has {len(raw)} raw_input_contents for {len(inputs)} inputs: give one "
            "per input, in input order (or none, and each input's contents)"
        )
    tensors: list[Tensor] = []
    for i, inp in enumerate(inputs):
        where = f"inputs[{i}]"
        shape = _shape(where, inp.shape, inp.datatype)
        if raw:
            if inp.contents.ListFields():
                raise InvalidInputError(
                    f"{where} has both contents and raw_input_contents[{i}]; send one of them"
                )
            arr = tensor_from_raw(where, inp.datatype, shape, raw[i])
        else:
            arr = _typed(where, inp.datatype, shape, inp.contents)
        tensors.append(Tensor(inp.name, arr))
    return V2Request(
        id=msg.id or None,
        inputs=tensors,
        outputs=[o.name for o in msg.outputs],
        parameters=_parameters(msg.parameters),
    )


def response_from_result(result: V2Result) -> pb.ModelInferResponse:
    """A ModelInferResponse with every output's data in raw_output_contents."""
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id or ""
    )
    for tensor in result.outputs:
        datatype, data = raw_from_array(tensor.array)
        response.outputs.add(name=tensor.name, datatype=datatype, shape=tensor.array.shape)
        response.raw_output_contents.append(data)
    return response


def _metadata_response(doc: dict[str, Any]) -> pb.ModelMetadataResponse:
    def tensors(specs: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=s["name"], datatype=s["datatype"], shape=s["shape"]
            )
            for s in specs
        ]

    # The proto's ModelMetadataResponse has no parameters (REST's sha256, storage_uri, track).
    return pb.ModelMetadataResponse(
        name=doc["name"],
        versions=doc["versions"],
        platform=doc["platform"],
        inputs=tensors(doc["inputs"]),
        outputs=tensors(doc["outputs"]),
    )


# ------------------------------------------------------------------------------- the service
def _authorization(context: Context) -> list[bytes]:
    metadata = context.invocation_metadata() or ()
    return [
        value.encode() if isinstance(value, str) else value
        for key, value in metadata
        if key == "authorization"
    ]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService over one DataPlane; every call goes through ``_serve``."""

    def __init__(self, dataplane: DataPlane, auth: Reviewer | None = None) -> None:
        self.dp = dataplane
        self.auth = auth  # None: spec.auth off, nothing is checked
        info = dataplane.info
        self.extra: tuple[tuple[str, str], ...] = (
            (TRACK_KEY, info.track),
            (VERSION_KEY, info.version),
        )

    def _record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.dp.metrics.record_request(f"/{SERVICE}/{method}", "grpc", code.name, seconds)

    async def _serve(
        self,
        method: str,
        context: Context,
        answer: Callable[[], Awaitable[tuple[R, float | None]]],
    ) -> R:
        """Access control, ``answer()``, error mapping and metrics for one call.

        ``answer`` returns the response and the predict time it took (None but for inference).
        """
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        errors = self.dp.metrics.errors
        trailers: tuple[tuple[str, str], ...] = self.extra
        try:
            if self.auth is not None and method not in OPEN_METHODS:
                decision = await self.auth.authorize(_authorization(context))
                if not decision.allowed:
                    errors.labels(decision.reason).inc()
                    code = grpc_code(decision.status)
                    challenge = tuple((k.decode(), v.decode()) for k, v in decision.headers)
                    await context.abort(code, decision.message, trailers + challenge)
            try:
                response, seconds = await answer()
            except ServerError as exc:
                errors.labels(exc.reason).inc()
                code = grpc_code(exc.status)
                message = exc.message
            except Exception as exc:
                errors.labels("internal").inc()
                log.error("unhandled error in %s", method, exc_info=exc)
                code = grpc.StatusCode.INTERNAL
                message = f"internal error: {type(exc).__name__}"
            else:
                if seconds is not None:
                    trailers += ((TIMING_KEY, f"predict;dur={seconds * 1000:.3f}"),)
                context.set_trailing_metadata(trailers)
                return response
            await context.abort(code, message, trailers)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the caller hung up or its deadline passed
            raise
        finally:
            self._record(method, code, time.perf_counter() - started)

    # -- health and metadata ---------------------------------------------------------------
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        async def answer() -> tuple[pb.ServerLiveResponse, None]:
            return pb.ServerLiveResponse(live=True), None

        return await self._serve("ServerLive", context, answer)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        async def answer() -> tuple[pb.ServerReadyResponse, None]:
            return pb.ServerReadyResponse(ready=self.dp.ready), None

        return await self._serve("ServerReady", context, answer)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        async def answer() -> tuple[pb.ServerMetadataResponse, None]:
            doc = self.dp.v2_server_metadata()
            # binary_tensor_data is REST's extension; gRPC has raw contents by definition.
            return pb.ServerMetadataResponse(name=doc["name"], version=doc["version"]), None

        return await self._serve("ServerMetadata", context, answer)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        async def answer() -> tuple[pb.ModelReadyResponse, None]:
            # Another model is NOT_FOUND; this one loading (or failed) is ready: false, the
            # answer the call exists for, where REST's /ready route says 503.
            try:
                self.dp.v2_model_ready(request.name, request.version or None)
            except ModelNotReadyError:
                return pb.ModelReadyResponse(ready=False), None
            return pb.ModelReadyResponse(ready=True), None

        return await self._serve("ModelReady", context, answer)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        async def answer() -> tuple[pb.ModelMetadataResponse, None]:
            doc = self.dp.v2_model_metadata(request.name, request.version or None)
            return _metadata_response(doc), None

        return await self._serve("ModelMetadata", context, answer)

    # -- inference -------------------------------------------------------------------------
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        async def answer() -> tuple[pb.ModelInferResponse, float]:
            name, version = request.model_name, request.model_version or None
            # 404/503 before the tensors are decoded, as on the REST side.
            self.dp.require_ready(name, version)
            result = await self.dp.v2_infer(name, version, request_from_proto(request))
            return response_from_result(result), result.predict_seconds

        return await self._serve("ModelInfer", context, answer)

    # -- the model repository extension: not offered (one model, fixed at start) -----------
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        return await self._serve("RepositoryModelLoad", context, _no_repository)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        return await self._serve("RepositoryModelUnload", context, _no_repository)


async def _no_repository() -> tuple[Any, None]:
    raise UnsupportedEndpointError(
        "this server serves one model, fixed at start: it has no model repository to load or "
        "unload from (change spec.model of the ModelDeployment instead)"
    )


# ------------------------------------------------------------------------------- the listener
class GrpcServer:
    """The gRPC port: bound when the app starts, drained for ``grace_s`` when it stops.

    ``port`` 0 binds an ephemeral port (tests); ``port`` holds the bound one after ``start``.
    """

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        host: str,
        port: int,
        auth: Reviewer | None = None,
        max_message_bytes: int = 10 * 1024 * 1024,
        grace_s: float = 20.0,
    ) -> None:
        self.dp = dataplane
        self.host = host
        self.port = port
        self.auth = auth
        self.max_message_bytes = max_message_bytes
        self.grace_s = grace_s
        self.failure: str | None = None  # why start failed, for the termination log
        self._server: aio.Server | None = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; StartupError when the port can't be bound."""
        server = aio.server(
            options=[
                # The REST body limit (MAX_BODY_BYTES) is the gRPC message limit too.
                ("grpc.max_receive_message_length", self.max_message_bytes),
                # gRPC sets SO_REUSEPORT by default, which would let a second server bind a
                # port in use and share its calls; a taken port must fail the start instead.
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            InferenceServicer(self.dp, self.auth), server
        )
        address = self.address
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            bound = 0
        if not bound:
            self.failure = (
                f"could not listen on {address} for gRPC (GRPC_PORT); is the port in use? "
                "(GRPC_PORT=0 turns the gRPC service off)"
            )
            log.error("%s", self.failure)
            raise StartupError(self.failure, reason="grpc_listen")
        self.port = bound
        await server.start()
        self._server = server
        log.info("gRPC (Open Inference Protocol) listening on %s", self.address)

    def begin_stop(self) -> None:
        """Refuse new calls from now on and let those in flight finish for ``grace_s``."""
        if self._stopping is None and self._server is not None:
            self._stopping = asyncio.ensure_future(self._server.stop(self.grace_s))

    async def stop(self) -> None:
        """Drain (begun here unless ``begin_stop`` already did) and wait until it is done."""
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping
