"""The OIP gRPC service: the protobuf <-> V2Request/V2Result conversion, and the service itself
on a real grpc.aio server on loopback (the generated client stub, a real DataPlane and model), with
its error codes, trailers, metrics and access control; the generated code against its proto.

tests/integration/server/test_server_grpc.py runs tritonclient and KServe's client against the
server process.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio
from modeldeploy_server.app import create_app
from modeldeploy_server.auth import AuthConfig, Decision, Reviewer
from modeldeploy_server.codec import Tensor, V2Result
from modeldeploy_server.config import Settings, load_settings
from modeldeploy_server.dataplane import DataPlane, ServingInfo
from modeldeploy_server.datatypes import V2_DTYPES
from modeldeploy_server.errors import InvalidInputError, StartupError
from modeldeploy_server.grpc_service import (
    CONTENTS_FIELD,
    GRPC_CODES,
    GrpcServer,
    request_from_proto,
    response_from_result,
)
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.oip import grpc_predict_v2_pb2 as pb
from modeldeploy_server.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime

ROOT = Path(__file__).resolve().parents[3]
OIP = ROOT / "serving_image" / "modeldeploy_server" / "oip"
ROW = [5.1, 3.5, 1.4, 0.2]
NUMERIC = [d for d in V2_DTYPES if d not in ("BYTES", "BOOL")]


def tensor(
    datatype: str, shape: list[int], **contents: Any
) -> pb.ModelInferRequest.InferInputTensor:
    inp = pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=shape)
    if contents:
        inp.contents.CopyFrom(pb.InferTensorContents(**contents))
    return inp


def request(
    *inputs: pb.ModelInferRequest.InferInputTensor, raw: list[bytes] | None = None, **fields: Any
) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="iris", inputs=list(inputs), raw_input_contents=raw or [], **fields
    )


def bytes_raw(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def refused(msg: pb.ModelInferRequest) -> str:
    with pytest.raises(InvalidInputError) as err:
        request_from_proto(msg)
    return err.value.message


# ---------------------------------------------------------------------- protobuf -> V2Request
class TestRawContents:
    @pytest.mark.parametrize("datatype", NUMERIC)
    def test_every_fixed_width_datatype(self, datatype: str) -> None:
        values = np.arange(6).astype(V2_DTYPES[datatype]).reshape(2, 3)
        raw = values.astype(V2_DTYPES[datatype].newbyteorder("<")).tobytes()
        req = request_from_proto(request(tensor(datatype, [2, 3]), raw=[raw]))
        (got,) = req.inputs
        assert got.name == "x"
        assert got.array.dtype == V2_DTYPES[datatype]
        np.testing.assert_array_equal(got.array, values)

    def test_bool_is_one_byte_each(self) -> None:
        req = request_from_proto(request(tensor("BOOL", [3]), raw=[b"\x01\x00\x01"]))
        assert req.inputs[0].array.tolist() == [True, False, True]

    def test_bytes_are_length_prefixed(self) -> None:
        raw = bytes_raw(b"setosa", b"", "vé".encode())
        req = request_from_proto(request(tensor("BYTES", [1, 3]), raw=[raw]))
        assert req.inputs[0].array.tolist() == [[b"setosa", b"", "vé".encode()]]

    def test_several_inputs_take_their_raw_contents_in_order(self) -> None:
        a, b = np.array([1.0, 2.0]), np.array([3, 4], dtype=np.int32)
        msg = request(tensor("FP64", [2]), tensor("INT32", [2]), raw=[a.tobytes(), b.tobytes()])
        got = request_from_proto(msg).inputs
        assert [t.array.tolist() for t in got] == [[1.0, 2.0], [3, 4]]

    @pytest.mark.parametrize(
        ("datatype", "shape", "raw", "fragment"),
        [
            ("FP64", [1, 4], b"\x00" * 31, "needs 32 bytes (4 x 8) but the binary data holds 31"),
            ("INT32", [2], b"\x00" * 12, "needs 8 bytes"),
            ("BOOL", [2], b"\x00\x02", "BOOL data must be bytes 0 or 1"),
            ("BYTES", [1], b"\x05\x00", "1 BYTES elements can't fit in 2 bytes"),
            ("BYTES", [1], struct.pack("<I", 9) + b"abc", "says it is 9 bytes but only 3 remain"),
            ("BYTES", [1], bytes_raw(b"a", b"b"), "left over after the 1 BYTES elements"),
        ],
    )
    def test_malformed_lengths_name_the_input(
        self, datatype: str, shape: list[int], raw: bytes, fragment: str
    ) -> None:
        msg = request(tensor("FP64", [1]), tensor(datatype, shape), raw=[b"\x00" * 8, raw])
        message = refused(msg)
        assert message.startswith("inputs[1]")
        assert fragment in message

    @pytest.mark.parametrize(
        ("datatype", "shape", "fragment"),
        [
            ("BYTES", [2**40], "1099511627776 BYTES elements can't fit in 4 bytes"),
            ("FP64", [0, 2**62], "more elements than an array can hold"),
            ("FP64", [1] * 65, "65 dimensions"),
        ],
    )
    def test_shapes_numpy_cannot_make_are_refused_before_any_allocation(
        self, datatype: str, shape: list[int], fragment: str
    ) -> None:
        # Found by the REST fuzzing (tests/unit/server/test_server_fuzz.py): the same header
        # checks hold for gRPC, so none of these is a MemoryError or a ValueError (a 5xx).
        message = refused(request(tensor(datatype, shape), raw=[b"\x00" * 4]))
        assert message.startswith("inputs[0]")
        assert fragment in message

    def test_one_raw_content_per_input(self) -> None:
        msg = request(tensor("FP64", [1]), tensor("FP64", [1]), raw=[b"\x00" * 8])
        assert "1 raw_input_contents for 2 inputs" in refused(msg)

    def test_raw_and_typed_contents_together_are_refused(self) -> None:
        msg = request(tensor("FP64", [1], fp64_contents=[1.0]), raw=[b"\x00" * 8])
        assert refused(msg) == (
            "inputs[0] has both contents and raw_input_contents[0]; send one of them"
        )

    def test_fp16_travels_raw(self) -> None:
        raw = np.array([1.5, -2.0], dtype="<f2").tobytes()
        req = request_from_proto(request(tensor("FP16", [2]), raw=[raw]))
        assert req.inputs[0].array.tolist() == [1.5, -2.0]


class TestTypedContents:
    @pytest.mark.parametrize("datatype", [*NUMERIC, "BOOL", "BYTES"])
    def test_every_datatype_in_its_field(self, datatype: str) -> None:
        field = CONTENTS_FIELD.get(datatype)
        if field is None:  # FP16: no typed field in the proto
            message = refused(request(tensor(datatype, [2])))
            assert message == (
                "inputs[0]: FP16 has no typed contents field; send its data as little-endian "
                "bytes in raw_input_contents"
            )
            return
        values: list[Any]
        if datatype == "BYTES":
            values = [b"a", b"bc", b"", b"d", b"e", b"f"]
        elif datatype == "BOOL":
            values = [True, False, True, True, False, False]
        else:
            values = [0, 1, 2, 3, 4, 5]
        req = request_from_proto(request(tensor(datatype, [2, 3], **{field: values})))
        got = req.inputs[0].array
        assert got.shape == (2, 3)
        assert got.dtype == V2_DTYPES[datatype]
        assert got.reshape(-1).tolist() == values

    @pytest.mark.parametrize(
        ("inp", "message"),
        [
            (
                tensor("FP64", [1, 4], fp64_contents=[1.0, 2.0, 3.0]),
                "inputs[0]: shape [1, 4] needs 4 values but data holds 3",
            ),
            (
                tensor("FP64", [1], int64_contents=[1]),
                "inputs[0]: datatype FP64 takes its values in contents.fp64_contents, but "
                "contents has int64_contents",
            ),
            (
                tensor("INT8", [1], int_contents=[300]),
                "inputs[0]: data can't be read as INT8: Python integer 300 out of bounds for int8",
            ),
            (
                tensor("FP64", [], fp64_contents=[1.0]),
                'inputs[0]: "shape" must be a list of non-negative integers, got []',
            ),
            (
                tensor("FP64", [-1, 4]),
                'inputs[0]: "shape" must be a list of non-negative integers, got [-1, 4]',
            ),
            (
                tensor("FLOAT64", [1]),
                "inputs[0]: datatype 'FLOAT64' is not supported; use one of BOOL, UINT8, UINT16, "
                "UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES",
            ),
        ],
    )
    def test_refused_like_json_data(
        self, inp: pb.ModelInferRequest.InferInputTensor, message: str
    ) -> None:
        assert refused(request(inp)) == message

    def test_no_inputs(self) -> None:
        assert "no inputs" in refused(request())

    def test_request_fields(self) -> None:
        msg = request(
            tensor("FP64", [1, 4], fp64_contents=ROW),
            id="req-7",
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")],
            parameters={
                "flag": pb.InferParameter(bool_param=True),
                "n": pb.InferParameter(int64_param=3),
                "s": pb.InferParameter(string_param="x"),
            },
        )
        req = request_from_proto(msg)
        assert (req.id, req.outputs) == ("req-7", ["probabilities"])
        assert req.parameters == {"flag": True, "n": 3, "s": "x"}
        assert request_from_proto(request(tensor("FP64", [1, 4], fp64_contents=ROW))).id is None


# ---------------------------------------------------------------------- V2Result -> protobuf
def test_outputs_travel_as_raw_contents() -> None:
    result = V2Result(
        "iris",
        "v1",
        "req-1",
        [
            Tensor("output-0", np.array([0, 2], dtype=np.int64)),
            Tensor("probabilities", np.array([[0.9, 0.1], [0.2, 0.8]])),
            Tensor("labels", np.array(["setosa", "virginica"], dtype=object)),
        ],
        0.001,
    )
    resp = response_from_result(result)
    assert (resp.model_name, resp.model_version, resp.id) == ("iris", "v1", "req-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
        ("output-0", "INT64", [2]),
        ("probabilities", "FP64", [2, 2]),
        ("labels", "BYTES", [2]),
    ]
    assert not any(o.HasField("contents") for o in resp.outputs)
    labels, proba, names = resp.raw_output_contents
    assert np.frombuffer(labels, "<i8").tolist() == [0, 2]
    assert np.frombuffer(proba, "<f8").tolist() == [0.9, 0.1, 0.2, 0.8]
    assert names == bytes_raw(b"setosa", b"virginica")


# ---------------------------------------------------------------------- the service on loopback
Stub = pb_grpc.GRPCInferenceServiceStub


@pytest.fixture
async def serve(model_files: dict[str, Path]) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(auth=..., ready=True)`` -> (stub, DataPlane): GrpcServer on 127.0.0.1:0."""
    made: list[tuple[GrpcServer, aio.Channel, DataPlane]] = []

    async def factory(*, auth: Reviewer | None = None, ready: bool = True) -> tuple[Any, DataPlane]:
        info = ServingInfo("iris", "v1", "canary", "s3://models/iris/", "")
        dp = DataPlane(info, Metrics(), max_wait_s=0.0)
        if ready:
            await dp.set_ready(load_sklearn_runtime(model_files["forest"], "sklearn"), "ab" * 32)
        server = GrpcServer(dp, host="127.0.0.1", port=0, auth=auth, grace_s=1)
        await server.start()
        channel = aio.insecure_channel(server.address)
        made.append((server, channel, dp))
        return Stub(channel), dp

    yield factory
    for server, channel, dp in made:
        await channel.close()
        await server.stop()
        await dp.stop()


