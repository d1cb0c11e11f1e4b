"""The baseline: a FastAPI model server written the way tutorials write one.

The model is loaded in the lifespan, the body is a pydantic model, and each request calls
``predict`` once in FastAPI's threadpool (a plain ``def`` endpoint). Nothing here is tuned; that
is the point. Run by bench/serve_bench.py as ``uvicorn naive_server:app`` with MODEL_PATH set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

ml: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    ml["model"] = joblib.load(os.environ["MODEL_PATH"])
    yield
    ml.clear()


app = FastAPI(lifespan=lifespan)


class PredictRequest(BaseModel):
    instances: list[list[float]]


class PredictResponse(BaseModel):
    predictions: list[int]


@app.post("/predict", response_model=PredictResponse)
def predict(request: PredictRequest) -> dict[str, list[int]]:
    x = np.array(request.instances)
    return {"predictions": ml["model"].predict(x).tolist()}
