"""The floor: the least a Python model server on uvicorn can do per request.

A raw ASGI callable with no framework, no validation, no metrics and no batching: read the body,
``orjson.loads`` it, call ``predict`` on the event loop, answer. It sends the same Server-Timing
header as modeldeploy-server, so bench/serve_bench.py can subtract each request's own predict and
compare what is left (loopback, uvicorn, the client, waking an idle CPU after a long predict)
with ours in the same run. Nobody should serve this way; it exists to show what is not ours to
save. It predicts through modeldeploy-server's forest fast path when the model has one, so the
two differ only in what happens around the predict. Run as ``uvicorn floor_server:app`` with
MODEL_PATH set.
"""

from __future__ import annotations

import os
import time
from typing import Any

import joblib
import numpy as np
import orjson
from modeldeploy_server.runtime.forest import compile_forest

MODEL = joblib.load(os.environ["MODEL_PATH"])
PREDICT = getattr(compile_forest(MODEL), "predict", MODEL.predict)
HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    x = np.asarray(orjson.loads(body)["instances"], dtype=np.float64)
    started = time.perf_counter()
    predictions = PREDICT(x)
    timing = f"predict;dur={(time.perf_counter() - started) * 1000:.3f}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*HEADERS, (b"server-timing", timing)],
        }
    )
    out = orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.body", "body": out})
