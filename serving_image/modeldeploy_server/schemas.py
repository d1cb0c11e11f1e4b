"""Pydantic descriptions of the V1/V2 bodies, used only to document them in OpenAPI (/docs).

Requests are parsed by codec.py with orjson and numpy, never by these models: validating every
tensor element through pydantic would cost more than the prediction. These classes exist so
``/docs`` and ``/openapi.json`` show callers exactly what to send and what comes back.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class ErrorBody(BaseModel):
    error: str = Field(examples=["model 'iris' expects shape [N, 4] (4 features per row, got 3)"])


class V1PredictRequest(BaseModel):
    """KServe V1. Rows are lists in training column order, or objects keyed by feature name."""

    instances: list[list[Any] | dict[str, Any]] = Field(
        examples=[[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]]
    )


class V1PredictResponse(BaseModel):
    predictions: list[Any] = Field(examples=[[0, 2]])


class V1ModelsResponse(BaseModel):
    models: list[str]


class V1ModelResponse(BaseModel):
    name: str
    ready: bool


class V2Tensor(BaseModel):
    name: str
    shape: list[int] = Field(examples=[[2, 4]])
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(
        description="Row-major flat list, or nested lists matching shape",
        examples=[[5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]],
    )


class V2RequestedOutput(BaseModel):
    name: Literal["output-0", "probabilities", "predict", "predict_proba"]
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """Open Inference Protocol ``$inference_request``."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = Field(
        None, description="Default: output-0 (predict). Ask for probabilities for predict_proba."
    )


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] | None = None


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


REQUEST_MODELS: tuple[type[BaseModel], ...] = (V1PredictRequest, V2InferRequest)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` that documents a body the route reads raw."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def component_schemas() -> dict[str, Any]:
    """Schemas for REQUEST_MODELS and everything they reference, keyed for components."""
    out: dict[str, Any] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out
