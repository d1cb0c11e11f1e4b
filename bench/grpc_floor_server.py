"""The gRPC floor: the least a Python model server on grpcio's asyncio server can do per call.

The gRPC counterpart of bench/floor_server.py: a bare ``grpc.aio`` GRPCInferenceService whose
ModelInfer reads the first input's ``raw_input_contents`` with ``np.frombuffer``, predicts on
the event loop (through modeldeploy-server's forest fast path when the model has one), and
answers the labels in ``raw_output_contents`` with the same ``server-timing`` trailer as ours.
No validation, no batching, no metrics, no access control. It runs on uvloop, as
modeldeploy-server does. bench/serve_bench.py sets it beside ours in the same run, so the part
of our gRPC figures that grpcio itself costs is visible. Nobody should serve this way.

    MODEL_PATH=model.joblib python bench/grpc_floor_server.py PORT
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import joblib
import numpy as np
import uvloop
from grpc import aio
from modeldeploy_server.oip import grpc_predict_v2_pb2 as pb
from modeldeploy_server.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from modeldeploy_server.runtime.forest import compile_forest

MODEL = joblib.load(os.environ["MODEL_PATH"])
PREDICT = getattr(compile_forest(MODEL), "predict", MODEL.predict)


class Floor(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        shape = tuple(request.inputs[0].shape)
        x = np.frombuffer(request.raw_input_contents[0], dtype="<f8").reshape(shape)
        started = time.perf_counter()
        labels = np.asarray(PREDICT(x), dtype="<i8")
        seconds = time.perf_counter() - started
        context.set_trailing_metadata((("server-timing", f"predict;dur={seconds * 1000:.3f}"),))
        out = pb.ModelInferResponse.InferOutputTensor(
            name="predict", datatype="INT64", shape=list(labels.shape)
        )
        return pb.ModelInferResponse(
            model_name=request.model_name, outputs=[out], raw_output_contents=[labels.tobytes()]
        )


async def serve(port: int) -> None:
    server = aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
