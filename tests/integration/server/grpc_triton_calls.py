"""``tritonclient.grpc`` against a running server, in a process of its own; prints what it saw as
one JSON object. Run by test_server_grpc_clients.py as ``python grpc_triton_calls.py HOST:PORT``.

Why a process of its own: tritonclient.grpc's generated code registers the OIP messages
(``inference.ModelInferRequest``...) under its proto file ``grpc_service.proto``, kserve's under
``grpc_predict_v2.proto``, and protobuf refuses one message name from two files in one process.
kserve is imported by the pytest process (the REST client tests), so tritonclient.grpc can't be.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import tritonclient.grpc as triton
from sklearn.datasets import load_iris
from tritonclient.utils import InferenceServerException

X = load_iris(return_X_y=True)[0][[0, 60, 120, 149]]


def failure(call: Any) -> list[str]:
    try:
        call()
    except InferenceServerException as exc:
        return [str(exc.status()), str(exc.message())]
    return ["no error", ""]


def main(url: str) -> None:
    client = triton.InferenceServerClient(url)  # the client's defaults
    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("iris"),
        "server": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata("iris", as_json=True),
    }
    inp = triton.InferInput("input-0", list(X.shape), "FP64")
    inp.set_data_from_numpy(X)
    plain = client.infer("iris", [inp])
    seen["labels"] = plain.as_numpy("output-0").tolist()
    outputs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("predict")]
    both = client.infer("iris", [inp], outputs=outputs, request_id="req-1")
    seen["proba"] = both.as_numpy("probabilities").tolist()
    seen["predict"] = both.as_numpy("predict").tolist()
    seen["response"] = both.get_response(as_json=True)

    seen["unknown_model"] = failure(lambda: client.infer("rose", [inp]))
    seen["unknown_model_ready"] = failure(lambda: client.is_model_ready("rose"))
    narrow = triton.InferInput("input-0", [1, 3], "FP64")
    narrow.set_data_from_numpy(X[:1, :3].copy())
    seen["bad_shape"] = failure(lambda: client.infer("iris", [narrow]))
    client.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
