"""The Open Inference Protocol's gRPC service of the real server process, through the real clients
at their default settings: ``tritonclient.grpc`` (in a process of its own, grpc_triton_calls.py,
for the reason given there) and KServe's async ``InferenceGRPCClient``, each call written the way
the clients' own docs write it and the answers compared with the model's own predictions. Also:
spec.auth on the gRPC port, SIGTERM draining calls in flight, and a taken port ending the start.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import httpx
import joblib
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.infer_type import RequestedOutput
from server_stores import free_port
from sklearn.datasets import load_iris

pytestmark = pytest.mark.integration

X = load_iris(return_X_y=True)[0][[0, 60, 120, 149]]  # one row of each class, and one more
TRITON_CALLS = Path(__file__).with_name("grpc_triton_calls.py")


def serve(start_server: Any, tmp_path: Path, artifact: bytes, **env: str) -> tuple[Any, str]:
    path = tmp_path / "model.joblib"
    path.write_bytes(artifact)
    port = free_port()
    proc = start_server(str(path), GRPC_PORT=str(port), **env)
    proc.wait_ready()
    return proc, f"127.0.0.1:{port}"


def infer_input(x: np.ndarray[Any, Any]) -> InferInput:
    inp = InferInput(name="input-0", shape=list(x.shape), datatype="FP64")
    inp.set_data_from_numpy(x)  # binary_data=True, the default: raw_input_contents
    return inp


def test_tritonclient_grpc(start_server: Any, tmp_path: Path, artifacts: dict[str, bytes]) -> None:
    _, url = serve(start_server, tmp_path, artifacts["joblib"])
    model = joblib.load(tmp_path / "model.joblib")
    run = subprocess.run(
        [sys.executable, str(TRITON_CALLS), url], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["server"]["name"] == "modeldeploy-server"
    meta = seen["metadata"]
    assert (meta["name"], meta["versions"], meta["platform"]) == ("iris", ["canary"], "sklearn")
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": ["-1", "4"]}]
    assert seen["labels"] == model.predict(X).tolist()
    np.testing.assert_allclose(seen["proba"], model.predict_proba(X))
    assert seen["predict"] == model.predict(X).tolist()  # an alias, answered under its name
    response = seen["response"]
    assert response["id"] == "req-1"
    assert [o["name"] for o in response["outputs"]] == ["probabilities", "predict"]
    assert len(response["raw_output_contents"]) == 2  # raw, as Triton answers
    assert seen["unknown_model"] == [
        "StatusCode.NOT_FOUND",
        "model 'rose' does not exist; this server serves 'iris'",
    ]
    assert seen["unknown_model_ready"][0] == "StatusCode.NOT_FOUND"
    assert seen["bad_shape"] == [
        "StatusCode.INVALID_ARGUMENT",
        "inputs[0] (input-0) has shape [1, 3] but the model expects shape [N, 4] (4 features per "
        "row, got 3)",
    ]


def test_kserve_grpc_client_then_sigterm_drains_calls_in_flight(
    start_server: Any, tmp_path: Path, artifacts: dict[str, bytes]
) -> None:
    proc, url = serve(start_server, tmp_path, artifacts["joblib"])
    model = joblib.load(tmp_path / "model.joblib")
    big = np.random.default_rng(0).uniform(0, 8, size=(150_000, 4))  # 4.8 MB, a few ms of predict

    async def calls() -> tuple[list[str], str]:
        async with InferenceGRPCClient(url) as client:  # the client's defaults
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert await client.is_model_ready("iris")
            request = InferRequest(
                model_name="iris",
                infer_inputs=[infer_input(X)],
                request_id="req-1",
                request_outputs=[RequestedOutput("output-0"), RequestedOutput("probabilities")],
            )
            result = await client.infer(request)
            assert (result.id, result.model_name, result.model_version) == (
                "req-1",
                "iris",
                "canary",
            )
            by_name = {o.name: o for o in result.outputs}
            assert by_name["output-0"].datatype == "INT64"
            np.testing.assert_array_equal(by_name["output-0"].as_numpy(), model.predict(X))
            np.testing.assert_allclose(by_name["probabilities"].as_numpy(), model.predict_proba(X))

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.infer(InferRequest(model_name="rose", infer_inputs=[infer_input(X)]))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            narrow = InferRequest(model_name="iris", infer_inputs=[infer_input(X[:, :3].copy())])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.infer(narrow)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("inputs[0] (input-0) has shape [4, 3]")

            # SIGTERM once the DataPlane has taken one of several calls (each its own batch, run
            # one after the other): the ones it has are answered, later ones refused, exit 0.
            async def one() -> str:
                req = InferRequest(model_name="iris", infer_inputs=[infer_input(big)])
                try:
                    await client.infer(req)
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name
                return "OK"

            taken = await rows_requests(proc.url)
            flight = [asyncio.create_task(one()) for _ in range(4)]
            for _ in range(6000):  # a minute at most
                if await rows_requests(proc.url) > taken:
                    break
                await asyncio.sleep(0.01)
            proc.popen.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*flight)
            await asyncio.to_thread(proc.popen.wait, 60)
            return codes, await one()

    codes, after = asyncio.run(calls())
    assert "OK" in codes, codes
    # Never cut off half way (INTERNAL, UNKNOWN). A call that reached the server but was not yet
    # handed to the service when it stopped is refused: UNAVAILABLE, or CANCELLED by grpc's core
    # (grpc/grpc#41785, docs/server.md "gRPC").
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, codes
    assert after == "UNAVAILABLE"
    assert proc.popen.returncode == 0, proc.output()


async def rows_requests(url: str) -> float:
    """How many inference requests the DataPlane has taken so far (REST's /metrics)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    line = next(ln for ln in text.splitlines() if ln.startswith("modeldeploy_request_rows_count"))
    return float(line.split()[-1])


def test_with_auth_a_call_without_a_token_is_unauthenticated(
    start_server: Any, tmp_path: Path, artifacts: dict[str, bytes]
) -> None:
    token = tmp_path / "sa-token"
    token.write_text("server-token")
    _, url = serve(
        start_server,
        tmp_path,
        artifacts["joblib"],
        AUTH_ENABLED="true",
        MODEL_NAMESPACE="team",
        AUTH_API_SERVER=f"http://127.0.0.1:{free_port()}",  # nothing listens: fail closed
        AUTH_TOKEN_FILE=str(token),
        AUTH_CA_FILE="",
    )

    async def calls() -> None:
        async with InferenceGRPCClient(url) as client:
            assert await client.is_server_live()  # open, like REST's /v2/health/*
            assert await client.is_server_ready()
            request = InferRequest(model_name="iris", infer_inputs=[infer_input(X)])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.infer(request)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert err.value.details().startswith(
                "missing bearer token: this model requires `Authorization: Bearer <token>`"
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.is_model_ready("iris")
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.infer(request, headers=[("authorization", "Bearer abc")])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # no review, no answer

    asyncio.run(calls())


def test_a_grpc_port_in_use_ends_the_start_with_a_termination_message(start_server: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_server("file:///nonexistent/model.joblib", GRPC_PORT=str(port))
        assert proc.popen.wait(timeout=60) != 0
    message = proc.termination_log.read_text()
    assert message == (
        f"could not listen on 127.0.0.1:{port} for gRPC (GRPC_PORT); is the port in use? "
        "(GRPC_PORT=0 turns the gRPC service off)"
    )
