"""The real REST clients users call the server with, at their default settings, over real HTTP.

``tritonclient.http`` and KServe's ``InferenceRESTClient`` send V2 tensors with the binary tensor
data extension unless told otherwise (``set_data_from_numpy`` defaults to ``binary_data=True``;
tritonclient asks for binary outputs too), so these tests are the contract that "Triton's and
KServe's clients work unchanged": each call is written the way the clients' own docs write it,
and the answers are compared with the model's own predictions.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from sklearn.datasets import load_iris
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

X = load_iris(return_X_y=True)[0][[0, 60, 120, 149]]  # one row of each class, and one more


@pytest.fixture
def served(start_server: Any, tmp_path: Path, artifacts: dict[str, bytes]) -> tuple[Any, Any]:
    path = tmp_path / "model.joblib"
    path.write_bytes(artifacts["joblib"])
    proc = start_server(str(path))
    proc.wait_ready()
    return proc, joblib.load(path)


def test_tritonclient_http_defaults_send_and_receive_binary(served: tuple[Any, Any]) -> None:
    proc, model = served
    client = triton.InferenceServerClient(url=proc.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_model_ready("iris")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.get_model_metadata("iris")["inputs"][0]["datatype"] == "FP64"

    inp = triton.InferInput("input-0", list(X.shape), "FP64")
    inp.set_data_from_numpy(X)  # binary_data=True: the client's default
    result = client.infer("iris", [inp])
    np.testing.assert_array_equal(result.as_numpy("output-0"), model.predict(X))
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 8 * len(X)

    # Requested outputs are binary by default too; FP32 input is converted like JSON FP32 is.
    inp32 = triton.InferInput("input-0", list(X.shape), "FP32")
    inp32.set_data_from_numpy(X.astype(np.float32))
    outputs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("predict")]
    result = client.infer("iris", [inp32], outputs=outputs)
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), model.predict_proba(X.astype(np.float32)), rtol=1e-6
    )
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(X))


def test_tritonclient_http_mixed_json_and_binary(served: tuple[Any, Any]) -> None:
    proc, model = served
    client = triton.InferenceServerClient(url=proc.url.removeprefix("http://"))
    # One tensor per feature column, half of them as JSON: the framing takes only the binary ones.
    inputs = []
    for j in range(4):
        col = triton.InferInput(f"f{j}", [len(X)], "FP64")
        col.set_data_from_numpy(X[:, j], binary_data=j % 2 == 0)
        inputs.append(col)
    json_out = triton.InferRequestedOutput("output-0", binary_data=False)
    result = client.infer("iris", inputs, outputs=[json_out])
    assert "data" in result.get_response()["outputs"][0]  # asked for JSON, got JSON
    np.testing.assert_array_equal(result.as_numpy("output-0"), model.predict(X))


def test_tritonclient_http_bad_input_is_a_400_naming_it(served: tuple[Any, Any]) -> None:
    proc, _ = served
    client = triton.InferenceServerClient(url=proc.url.removeprefix("http://"))
    inp = triton.InferInput("input-0", [1, 3], "FP64")
    inp.set_data_from_numpy(np.ones((1, 3)))
    with pytest.raises(InferenceServerException, match="4 features") as info:
        client.infer("iris", [inp])
    assert info.value.status() == "400"


def test_a_body_whose_framing_does_not_add_up_says_so(served: tuple[Any, Any]) -> None:
    proc, _ = served
    header = (
        b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64",'
        b'"parameters":{"binary_data_size":32}}]}'
    )
    url = f"{proc.url}/v2/models/iris/infer"
    short = httpx.post(
        url,
        content=header + b"\0" * 24,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400
    assert "inputs[0]" in short.json()["error"]
    assert "24 bytes" in short.json()["error"]
    # Binary bytes without the header: neither valid JSON nor a framing, and the answer says both.
    bare = httpx.post(url, content=header + np.ones(4).tobytes())
    assert bare.status_code == 400
    assert "Inference-Header-Content-Length" in bare.json()["error"]


def test_kserve_rest_client_v2_binary_and_v1(served: tuple[Any, Any]) -> None:
    proc, model = served

    async def calls() -> tuple[Any, Any, Any]:
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        inp = InferInput(name="input-0", shape=list(X.shape), datatype="FP64")
        inp.set_data_from_numpy(X)  # binary_data=True by default
        plain = await v2.infer(proc.url, InferRequest("iris", infer_inputs=[inp]), "iris")
        inp2 = InferInput(name="input-0", shape=list(X.shape), datatype="FP64")
        inp2.set_data_from_numpy(X)
        wanted = [RequestedOutput("probabilities", parameters={"binary_data": True})]
        proba = await v2.infer(
            proc.url, InferRequest("iris", infer_inputs=[inp2], request_outputs=wanted), "iris"
        )
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        legacy = await v1.infer(proc.url, {"instances": X.tolist()}, "iris")
        return plain, proba, legacy

    plain, proba, legacy = asyncio.run(calls())
    np.testing.assert_array_equal(plain.outputs[0].as_numpy(), model.predict(X))
    assert proba.outputs[0].name == "probabilities"
    np.testing.assert_allclose(proba.outputs[0].as_numpy(), model.predict_proba(X))
    assert legacy == {"predictions": model.predict(X).tolist()}
