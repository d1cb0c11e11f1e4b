"""The app in-process (httpx ASGITransport): every endpoint, header and error shape.

Inference has one implementation (asgi.ServingApp), so each case runs once; the other routes go
through FastAPI inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pytest
from modeldeploy_server.app import create_app
from modeldeploy_server.asgi import INFERENCE_ROUTES

pytestmark = pytest.mark.anyio

ROW = [5.1, 3.5, 1.4, 0.2]  # setosa
ROW2 = [6.7, 3.0, 5.2, 2.3]  # virginica
Factory = Callable[..., Any]


def v2_body(data: Any, shape: list[int], datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}], **extra}


async def test_health_endpoints_before_the_model_is_loaded(make_client: Factory) -> None:
    client, _ = await make_client(model=None)
    live = await client.get("/healthz")
    assert live.status_code == 200
    assert live.headers["x-modeldeploy-track"] == "canary"
    for path in ("/ready", "/v2/health/ready", "/v1/models/iris", "/v2/models/iris/ready"):
        r = await client.get(path)
        assert r.status_code == 503, path
        assert "not ready yet" in r.json()["error"]
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    r = await client.post("/v1/models/iris:predict", json={"instances": [ROW]})
    assert r.status_code == 503


async def test_health_and_metadata_when_ready(make_client: Factory) -> None:
    client, _ = await make_client()
    assert (await client.get("/ready")).json() == {"ready": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get("/v1/models")).json() == {"models": ["iris"]}
    assert (await client.get("/v1/models/iris")).json() == {"name": "iris", "ready": True}
    assert (await client.get("/v2/models/iris/ready")).json() == {"name": "iris", "ready": True}
    server = (await client.get("/v2")).json()
    assert server["name"] == "modeldeploy-server"
    assert server["extensions"] == ["binary_tensor_data"]
    meta = (await client.get("/v2/models/iris")).json()
    assert meta["versions"] == ["v1"]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["output-0", "probabilities"]
    assert meta["outputs"][0]["datatype"] == "INT64"
    assert meta["parameters"]["classes"] == [0, 1, 2]
    assert meta["parameters"]["predict_path"] == (
        "forest fast path: RandomForestClassifier (10 trees)"
    )
    assert (await client.get("/v2/models/iris/versions/v1")).status_code == 200


async def test_v1_predict(make_client: Factory) -> None:
    client, _ = await make_client()
    r = await client.post("/v1/models/iris:predict", json={"instances": [ROW, ROW2]})
    assert r.status_code == 200
    assert r.json() == {"predictions": [0, 2]}
    assert r.headers["x-modeldeploy-track"] == "canary"
    assert r.headers["x-modeldeploy-model-version"] == "v1"
    # The model call's share of the request, in W3C Server-Timing form.
    name, dur = r.headers["server-timing"].split(";dur=")
    assert name == "predict"
    assert float(dur) > 0
    bad = await client.post("/v1/models/iris:predict", json={"instances": [[1.0]]})
    assert bad.status_code == 400
    assert "server-timing" not in bad.headers


async def test_v1_predict_proba_mode(make_client: Factory) -> None:
    client, _ = await make_client(predict_proba_v1=True)
    r = await client.post("/v1/models/iris:predict", json={"instances": [ROW]})
    probs = r.json()["predictions"][0]
    assert len(probs) == 3
    assert abs(sum(probs) - 1) < 1e-9


async def test_v1_records_keyed_by_feature_name(make_client: Factory) -> None:
    client, _ = await make_client("named")
    rec = {"petal_width": 2.3, "petal_length": 5.2, "sepal_width": 3.0, "sepal_length": 6.7}
    r = await client.post("/v1/models/iris:predict", json={"instances": [rec]})
    assert r.json() == {"predictions": [2]}
    r = await client.post("/v1/models/iris:predict", json={"instances": [{"sepal_length": 1}]})
    assert r.status_code == 400
    assert "missing ['petal_length', 'petal_width', 'sepal_width']" in r.json()["error"]


async def test_v2_infer_with_both_outputs(make_client: Factory) -> None:
    client, _ = await make_client()
    body = v2_body(
        ROW + ROW2,
        [2, 4],
        id="req-7",
        outputs=[{"name": "output-0"}, {"name": "probabilities"}],
    )
    r = await client.post("/v2/models/iris/infer", json=body)
    assert r.status_code == 200
    doc = r.json()
    assert doc["model_name"] == "iris"
    assert doc["model_version"] == "v1"
    assert doc["id"] == "req-7"
    pred, proba = doc["outputs"]
    assert pred == {"name": "output-0", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert proba["name"] == "probabilities"
    assert proba["shape"] == [2, 3]
    assert proba["datatype"] == "FP64"
    assert len(proba["data"]) == 6


async def test_v2_versioned_path_nested_data_and_alias(make_client: Factory) -> None:
    client, _ = await make_client()
    body = v2_body([ROW], [1, 4], "FP64", outputs=[{"name": "predict_proba"}])
    r = await client.post("/v2/models/iris/versions/v1/infer", json=body)
    assert r.status_code == 200
    (out,) = r.json()["outputs"]
    assert out["name"] == "predict_proba"
    assert out["shape"] == [1, 3]
    assert "id" not in r.json()
    r = await client.post("/v2/models/iris/versions/v9/infer", json=body)
    assert r.status_code == 404
    assert "no version 'v9'" in r.json()["error"]


async def test_v2_one_tensor_per_feature(make_client: Factory) -> None:
    client, _ = await make_client("named")
    names = ["petal_width", "sepal_length", "petal_length", "sepal_width"]
    values = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
    inputs = [{"name": n, "shape": [1], "datatype": "FP64", "data": [values[n]]} for n in names]
    r = await client.post("/v2/models/iris/infer", json={"inputs": inputs})
    assert r.json()["outputs"][0]["data"] == [2]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        (
            "/v1/models/iris:predict",
            {"instances": [[1.0, 2.0, 3.0]]},
            400,
            "expects shape [N, 4] (4 features per row, got 3)",
        ),
        ("/v1/models/iris:predict", {"instances": ROW}, 400, "expects shape [N, 4]"),
        ("/v1/models/iris:predict", {"instances": [[1, 2, 3, "x"]]}, 400, "could not convert"),
        ("/v1/models/iris:predict", b'{"instances": [[1, 2, 3, 1e400]]}', 400, "is infinity"),
        ("/v2/models/iris/infer", v2_body([1, 2, 3, 7e4], [1, 4], "FP16"), 400, "infinite value"),
        ("/v1/models/iris:predict", {"rows": [ROW]}, 400, '"instances" is required'),
        ("/v1/models/other:predict", {"instances": [ROW]}, 404, "serves 'iris'"),
        ("/v2/models/iris/infer", v2_body(ROW, [2, 4]), 400, "needs 8 values"),
        ("/v2/models/iris/infer", v2_body(ROW, [4]), 400, "expects shape [N, 4]"),
        ("/v2/models/iris/infer", v2_body([1, 2, 3], [1, 3]), 400, "expects shape [N, 4]"),
        ("/v2/models/iris/infer", v2_body(ROW, [1, 4], "BF16"), 400, "'BF16' is not supported"),
        (
            "/v2/models/iris/infer",
            v2_body(ROW, [1, 4], outputs=[{"name": "logits"}]),
            400,
            "outputs[0].name 'logits' is unknown; this model offers \"output-0\" (predict) and "
            '"probabilities" (predict_proba)',
        ),
        ("/v2/models/nope/infer", v2_body(ROW, [1, 4]), 404, "does not exist"),
        ("/v2/models/nope/infer", b"not json", 404, "does not exist"),
    ],
)
async def test_bad_input_is_a_4xx_with_a_reason(
    make_client: Factory, path: str, body: Any, status: int, fragment: str
) -> None:
    client, _ = await make_client()
    r = await (
        client.post(path, content=body) if isinstance(body, bytes) else client.post(path, json=body)
    )
    assert r.status_code == status
    assert fragment in r.json()["error"]
    assert r.headers["x-modeldeploy-track"] == "canary"
    # The server keeps serving afterwards.
    ok = await client.post("/v1/models/iris:predict", json={"instances": [ROW]})
    assert ok.json() == {"predictions": [0]}


async def test_the_version_is_a_path_segment_only(make_client: Factory) -> None:
    # As in the OIP (and KServe): no `?version=` on any route, so none is read or documented.
    client, _ = await make_client()
    for path in ("/v2/models/iris", "/v2/models/iris/ready"):
        assert (await client.get(path, params={"version": "v9"})).status_code == 200
        assert (await client.get(path.replace("iris", "iris/versions/v9"))).status_code == 404
    r = await client.post("/v2/models/iris/infer?version=v9", json=v2_body(ROW, [1, 4]))
    assert r.status_code == 200


async def test_a_request_after_the_dataplane_stopped_is_a_503(make_client: Factory) -> None:
    client, dp = await make_client()
    await dp.stop()  # as at shutdown: the batcher is gone
    r = await client.post("/v1/models/iris:predict", json={"instances": [ROW]})
    assert r.status_code == 503
    assert "shutting down" in r.json()["error"]


async def test_nan_is_refused_only_when_the_model_cannot_take_it(make_client: Factory) -> None:
    client, _ = await make_client("logreg")
    r = await client.post("/v1/models/iris:predict", json={"instances": [[5.1, None, 1.4, 0.2]]})
    assert r.status_code == 400
    assert "missing value (null/NaN) at [0, 1]" in r.json()["error"]
    forest, _ = await make_client("forest")
    r = await forest.post("/v1/models/iris:predict", json={"instances": [[5.1, None, 1.4, 0.2]]})
    assert r.status_code == 200


async def test_proba_on_a_regressor_is_refused(make_client: Factory) -> None:
    client, _ = await make_client("regressor")
    body = v2_body([1.0, 2.0, 3.0], [1, 3], outputs=[{"name": "probabilities"}])
    r = await client.post("/v2/models/iris/infer", json=body)
    assert r.status_code == 400
    assert "LinearRegression does not offer" in r.json()["error"]
    r = await client.post("/v2/models/iris/infer", json=v2_body([1.0, 2.0, 3.0], [1, 3]))
    assert r.json()["outputs"][0]["datatype"] == "FP64"


async def test_malformed_json_names_the_position(make_client: Factory) -> None:
    client, _ = await make_client()
    r = await client.post("/v1/models/iris:predict", content=b'{"instances": [[1, 2,')
    assert r.status_code == 400
    assert r.json()["error"].startswith("malformed JSON")


async def test_body_limit_by_content_length(make_client: Factory) -> None:
    client, dp = await make_client(max_body_bytes=2048)
    r = await client.post("/v1/models/iris:predict", json={"instances": [ROW] * 200})
    assert r.status_code == 413
    assert "2048-byte limit" in r.json()["error"]
    assert r.headers["x-modeldeploy-track"] == "canary"
    assert dp.metrics.errors.labels("payload_too_large")._value.get() == 1


async def test_body_limit_without_content_length(make_client: Factory) -> None:
    client, _ = await make_client(max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"instances": ['
        for _ in range(200):
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    r = await client.post("/v1/models/iris:predict", content=chunks())
    assert r.status_code == 413


async def test_unknown_path_and_method_are_json(make_client: Factory) -> None:
    client, _ = await make_client()
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found"}
    assert r.headers["x-modeldeploy-track"] == "canary"
    r = await client.get("/v1/models/iris:predict")
    assert r.status_code == 405
    assert r.json() == {"error": "Method Not Allowed"}
    assert r.headers["allow"] == "POST"
    assert r.headers["x-modeldeploy-track"] == "canary"
    r = await client.post("/v1/models/iris:explain")
    assert r.status_code == 501


async def test_concurrent_requests_are_answered_individually(make_client: Factory) -> None:
    client, dp = await make_client()
    rows = [ROW, ROW2] * 20
    responses = await asyncio.gather(
        *(client.post("/v1/models/iris:predict", json={"instances": [r]}) for r in rows)
    )
    assert [resp.json()["predictions"][0] for resp in responses] == [0, 2] * 20
    assert dp.metrics.batch_rows._sum.get() == 40  # every row went through the model once


async def test_metrics_exposition(make_client: Factory) -> None:
    client, _ = await make_client()
    await client.post("/v1/models/iris:predict", json={"instances": [ROW, ROW, ROW2]})
    await client.post("/v1/models/iris:predict", json={"instances": [[1]]})
    text = (await client.get("/metrics")).text
    assert (
        'modeldeploy_requests_total{endpoint="/v1/models/{name}:predict",protocol="v1",'
        'status="200"} 1.0' in text
    )
    assert 'modeldeploy_errors_total{reason="invalid_input"} 1.0' in text
    assert 'modeldeploy_predicted_class_total{class="0"} 2.0' in text
    assert 'modeldeploy_predicted_class_total{class="2"} 1.0' in text
    assert "modeldeploy_request_duration_seconds_bucket" in text
    assert "modeldeploy_batch_rows_bucket" in text
    assert (
        'modeldeploy_model_info{estimator="sklearn.ensemble._forest.RandomForestClassifier"' in text
    )
    assert 'track="canary"' in text
    assert 'uri="s3://models/iris/"' in text
    assert "modeldeploy_model_load_seconds" in text
    assert "modeldeploy_model_ready 1.0" in text


async def test_openapi_documents_the_raw_bodies(make_client: Factory) -> None:
    client, _ = await make_client()
    spec = (await client.get("/openapi.json")).json()
    predict = spec["paths"]["/v1/models/{name}:predict"]["post"]
    ref = predict["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/V1PredictRequest"
    assert "V2InferRequest" in spec["components"]["schemas"]
    assert "V2Tensor" in spec["components"]["schemas"]
    assert "/v2/models/{name}/versions/{version}/infer" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


class _Failing:
    """Stands in for a model with a bug: predict raises, or returns what JSON can't hold."""

    def __init__(self, output: Any = None, error: Exception | None = None) -> None:
        self.output, self.error = output, error

    def predict(self, x: Any) -> Any:
        if self.error is not None:
            raise self.error
        return np.array([self.output] * len(x), dtype=object)


