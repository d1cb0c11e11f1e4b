"""Pydantic descriptions of the V1/V2 bodies, used only to document them in OpenAPI (/docs).

Requests are parsed by codec.py with orjson and numpy, never by these models: validating every
tensor element through pydantic would cost more than the prediction. These classes exist so
``/docs`` and ``/openapi.json`` show callers exactly what to send and what comes back, including
for the inference routes, which FastAPI does not serve (asgi.py does) and so can't describe
itself: ``inference_path`` writes their OpenAPI entries.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from modeldeploy_server.codec import MAX_RANK
from modeldeploy_server.datatypes import DATATYPES

# The datatype names come from the codec's own table, so the docs list exactly what decodes.
Datatype = Annotated[str, Field(json_schema_extra={"enum": list(DATATYPES)})]
# The OIP's $parameters: values are strings, numbers or booleans (the codec refuses others).
Parameters = dict[str, str | int | float | bool]


class ErrorBody(BaseModel):
    error: str = Field(examples=["model 'iris' expects shape [N, 4] (4 features per row, got 3)"])


class V1PredictRequest(BaseModel):
    """KServe V1. Rows are lists in training column order, or objects keyed by feature name."""

    instances: list[list[Any] | dict[str, Any]] = Field(
        min_length=1, examples=[[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]]
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
    shape: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, max_length=MAX_RANK, examples=[[2, 4]]
    )
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] = Field(
        description="Row-major flat list, or nested lists matching shape: numbers for the "
        "numeric datatypes (whole ones for the integer types; null is NaN for FP16/32/64), true "
        "or false (or 0 and 1) for BOOL, strings for BYTES",
        examples=[[5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]],
    )


class V2RequestedOutput(BaseModel):
    name: str = Field(
        description="An output the model metadata lists; for scikit-learn models output-0 "
        "(alias predict) and probabilities (alias predict_proba)",
        examples=["probabilities"],
    )
    parameters: Parameters | None = None


class V2InferRequest(BaseModel):
    """Open Inference Protocol ``$inference_request``."""

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
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


# Every model the inference entries reference, so components holds them and what they reference.
DOCUMENTED_MODELS: tuple[type[BaseModel], ...] = (
    V1PredictRequest,
    V1PredictResponse,
    V2InferRequest,
    V2InferResponse,
    ErrorBody,
)
_JSON = "application/json"
_OCTETS = "application/octet-stream"
# The binary tensor data extension (V2 only): a JSON header of this many bytes, then the raw
# tensors; the answer comes back framed the same way when binary outputs were asked for.
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "Binary tensor data extension: the body is a JSON header of this many bytes, "
    "then the bytes of the inputs that declare parameters.binary_data_size, in input order",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
# protocol -> (tag, request body, response body, what the operation does)
_INFERENCE: dict[str, tuple[str, type[BaseModel], type[BaseModel], str]] = {
    "v1": ("KServe V1", V1PredictRequest, V1PredictResponse, "Predict"),
    "v2": ("Open Inference Protocol V2", V2InferRequest, V2InferResponse, "Infer"),
}
_ERRORS = {
    400: "Bad input; the error names the field",
    404: "No such model or version",
    413: "Body over MAX_BODY_BYTES",
    500: "The model failed",
    503: "The model is not loaded yet",
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _body(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(model)}}}


def inference_path(template: str, protocol: str, params: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI path item for one inference route (asgi.INFERENCE_ROUTES)."""
    tag, request, response, verb = _INFERENCE[protocol]
    operation = f"{protocol}_{verb.lower()}" + ("_version" if "version" in params else "")
    binary = protocol == "v2"
    content: dict[str, Any] = {_JSON: {"schema": _ref(request)}}
    ok = _body(response, "Successful Response")
    if binary:
        content[_OCTETS] = _BINARY
        ok["content"][_OCTETS] = _BINARY
        ok["description"] += (
            "; application/octet-stream, framed by the Inference-Header-Content-Length response "
            "header, when binary outputs were asked for"
        )
    return {
        "post": {
            "tags": [tag],
            "summary": f"{verb} {'(a given version)' if 'version' in params else ''}".strip(),
            "operationId": operation,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
            + ([_HEADER_LENGTH] if binary else []),
            "requestBody": {"required": True, "content": content},
            "responses": {
                "200": ok,
                **{str(code): _body(ErrorBody, text) for code, text in _ERRORS.items()},
            },
        }
    }


def component_schemas() -> dict[str, Any]:
    """Schemas for DOCUMENTED_MODELS and everything they reference, keyed for components."""
    out: dict[str, Any] = {}
    for model in DOCUMENTED_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out
