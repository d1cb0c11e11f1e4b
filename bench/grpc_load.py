"""A small closed-loop gRPC load generator for the Open Inference Protocol service, on loopback.

The gRPC counterpart of bench/loadgen.py, returning the same ``Result``: grpc.aio with the
stub generated from the server's own proto (modeldeploy_server.oip), one channel (one HTTP/2
connection, as tritonclient and KServe's client keep) carrying ``concurrency`` calls in flight,
each worker sending its next call when its last one is answered. The request (``rows`` iris rows
of 4 FP64 features in ``raw_input_contents``, what the clients send by default) is built once. A
run stops at ``max_requests`` or ``duration_s``, whichever comes first, and only ever connects to
127.0.0.1.

``Result.statuses`` counts gRPC status codes by number (0 is OK); every other code is an error.
``Result.overheads`` is each call's latency minus the predict time the server reports in its
``server-timing`` trailer.

    .venv/bin/python bench/grpc_load.py --port 8081 --rows 100 --concurrency 32 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

import numpy as np
from grpc import aio
from loadgen import Result
from modeldeploy_server.oip import grpc_predict_v2_pb2 as pb
from modeldeploy_server.oip import grpc_predict_v2_pb2_grpc as pb_grpc

ROW = [5.1, 3.5, 1.4, 0.2]
TIMING = "predict;dur="


def infer_request(model: str, rows: int) -> pb.ModelInferRequest:
    x = np.array([ROW] * rows, dtype="<f8")
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP64", shape=x.shape)
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[x.tobytes()])


def _predict_seconds(trailers: aio.Metadata | None) -> float | None:
    for key, value in trailers or ():
        if key == "server-timing" and isinstance(value, str) and value.startswith(TIMING):
            return float(value[len(TIMING) :]) / 1000
    return None


async def run_grpc_load(
    port: int,
    model: str,
    rows: int,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    warmup_s: float = 1.0,
    metadata: Sequence[tuple[str, str]] = (),
) -> Result:
    """Closed loop: warm up, then measure until the request or time budget runs out.

    ``metadata`` goes with every call (e.g. ``[("authorization", "Bearer ...")]``).
    """
    request = infer_request(model, rows)
    result = Result()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    await asyncio.wait_for(channel.channel_ready(), timeout=30)
    infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    md = tuple(metadata) or None
    state = {"measuring": False, "stop": False, "issued": 0}

    async def worker() -> None:
        while not state["stop"]:
            if state["measuring"]:
                if state["issued"] >= max_requests:
                    return
                state["issued"] += 1
            t0 = time.perf_counter()
            call = infer(request, metadata=md)
            try:
                await call
                code = 0
            except aio.AioRpcError as exc:
                code = exc.code().value[0]
            latency = time.perf_counter() - t0
            if state["measuring"]:
                result.latencies.append(latency)
                predict = _predict_seconds(await call.trailing_metadata())
                if predict is not None:
                    result.overheads.append(latency - predict)
                result.statuses[code] = result.statuses.get(code, 0) + 1
                if code:
                    result.errors += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_s)
    state["measuring"] = True
    started = time.perf_counter()
    _, pending = await asyncio.wait(tasks, timeout=duration_s)
    state["stop"] = True
    result.elapsed = time.perf_counter() - started
    if pending:
        await asyncio.wait(pending, timeout=10)
    await channel.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--model", default="iris")
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args()
    r = asyncio.run(
        run_grpc_load(
            args.port,
            args.model,
            args.rows,
            concurrency=args.concurrency,
            duration_s=args.duration,
            max_requests=args.max_requests,
            warmup_s=args.warmup,
        )
    )
    over = (
        f"  [over its own predict: p50 {r.pct(0.5, r.overheads) * 1e3:.2f} ms]"
        if r.overheads
        else ""
    )
    print(
        f"grpc c={args.concurrency:<3} rows={args.rows:<4} {r.rps:8.0f} req/s  "
        f"p50 {r.pct(0.5) * 1e3:7.2f} ms  p99 {r.pct(0.99) * 1e3:7.2f} ms  "
        f"errors {r.errors} {r.statuses}{over}"
    )


if __name__ == "__main__":
    main()