async def test_a_model_that_raises_answers_500_with_the_reason(make_client: Factory) -> None:
    client, dp = await make_client(estimator=_Failing(error=RuntimeError("boom")))
    for path, body in (
        ("/v1/models/iris:predict", {"instances": [ROW]}),
        ("/v2/models/iris/infer", v2_body(ROW, [1, 4])),
    ):
        r = await client.post(path, json=body)
        assert r.status_code == 500, r.text
        assert r.json() == {"error": "inference failed: RuntimeError: boom"}
    errors = dp.metrics.registry.get_sample_value(
        "modeldeploy_errors_total", {"reason": "inference_error"}
    )
    assert errors == 2.0
    assert (await client.get("/healthz")).status_code == 200  # and the server keeps serving


async def test_output_json_cannot_hold_is_named(make_client: Factory) -> None:
    client, _ = await make_client(estimator=_Failing(output=Decimal("1.5")))
    r = await client.post("/v1/models/iris:predict", json={"instances": [ROW]})
    assert r.status_code == 500
    assert r.json()["error"].startswith(
        "the model's output cannot be written as JSON (Type is not JSON serializable: "
        "decimal.Decimal)"
    )
    # V2 has a type for it: other objects are BYTES, written as their str().
    r = await client.post("/v2/models/iris/infer", json=v2_body(ROW, [1, 4]))
    assert r.status_code == 200
    assert r.json()["outputs"][0]["datatype"] == "BYTES"
    assert r.json()["outputs"][0]["data"] == ["1.5"]