def infer_request(rows: list[list[float]], **fields: Any) -> pb.ModelInferRequest:
    x = np.asarray(rows, dtype=np.float64)
    return pb.ModelInferRequest(
        model_name="iris",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=x.shape)],
        raw_input_contents=[x.tobytes()],
        **fields,
    )


async def failure(call: Any) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as err:
        await call
    return err.value


def requests_counted(dp: DataPlane, method: str, status: str) -> float:
    value = dp.metrics.registry.get_sample_value(
        "modeldeploy_requests_total",
        {
            "endpoint": f"/inference.GRPCInferenceService/{method}",
            "protocol": "grpc",
            "status": status,
        },
    )
    return value or 0.0


async def counted(dp: DataPlane, method: str, status: str, want: float) -> float:
    """requests_counted once it reaches ``want`` (or after 5 s): the server counts a call after
    its answer has left, so the client can see the answer a moment before the count."""
    deadline = asyncio.get_running_loop().time() + 5
    while (value := requests_counted(dp, method, status)) != want:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    return value


@pytest.mark.anyio
async def test_health_and_metadata(serve: Callable[..., Any]) -> None:
    stub, dp = await serve()
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="iris"))).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="iris", version="v1"))).ready
    meta = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "modeldeploy-server"
    model = await stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    assert (model.name, list(model.versions), model.platform) == ("iris", ["v1"], "sklearn")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("input-0", "FP64", [-1, 4])
    ]
    assert "probabilities" in [t.name for t in model.outputs]
    err = await failure(stub.ModelReady(pb.ModelReadyRequest(name="other")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "model 'other' does not exist; this server serves 'iris'"
    err = await failure(stub.ModelMetadata(pb.ModelMetadataRequest(name="iris", version="v9")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert await counted(dp, "ModelReady", "OK", 2) == 2
    assert await counted(dp, "ModelReady", "NOT_FOUND", 1) == 1


@pytest.mark.anyio
async def test_infer_answers_raw_outputs_with_the_track_and_predict_time(
    serve: Callable[..., Any], iris: tuple[Any, Any], forest: Any
) -> None:
    stub, dp = await serve()
    x = iris[0][:5]
    call = stub.ModelInfer(
        infer_request(
            x.tolist(),
            id="req-1",
            outputs=[
                pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities"),
                pb.ModelInferRequest.InferRequestedOutputTensor(name="output-0"),
            ],
        )
    )
    resp = await call
    assert (resp.model_name, resp.model_version, resp.id) == ("iris", "v1", "req-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
        ("probabilities", "FP64", [5, 3]),
        ("output-0", "INT64", [5]),
    ]
    proba = np.frombuffer(resp.raw_output_contents[0], "<f8").reshape(5, 3)
    np.testing.assert_allclose(proba, forest.predict_proba(x))
    labels = np.frombuffer(resp.raw_output_contents[1], "<i8")
    assert labels.tolist() == forest.predict(x).tolist()
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-modeldeploy-track"] == "canary"
    assert trailers["x-modeldeploy-model-version"] == "v1"
    assert trailers["server-timing"].startswith("predict;dur=")
    assert await counted(dp, "ModelInfer", "OK", 1) == 1
    assert dp.metrics.registry.get_sample_value("modeldeploy_request_rows_sum") == 5


@pytest.mark.anyio
async def test_typed_contents_are_served_too(serve: Callable[..., Any]) -> None:
    stub, _ = await serve()
    msg = pb.ModelInferRequest(
        model_name="iris", inputs=[tensor("FP64", [1, 4], fp64_contents=ROW)]
    )
    resp = await stub.ModelInfer(msg)
    assert np.frombuffer(resp.raw_output_contents[0], "<i8").tolist() == [0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("msg", "code", "details"),
    [
        (
            infer_request([ROW[:3]]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "inputs[0] (x) has shape [1, 3] but the model expects shape [N, 4] (4 features per "
            "row, got 3)",
        ),
        (
            pb.ModelInferRequest(
                model_name="iris",
                inputs=[tensor("FP64", [1, 4])],
                raw_input_contents=[b"\x00" * 31],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "inputs[0]: shape [1, 4] of FP64 needs 32 bytes (4 x 8) but the binary data holds 31",
        ),
        (
            pb.ModelInferRequest(model_name="rose", inputs=[tensor("FP64", [1, 4])]),
            grpc.StatusCode.NOT_FOUND,
            "model 'rose' does not exist; this server serves 'iris'",
        ),
        (
            infer_request(
                [ROW], outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "outputs[0].name 'nope' is unknown; this model offers",
        ),
    ],
)
async def test_errors_keep_their_message_under_the_mapped_code(
    serve: Callable[..., Any], msg: pb.ModelInferRequest, code: grpc.StatusCode, details: str
) -> None:
    stub, dp = await serve()
    err = await failure(stub.ModelInfer(msg))
    assert err.code() == code
    assert err.details().startswith(details)
    assert await counted(dp, "ModelInfer", code.name, 1) == 1


@pytest.mark.anyio
async def test_a_loading_model_is_unavailable_and_not_ready(serve: Callable[..., Any]) -> None:
    stub, _ = await serve(ready=False)
    assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="iris"))).ready
    err = await failure(stub.ModelInfer(infer_request([ROW])))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == "model iris is not ready yet (starting)"


@pytest.mark.anyio
async def test_no_model_repository(serve: Callable[..., Any]) -> None:
    stub, _ = await serve()
    err = await failure(stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="x")))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "no model repository" in err.details()


def test_every_server_error_status_has_its_code() -> None:
    assert {s: c.name for s, c in GRPC_CODES.items()} == {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        413: "RESOURCE_EXHAUSTED",
        501: "UNIMPLEMENTED",
        503: "UNAVAILABLE",
    }


# ---------------------------------------------------------------------- access control
@pytest.fixture
def reviewer(tmp_path: Path) -> Reviewer:
    """A real Reviewer whose API server is unreachable: decisions come from its own cache (put
    there as a review would) or fail closed."""
    token = tmp_path / "token"
    token.write_text("server-token")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    config = AuthConfig(
        api_server=f"http://127.0.0.1:{closed}",
        token_file=token,
        ca_file=None,
        namespace="team",
        name="iris",
        timeout_s=2,
    )
    r = Reviewer(config, Metrics())
    r.cache.put(hashlib.sha256(b"alice").digest(), Decision("allowed", 200, user="alice"), 60)
    r.cache.put(
        hashlib.sha256(b"bob").digest(),
        Decision("forbidden", 403, 'user "bob" may not create modeldeployments/predict'),
        60,
    )
    return r


@pytest.mark.anyio
async def test_auth_uses_the_authorization_metadata(
    serve: Callable[..., Any], reviewer: Reviewer
) -> None:
    stub, dp = await serve(auth=reviewer)
    # open, as REST's /v2/health/* and /v2
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    await stub.ServerMetadata(pb.ServerMetadataRequest())

    err = await failure(stub.ModelInfer(infer_request([ROW])))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details().startswith("missing bearer token")
    assert dict(err.trailing_metadata())["www-authenticate"] == 'Bearer realm="team/iris"'
    err = await failure(stub.ModelMetadata(pb.ModelMetadataRequest(name="iris")))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    bob = (("authorization", "Bearer bob"),)
    err = await failure(stub.ModelReady(pb.ModelReadyRequest(name="iris"), metadata=bob))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == 'user "bob" may not create modeldeployments/predict'

    alice = (("authorization", "Bearer alice"),)
    resp = await stub.ModelInfer(infer_request([ROW]), metadata=alice)
    assert np.frombuffer(resp.raw_output_contents[0], "<i8").tolist() == [0]

    # a token nobody reviewed yet, and the API server can't be reached: closed, not open
    err = await failure(
        stub.ModelInfer(infer_request([ROW]), metadata=(("authorization", "Bearer carol"),))
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert await counted(dp, "ModelInfer", "UNAUTHENTICATED", 1) == 1
    assert await counted(dp, "ModelInfer", "OK", 1) == 1
    errors = dp.metrics.registry.get_sample_value
    assert errors("modeldeploy_errors_total", {"reason": "unauthenticated"}) == 2
    assert errors("modeldeploy_errors_total", {"reason": "forbidden"}) == 1
    await reviewer.close()


# ---------------------------------------------------------------------- the port
@pytest.mark.anyio
async def test_a_port_in_use_fails_the_start_with_a_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dp = DataPlane(ServingInfo("iris", "v1", "stable", "", ""), Metrics())
        server = GrpcServer(dp, host="127.0.0.1", port=port)
        with pytest.raises(StartupError) as err:
            await server.start()
    assert err.value.message.startswith(f"could not listen on 127.0.0.1:{port} for gRPC")
    assert server.failure == err.value.message
    await server.stop()  # never started: nothing to drain


@pytest.mark.anyio
async def test_the_apps_lifespan_starts_it_and_drains_it_before_the_batcher_stops(
    model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = load_sklearn_runtime(model_files["forest"], "sklearn")
    # The app must stop while a call is inside the model's predict. A gate holds it there: a
    # huge request would do that too, but its huge answer races grpc core closing the
    # connection at the end of the drain (a reset that loses the answer), a fault of grpc's and
    # not the one under test.
    entered, release = threading.Event(), threading.Event()
    predict = runtime.predict

    def gated(x: Any, outputs: tuple[str, ...]) -> Any:
        if x.shape[0] == 3:  # the call under test, not the warm-up
            entered.set()
            assert release.wait(30), "the test never let the predict go on"
        return predict(x, outputs)

    monkeypatch.setattr(runtime, "predict", gated)
    dp = DataPlane(ServingInfo("iris", "v1", "stable", "", ""), Metrics(), max_wait_s=0.0)
    await dp.set_ready(runtime, "ab" * 32)
    server = GrpcServer(dp, host="127.0.0.1", port=0, grace_s=10)
    fastapi = create_app(dp, listeners=[server]).app
    lifespan = fastapi.router.lifespan_context(fastapi)
    await lifespan.__aenter__()
    channel = aio.insecure_channel(server.address)
    stub = Stub(channel)
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    call = stub.ModelInfer(infer_request([ROW] * 3))
    assert await asyncio.to_thread(entered.wait, 30), "the call never reached the model"
    stopping = asyncio.ensure_future(lifespan.__aexit__(None, None, None))
    await asyncio.sleep(0.2)
    assert not stopping.done(), "the app stopped with a call still inside the model"
    release.set()
    await stopping
    # The call was answered, so the batcher outlived the gRPC drain.
    assert np.frombuffer((await call).raw_output_contents[0], "<i8").size == 3
    assert dp.metrics.registry.get_sample_value("modeldeploy_model_ready") == 0
    err = await failure(stub.ServerLive(pb.ServerLiveRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close()


def test_grpc_port_setting() -> None:
    assert Settings().grpc_port == 8081
    assert load_settings(["--grpc-port", "0"]).grpc_port == 0
    assert Settings(GRPC_PORT="9001").grpc_port == 9001
    with pytest.raises(ValueError, match="GRPC_PORT must differ from PORT"):
        Settings(port=9001, grpc_port=9001)


# ---------------------------------------------------------------------- the generated code
def test_generated_code_is_what_the_proto_and_the_script_give(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "hack" / "gen-proto.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    names = ["grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / name).read_bytes() == (OIP / name).read_bytes(), (
            f"oip/{name} is not what hack/gen-proto.sh generates from the proto: run it"
        )


def test_the_proto_is_kserves_so_both_load_in_one_process() -> None:
    # kserve (imported by the client tests in this same process) registers the same file name
    # in protobuf's one registry; protobuf accepts that only when the two are identical.
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as kserve_pb

    assert pb.DESCRIPTOR.name == kserve_pb.DESCRIPTOR.name == "grpc_predict_v2.proto"
    assert pb.DESCRIPTOR.serialized_pb == kserve_pb.DESCRIPTOR.serialized_pb