async def test_the_served_and_the_documented_inference_routes_are_one_table(
    make_client: Factory,
) -> None:
    assert sorted(r.template for r in INFERENCE_ROUTES) == [
        "/v1/models/{name}:predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ]
    versioned = next(r for r in INFERENCE_ROUTES if "versions" in r.template)
    match = versioned.pattern.match("/v2/models/iris/versions/v1/infer")
    assert match is not None
    assert versioned.protocol == "v2"
    assert match.groupdict() == {"name": "iris", "version": "v1"}
    assert versioned.pattern.match("/v2/models/iris/versions/v1/infer/extra") is None
    assert versioned.pattern.match("/v2/models/ir/is/versions/v1/infer") is None
    client, dp = await make_client()
    spec = (await client.get("/openapi.json")).json()
    for route in INFERENCE_ROUTES:
        post = spec["paths"][route.template]["post"]
        assert [p["name"] for p in post["parameters"] if p["in"] == "path"] == list(route.params)
        # V2 documents the binary tensor data extension's header (and nothing in the query).
        assert [p["name"] for p in post["parameters"] if p["in"] != "path"] == (
            ["Inference-Header-Content-Length"] if route.protocol == "v2" else []
        )
        assert set(post["responses"]) >= {"200", "400", "404", "413", "503"}
    # FastAPI serves none of them: inference has one implementation, in ServingApp.
    fastapi = create_app(dp).app
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fastapi), base_url="http://t"
    ) as inner:
        assert (await inner.get("/v1/models/iris")).status_code == 200
        for path in ("/v1/models/iris:predict", "/v2/models/iris/infer"):
            r = await inner.post(path, json={"instances": [ROW]})
            assert r.status_code in (404, 405), path


async def test_requests_are_counted_by_route_template(make_client: Factory) -> None:
    client, dp = await make_client()
    await client.post("/v2/models/iris/versions/v1/infer", json=v2_body(ROW, [1, 4]))
    await client.get("/v2/models/iris")
    await client.get("/nope")
    sample = dp.metrics.registry.get_sample_value
    assert (
        sample(
            "modeldeploy_requests_total",
            {
                "endpoint": "/v2/models/{name}/versions/{version}/infer",
                "protocol": "v2",
                "status": "200",
            },
        )
        == 1.0
    )
    assert (
        sample(
            "modeldeploy_requests_total",
            {"endpoint": "/v2/models/{name}", "protocol": "v2", "status": "200"},
        )
        == 1.0
    )
    assert (
        sample(
            "modeldeploy_requests_total",
            {"endpoint": "unmatched", "protocol": "http", "status": "404"},
        )
        == 1.0
    )
