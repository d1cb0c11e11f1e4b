"""Bad input never gets a 5xx: the server fuzzed from its own OpenAPI document, and hostile bodies.

The promise is that whatever a caller sends, a loaded and ready model's server answers a 4xx that
names what is wrong (``{"error": "..."}``, short, quoting the input only truncated); a 500 is left
for a model that fails on input it accepted. Three layers check it, each bounded in time and
reproducible (hypothesis derandomized, no example database, a deadline per example):

- schemathesis generates requests for every operation of ``/openapi.json`` (its examples, its
  coverage phase, then fuzzing, each with schema-valid and schema-invalid data), sends them
  in-process and runs its conformance checks plus the error contract;
- a hand-written list of hostile V1 and V2 bodies (nesting a thousand deep, shapes numpy can't
  make, values of the wrong JSON type, framings that don't add up...) each expecting a 400 whose
  error names the field;
- hypothesis properties: a hostile JSON value (or one nested a thousand deep) spliced into one
  field of a valid body is answered 200 or a 400 naming that field; a binary-tensor body of any
  shape, size and framing is answered 200 or 400.

``FUZZ_EXAMPLES`` (default 60) sets schemathesis's fuzzing examples per operation; the property
tests run five times as many. Raise it to fuzz longer locally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from modeldeploy_server.app import create_app
from modeldeploy_server.dataplane import DataPlane, ServingInfo
from modeldeploy_server.datatypes import V2_DTYPES
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

Factory = Callable[..., Any]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
INFO = ServingInfo(name="iris", version="v1", track="canary", storage_uri="s3://m/", sha256="")
PATH_PARAMETERS = {"name": "iris", "version": "v1"}
MAX_BODY = 1 << 20
ERROR_LIMIT = 500  # characters: no error message grows with the input
ROW = [5.1, 3.5, 1.4, 0.2]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
V1 = "/v1/models/iris:predict"
V2 = "/v2/models/iris/infer"
V2_VERSIONED = "/v2/models/iris/versions/v1/infer"

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=2),  # one request; far over what any takes (a few ms)
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def assert_error_contract(status: int, content_type: str | None, body: bytes) -> None:
    """No 5xx; a 4xx is JSON ``{"error": "<a short message>"}``."""
    assert status < 500, body[:500]
    if status >= 400:
        assert content_type == "application/json", (status, content_type)
        doc = orjson.loads(body)
        assert isinstance(doc, dict), doc
        assert set(doc) == {"error"}, doc
        assert isinstance(doc["error"], str)
        assert 0 < len(doc["error"]) < ERROR_LIMIT, doc["error"][:ERROR_LIMIT]


def with_model(dp: DataPlane, model_file: Path) -> ASGIApp:
    """The app, installing the model whenever its lifespan starts: on the event loop that then
    serves it (the batcher's task lives there), before the first request. (schemathesis ends
    the lifespan after each test, and the app's shutdown stops the DataPlane.)"""
    app = create_app(dp, max_body_bytes=MAX_BODY)
    runtime = load_sklearn_runtime(model_file, "sklearn")

    async def serve(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await dp.set_ready(runtime, "ab" * 32)
        await app(scope, receive, send)

    return serve


# ---- schemathesis, from the OpenAPI document ----------------------------------------------


def openapi_document() -> dict[str, Any]:
    """What ``/openapi.json`` serves for a model named iris (whichever model it is: the document
    names it but does not describe it), built without one so the schema exists at collection."""
    return create_app(DataPlane(INFO, Metrics())).app.openapi()


# Every phase but the stateful one: the documented examples, the coverage phase (each property
# at its boundaries, missing, of the wrong type, other HTTP methods), then fuzzing, in both
# modes (positive: what the document allows; negative: what it does not). Only the model's name
# and version are fixed: a request for another model is a 404 whatever its body.
CONFIG = SchemathesisConfig.from_dict(
    {
        "parameters": {f"path.{k}": v for k, v in PATH_PARAMETERS.items()},
        "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True},
        "phases": {"stateful": {"enabled": False}},
    }
)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,  # what the document refuses, the server refuses
]


@pytest.fixture(scope="module")
def fuzzed_app(model_files: dict[str, Path]) -> ASGIApp:
    return with_model(DataPlane(INFO, Metrics(), max_wait_s=0.0), model_files["forest"])


@pytest.mark.anyio
async def test_the_openapi_document_is_the_served_one_and_valid(make_client: Factory) -> None:
    client, _ = await make_client()
    assert (await client.get("/openapi.json")).json() == openapi_document()
    ops = [result.ok() for result in SCHEMA.get_all_operations()]  # .ok() raises if invalid
    assert len(ops) == sum(len(item) for item in openapi_document()["paths"].values())
    # The version is a path segment, never a query parameter (KServe and the OIP have none).
    assert all(p.location != "query" for op in ops for p in op.iter_parameters())


@pytest.mark.timeout(60)
@SCHEMA.parametrize()
@settings(FUZZ_SETTINGS)
def test_no_5xx_for_what_the_openapi_document_allows_and_what_it_does_not(
    case: Any, fuzzed_app: ASGIApp
) -> None:
    response = case.call(app=fuzzed_app)
    case.validate_response(response, checks=CHECKS)
    content_type = response.headers.get("content-type", [None])[0]  # values are lists
    assert_error_contract(response.status_code, content_type, response.content)


# ---- hand-written hostile bodies ----------------------------------------------------------

DEEP = "[" * 1000 + "1" + "]" * 1000  # under orjson's 1024 levels: it parses, then what?
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
TOO_DEEP = "[" * 2000 + "]" * 2000  # over orjson's limit: malformed JSON
HUGE = "x" * 100_000


def v1(instances: Any) -> str:
    return json.dumps({"instances": instances})


def v2(*, doc: dict[str, Any] | None = None, **tensor: Any) -> str:
    t = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW, **tensor}
    return json.dumps({"inputs": [t], **(doc or {})})


def spliced(body: str, text: str) -> str:
    """``body`` with its one null replaced by ``text``: bodies json.dumps won't write."""
    assert body.count("null") == 1
    return body.replace("null", text)


def framed(shape: list[int], datatype: str, blob: bytes) -> tuple[bytes, dict[str, str]]:
    """One binary input: the body and the header that frames it."""
    tensor = {"name": "x", "shape": shape, "datatype": datatype}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}]})
    return header.encode() + blob, {"inference-header-content-length": str(len(header))}


V1_HOSTILE = [
    pytest.param(b"", "empty", id="empty body"),
    pytest.param(b" \n\t", "malformed JSON", id="whitespace body"),
    pytest.param(b'{"instances": [["\xff\xfe"]]}', "malformed JSON", id="not UTF-8"),
    pytest.param(b"\xef\xbb\xbf" + v1([ROW]).encode(), "malformed JSON", id="UTF-8 BOM"),
    pytest.param("[1, 2]", "JSON object", id="array body"),
    pytest.param("3", "JSON object", id="number body"),
    pytest.param('"instances"', "JSON object", id="string body"),
    pytest.param("null", "JSON object", id="null body"),
    pytest.param(TOO_DEEP, "malformed JSON", id="nested past the parser's limit"),
    pytest.param('{"instances": ' + DEEP + "}", 'field "instances"', id="instances 1000 deep"),
    pytest.param('{"instances": [' + DEEP + "]}", 'field "instances"', id="a row 1000 deep"),
    pytest.param('{"inputs": ' + DEEP + "}", 'field "instances"', id="kserve inputs 1000 deep"),
    pytest.param(v1([[[1]] * 4]), 'field "instances"', id="3-d rows"),
    pytest.param(
        '{"instances": ' + "[" * 65 + "1" + "]" * 65 + "}", 'field "instances"', id="65-d"
    ),
    pytest.param(spliced(v1([[None, 1, 2, 3]]), "NaN"), "malformed JSON", id="NaN literal"),
    pytest.param(spliced(v1([[None, 1, 2, 3]]), "-Infinity"), "malformed JSON", id="-Infinity"),
    pytest.param(spliced(v1([[None, 1, 2, 3]]), "1e400"), "malformed JSON", id="1e400"),
    pytest.param(v1([[HUGE, 1, 2, 3]]), 'field "instances"', id="a huge string"),
    pytest.param(v1([["a", "b", "c", "d"]]), 'field "instances"', id="strings"),
    pytest.param(v1([[1, "b", None, True]]), 'field "instances"', id="mixed-type row"),
    pytest.param(v1([[{"a": 1}, 2, 3, 4]]), 'field "instances"', id="an object in a row"),
    pytest.param(v1([[1, 2, 3, 4], [1, 2]]), 'field "instances"', id="ragged rows"),
    pytest.param(v1([[1, 2, 3, 4], 5]), 'field "instances"', id="a row and a number"),
    pytest.param(v1([ROW, {"a": 1}]), 'field "instances"', id="lists and objects"),
    pytest.param(v1([{"a": 1}]), "instances", id="objects for a model without names"),
    pytest.param(v1([[1, 2, 3]]), 'field "instances"', id="3 features of 4"),
    pytest.param(v1(ROW), 'field "instances"', id="a bare row"),
    pytest.param(v1([]), 'field "instances"', id="no rows"),
    pytest.param(v1([[]]), 'field "instances"', id="an empty row"),
    pytest.param(v1("abc"), 'field "instances"', id="a string"),
    pytest.param(v1({"a": [1]}), 'field "instances"', id="an object"),
    pytest.param('{"rows": [[1]]}', 'field "instances"', id="no instances"),
    pytest.param('{"instances": [[1,2,3,4]], "instances": 5}', 'field "instances"', id="dup key"),
]

NAMED_HOSTILE = [
    pytest.param([{"sepal_length": 1}], "instances[0]", id="missing features"),
    pytest.param([{**dict.fromkeys(FEATURES, 1), "extra": 1}], "instances[0]", id="unknown"),
    pytest.param([dict.fromkeys(FEATURES, 1), {}], "instances[1]", id="the second row empty"),
    pytest.param([{f"k{i}": 1 for i in range(3000)}], "instances[0]", id="3000 keys"),
    pytest.param([{HUGE: 1}], "instances[0]", id="a huge key"),
    pytest.param([{"": 1, "é": 2, "💥": 3, " ": 4}], "instances[0]", id="odd keys"),
    pytest.param(
        [{**dict.fromkeys(FEATURES, 1), "sepal_width": {"a": 1}}],
        'field "instances"',
        id="an object as a value",
    ),
    pytest.param(
        [{**dict.fromkeys(FEATURES, 1), "sepal_width": "x" * 10_000}],
        'field "instances"',
        id="a huge string as a value",
    ),
]

V2_HOSTILE = [
    pytest.param(b"", None, "empty", id="empty body"),
    pytest.param("[]", None, "JSON object", id="array body"),
    pytest.param("1", None, "JSON object", id="number body"),
    pytest.param(TOO_DEEP, None, "malformed JSON", id="nested past the parser's limit"),
    pytest.param(spliced(v2(data=None), DEEP), None, "inputs[0]", id="data 1000 deep"),
    pytest.param(spliced(v2(shape=None), DEEP), None, "inputs[0]", id="shape 1000 deep"),
    pytest.param(spliced(v2(name=None), DEEP), None, "inputs[0]", id="name 1000 deep"),
    pytest.param(spliced(v2(datatype=None), DEEP), None, "inputs[0]", id="datatype 1000 deep"),
    pytest.param(spliced(v2(parameters=None), DEEP_OBJECT), None, "inputs[0]", id="params deep"),
    pytest.param(spliced(v2(doc={"id": None}), DEEP), None, 'field "id"', id="id 1000 deep"),
    pytest.param(
        spliced(v2(doc={"parameters": None}), DEEP_OBJECT),
        None,
        "parameters.a",
        id="request parameters 1000 deep",
    ),
    pytest.param(spliced(v2(doc={"outputs": None}), DEEP), None, "outputs", id="outputs deep"),
    pytest.param(
        spliced(v2(doc={"outputs": [{"name": None}]}), DEEP), None, "outputs[0]", id="name deep"
    ),
    pytest.param(
        spliced(v2(doc={"outputs": [{"name": "predict", "parameters": None}]}), DEEP_OBJECT),
        None,
        "outputs[0]",
        id="output parameters 1000 deep",
    ),
    pytest.param(spliced(v2(data=[1, 2, 3, None]), "NaN"), None, "malformed JSON", id="NaN"),
    pytest.param(spliced(v2(data=[1, 2, 3, None]), "Infinity"), None, "malformed", id="Infinity"),
    pytest.param(v2(shape=[1] * 65, data=[1]), None, "inputs[0]", id="65 dimensions"),
    pytest.param(v2(shape=[1] * 33, data=[1]), None, "inputs[0]", id="33 dimensions"),
    pytest.param(v2(shape=[1] * 10_000, data=[1]), None, "inputs[0]", id="10000 dimensions"),
    pytest.param(v2(shape=[2**40, 2**40]), None, "inputs[0]", id="[2**40, 2**40]"),
    pytest.param(v2(shape=[2**63 + 1]), None, "inputs[0]", id="[2**63 + 1]"),
    pytest.param(v2(shape=[0, 2**62], data=[]), None, "inputs[0]", id="[0, 2**62], empty"),
    pytest.param(v2(shape=[0, 2**20, 2**20, 2**20], data=[]), None, "inputs[0]", id="[0, 2**60]"),
    pytest.param(v2(shape=[-1, 4]), None, "inputs[0]", id="a negative dimension"),
    pytest.param(v2(shape=[1.0, 4]), None, "inputs[0]", id="a float dimension"),
    pytest.param(v2(shape=[True, 4]), None, "inputs[0]", id="a boolean dimension"),
    pytest.param(v2(shape=[]), None, "inputs[0]", id="an empty shape"),
    pytest.param(v2(shape="1,4"), None, "inputs[0]", id="a string shape"),
    pytest.param(v2(shape=[1, 3]), None, "inputs[0]", id="shape and data disagree"),
    pytest.param(v2(data=[HUGE, 1, 2, 3]), None, "inputs[0]", id="a huge string"),
    pytest.param(v2(name=HUGE, shape=[1, 3], data=[1, 2, 3]), None, "inputs[0]", id="huge name"),
    pytest.param(v2(name=5), None, "inputs[0]", id="a number as name"),
    pytest.param(v2(datatype="BYTES"), None, "inputs[0]", id="BYTES with numbers"),
    pytest.param(
        v2(datatype="BYTES", data=[["a"], "b", "c", "d"]), None, "inputs[0]", id="BYTES with a list"
    ),
    pytest.param(
        v2(datatype="BYTES", data=["a", "b", "c", "d"]), None, "inputs[0]", id="BYTES strings"
    ),
    pytest.param(v2(datatype="BOOL", data=["a", "b", "c", "d"]), None, "inputs[0]", id="BOOL str"),
    pytest.param(v2(datatype="BOOL", data=[2, 0, 1, 0]), None, "inputs[0]", id="BOOL 2"),
    pytest.param(v2(datatype="FP16", data=[7e4, 1, 2, 3]), None, "inputs[0]", id="FP16 overflow"),
    pytest.param(v2(datatype="FP32", data=[1e300, 1, 2, 3]), None, "inputs[0]", id="FP32 over"),
    pytest.param(v2(datatype="FP32", data=["1.5", 1, 2, 3]), None, "inputs[0]", id="FP32 str"),
    pytest.param(v2(data=[1, "a", None, True]), None, "inputs[0]", id="mixed types"),
    pytest.param(v2(data=[{"a": 1}, 1, 2, 3]), None, "inputs[0]", id="an object in data"),
    pytest.param(v2(data=[[1, 2], [3]]), None, "inputs[0]", id="ragged data"),
    pytest.param(v2(shape=[1], data={"a": 1}), None, "inputs[0]", id="an object as data"),
    pytest.param(v2(datatype="INT32", data=[1.5, 1, 2, 3]), None, "inputs[0]", id="INT32 1.5"),
    pytest.param(v2(datatype="INT32", data=["1", 1, 2, 3]), None, "inputs[0]", id="INT32 str"),
    pytest.param(v2(datatype="INT8", data=[300, 1, 2, 3]), None, "inputs[0]", id="INT8 300"),
    pytest.param(v2(datatype="UINT64", data=[-1, 1, 2, 3]), None, "inputs[0]", id="UINT64 -1"),
    pytest.param(v2(datatype="INT64", data=[2**63, 1, 2, 3]), None, "inputs[0]", id="INT64 2**63"),
    pytest.param(
        v2(datatype="UINT64", data=[2**64 - 1, 1, 2, -1]),
        None,
        "inputs[0]",
        id="UINT64 2**64-1 beside -1",
    ),
    pytest.param(v2(datatype="fp32"), None, "inputs[0]", id="lower-case datatype"),
    pytest.param(v2(datatype=None), None, "inputs[0]", id="null datatype"),
    pytest.param(v2(datatype="X" * 10_000), None, "inputs[0]", id="a huge datatype"),
    pytest.param(
        json.dumps({"inputs": [{"name": "x", "shape": [1]}]}), None, "inputs[0]", id="no data"
    ),
    pytest.param(json.dumps({"inputs": [5]}), None, "inputs[0]", id="a number as input"),
    pytest.param(json.dumps({"inputs": []}), None, 'field "inputs"', id="no inputs"),
    pytest.param(json.dumps({"inputs": {"name": "x"}}), None, 'field "inputs"', id="an object"),
    pytest.param(json.dumps({"instances": [ROW]}), None, 'field "inputs"', id="a V1 body"),
    pytest.param(v2(doc={"id": 5}), None, 'field "id"', id="a number as id"),
    pytest.param(v2(doc={"id": ["a"]}), None, 'field "id"', id="a list as id"),
    pytest.param(v2(doc={"parameters": [1]}), None, "parameters", id="a list as parameters"),
    pytest.param(
        v2(doc={"parameters": {"binary_data_output": "yes"}}),
        None,
        "parameters.binary_data_output",
        id="binary_data_output a string",
    ),
    pytest.param(v2(parameters=[1]), None, "inputs[0]", id="a list as input parameters"),
    pytest.param(v2(parameters={"binary_data_size": 32}), None, "inputs[0]", id="size, no header"),
    pytest.param(v2(doc={"outputs": {"name": "predict"}}), None, 'field "outputs"', id="an obj"),
    pytest.param(v2(doc={"outputs": [{"name": 5}]}), None, "outputs[0]", id="a number as output"),
    pytest.param(
        v2(doc={"outputs": [{"name": "predict"}, {"name": ["x"]}]}),
        None,
        "outputs[1]",
        id="the second output named by a list",
    ),
    pytest.param(v2(doc={"outputs": [{"name": HUGE}]}), None, "outputs[0]", id="a huge output"),
    pytest.param(
        v2(doc={"outputs": [{"name": "predict", "parameters": {"binary_data": 1}}]}),
        None,
        "outputs[0]",
        id="binary_data a number",
    ),
    pytest.param(
        json.dumps(
            {
                "inputs": [
                    {"name": n, "shape": [2], "datatype": "FP64", "data": [1, 2]}
                    for n in ("a", "b", "c", "a")
                ]
            }
        ),
        None,
        "inputs[3]",
        id="two inputs of one name",
    ),
    pytest.param(
        json.dumps(
            {
                "inputs": [
                    {"name": n, "shape": [k], "datatype": "FP64", "data": [1] * k}
                    for n, k in (("a", 1), ("b", 2), ("c", 1), ("d", 1))
                ]
            }
        ),
        None,
        "inputs[1]",
        id="columns of different lengths",
    ),
    pytest.param(
        *framed([2**40], "BYTES", b"\0" * 4),
        "inputs[0]",
        id="binary BYTES of 2**40 elements in 4 bytes",
    ),
    pytest.param(*framed([0, 2**62], "FP32", b""), "inputs[0]", id="binary [0, 2**62]"),
    pytest.param(*framed([1] * 40, "FP32", b"\0" * 4), "inputs[0]", id="binary 40 dimensions"),
    pytest.param(
        b"{}",
        {"inference-header-content-length": "\xb2"},
        "Inference-Header-Content-Length",
        id="a superscript digit as header length",
    ),
    pytest.param(
        b"{}",
        {"inference-header-content-length": "99"},
        "Inference-Header-Content-Length",
        id="header length over the body",
    ),
]


def _assert_a_400_naming(r: Any, fragment: str) -> None:
    assert_error_contract(r.status_code, r.headers.get("content-type"), r.content)
    assert r.status_code == 400, r.text[:ERROR_LIMIT]
    assert fragment in r.json()["error"], r.json()["error"]


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "fragment"), V1_HOSTILE)
async def test_hostile_v1_bodies_get_a_400_naming_the_field(
    make_client: Factory, body: str | bytes, fragment: str
) -> None:
    client, _ = await make_client(max_body_bytes=MAX_BODY)
    content = body.encode() if isinstance(body, str) else body
    r = await client.post(V1, content=content, headers={"content-type": "application/json"})
    _assert_a_400_naming(r, fragment)


@pytest.mark.anyio
@pytest.mark.parametrize(("records", "fragment"), NAMED_HOSTILE)
async def test_hostile_v1_records_get_a_400_naming_the_row(
    make_client: Factory, records: list[dict[str, Any]], fragment: str
) -> None:
    client, _ = await make_client("named", max_body_bytes=MAX_BODY)
    r = await client.post(V1, content=v1(records).encode())
    _assert_a_400_naming(r, fragment)


@pytest.mark.anyio
@pytest.mark.parametrize("path", [V2, V2_VERSIONED])
@pytest.mark.parametrize(("body", "headers", "fragment"), V2_HOSTILE)
async def test_hostile_v2_bodies_get_a_400_naming_the_field(
    make_client: Factory,
    path: str,
    body: str | bytes,
    headers: dict[str, str] | None,
    fragment: str,
) -> None:
    client, _ = await make_client(max_body_bytes=MAX_BODY)
    content = body.encode() if isinstance(body, str) else body
    # Header values go as latin-1 bytes, as a real client's would ("\xb2" is one byte).
    raw = [(k.encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    r = await client.post(path, content=content, headers=raw)
    _assert_a_400_naming(r, fragment)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", v1([ROW])),
        ("application/x-www-form-urlencoded", "instances=1"),
        ("multipart/form-data; boundary=x", "--x--"),
        ("application/json; charset=latin-1", v1([ROW])),
        ("application/octet-stream", v1([ROW])),
        ("\x00", v1([ROW])),
    ],
)
async def test_the_content_type_is_not_what_decides(
    make_client: Factory, content_type: str, body: str
) -> None:
    """The body is read as JSON whatever the header says (as KServe does): a JSON body is
    served, anything else is a 400, never a 5xx or a 415 the clients don't expect."""
    client, _ = await make_client()
    for path in (V1, V2):
        r = await client.post(
            path, content=body.encode(), headers=[(b"content-type", content_type.encode())]
        )
        assert_error_contract(r.status_code, r.headers.get("content-type"), r.content)
        assert r.status_code in (200, 400)


# ---- properties: a hostile value in any one field, any binary framing ----------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past int64 and uint64 both
    st.floats(),  # with NaN and the infinities, which json.dumps writes as bare words
    st.text(max_size=12),
    st.sampled_from(["", " ", "\x00", "é", "💥", "x" * 5000, "FP32", "BYTES", "probabilities"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)


def _nest(leaf: str, depth: int, objects: bool) -> str:
    """``leaf`` nested ``depth`` deep, written as text (json.dumps would recurse that deep)."""
    if objects:
        return '{"k":' * depth + leaf + "}" * depth
    return "[" * depth + leaf + "]" * depth


HOSTILE = st.one_of(
    _VALUES.map(json.dumps),
    st.builds(_nest, _VALUES.map(json.dumps), st.integers(1, 1100), st.booleans()),
)
_MARK = "\x00hostile\x00"


def _with_hostile(template: Any, text: str) -> bytes:
    body = json.dumps(template)
    marker = json.dumps(_MARK)
    assert body.count(marker) == 1
    return body.replace(marker, text).encode()


def _tensor(**over: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW, **over}


# (template with _MARK where the hostile value goes, what the error must name)
V2_FIELDS: list[tuple[Any, str]] = [
    ({"inputs": _MARK}, "inputs"),
    ({"inputs": [_MARK]}, "inputs[0]"),
    ({"inputs": [_tensor(name=_MARK)]}, "inputs[0]"),
    ({"inputs": [_tensor(shape=_MARK)]}, "inputs[0]"),
    ({"inputs": [_tensor(shape=[1, _MARK])]}, "inputs[0]"),
    ({"inputs": [_tensor(datatype=_MARK)]}, "inputs[0]"),
    ({"inputs": [_tensor(data=_MARK)]}, "inputs[0]"),
    ({"inputs": [_tensor(data=[5.1, 3.5, _MARK, 0.2])]}, "inputs[0]"),
    ({"inputs": [_tensor(datatype="BYTES", data=["a", _MARK, "c", "d"])]}, "inputs[0]"),
    ({"inputs": [_tensor(datatype="INT32", data=[5, 3, _MARK, 0])]}, "inputs[0]"),
    ({"inputs": [_tensor(parameters=_MARK)]}, "inputs[0]"),
    ({"inputs": [_tensor(parameters={"binary_data_size": _MARK})]}, "inputs[0]"),
    ({"inputs": [_tensor(), _MARK]}, "inputs"),
    ({"inputs": [_tensor()], "id": _MARK}, 'field "id"'),
    ({"inputs": [_tensor()], "parameters": _MARK}, "parameters"),
    ({"inputs": [_tensor()], "parameters": {"binary_data_output": _MARK}}, "parameters"),
    ({"inputs": [_tensor()], "parameters": {"content_type": _MARK}}, "parameters"),
    ({"inputs": [_tensor()], "outputs": _MARK}, "outputs"),
    ({"inputs": [_tensor()], "outputs": [_MARK]}, "outputs[0]"),
    ({"inputs": [_tensor()], "outputs": [{"name": _MARK}]}, "outputs[0]"),
    ({"inputs": [_tensor()], "outputs": [{"name": "predict", "parameters": _MARK}]}, "outputs[0]"),
    ({"inputs": [_tensor()], "outputs": [{"name": "predict"}, {"name": _MARK}]}, "outputs[1]"),
]
V1_FIELDS: list[tuple[Any, str]] = [
    ({"instances": _MARK}, "instances"),
    ({"inputs": _MARK}, "instances"),
    ({"instances": [_MARK]}, "instances"),
    ({"instances": [ROW, _MARK]}, "instances"),
    ({"instances": [[5.1, _MARK, 1.4, 0.2]]}, "instances"),
]
NAMED_FIELDS: list[tuple[Any, str]] = [
    ({"instances": [{**dict.fromkeys(FEATURES, 1.0), "sepal_width": _MARK}]}, "instances"),
    ({"instances": [dict.fromkeys(FEATURES, 1.0), _MARK]}, "instances"),
]


@dataclass
class Served:
    """In-process servers (one per model) on an event loop of their own, for the property tests:
    hypothesis runs every example in one synchronous test, so the servers outlive them."""

    portal: BlockingPortal
    clients: dict[str, httpx.AsyncClient]

    def post(
        self, model: str, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        client = self.clients[model]
        return self.portal.call(partial(client.post, path, content=body, headers=headers))


@pytest.fixture(scope="module")
def served(model_files: dict[str, Path]) -> Iterator[Served]:
    with start_blocking_portal() as portal:
        planes: list[DataPlane] = []
        clients = {}
        for model in ("forest", "named"):
            dp = DataPlane(INFO, Metrics(), max_wait_s=0.0)
            runtime = load_sklearn_runtime(model_files[model], "sklearn")
            portal.call(dp.set_ready, runtime, "ab" * 32)  # on the loop that serves it
            app = create_app(dp, max_body_bytes=MAX_BODY)
            transport = httpx.ASGITransport(app=app)
            clients[model] = httpx.AsyncClient(transport=transport, base_url="http://t")
            planes.append(dp)
        try:
            yield Served(portal, clients)
        finally:
            for client in clients.values():
                portal.call(client.aclose)
            for dp in planes:
                portal.call(dp.stop)


def _check_spliced(
    served: Served, model: str, path: str, field: tuple[Any, str], text: str
) -> None:
    template, fragment = field
    r = served.post(model, path, _with_hostile(template, text))
    assert_error_contract(r.status_code, r.headers.get("content-type"), r.content)
    assert r.status_code in (200, 400), r.text[:ERROR_LIMIT]
    if r.status_code == 400:
        error = r.json()["error"]
        assert fragment in error or error.startswith("malformed JSON"), error


@pytest.mark.timeout(60)
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 5)
@given(field=st.sampled_from(V2_FIELDS), versioned=st.booleans(), text=HOSTILE)
def test_a_hostile_value_in_any_v2_field_is_a_400_naming_it(
    served: Served, field: tuple[Any, str], versioned: bool, text: str
) -> None:
    _check_spliced(served, "forest", V2_VERSIONED if versioned else V2, field, text)


@pytest.mark.timeout(60)
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 5)
@given(
    field=st.sampled_from(
        [("forest", f) for f in V1_FIELDS] + [("named", f) for f in NAMED_FIELDS]
    ),
    text=HOSTILE,
)
def test_a_hostile_value_in_any_v1_field_is_a_400_naming_it(
    served: Served, field: tuple[str, tuple[Any, str]], text: str
) -> None:
    model, spliced_field = field
    _check_spliced(served, model, V1, spliced_field, text)


_DIMENSIONS = st.lists(
    st.one_of(st.integers(0, 4), st.integers(0, 2**64 - 1)), min_size=1, max_size=40
)


@pytest.mark.timeout(60)
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 5)
@given(
    datatype=st.sampled_from(sorted(V2_DTYPES)),
    shape=_DIMENSIONS,
    size=st.one_of(st.integers(0, 64), st.integers(-1, 2**64 - 1)),
    blob=st.binary(max_size=64),
    slack=st.integers(-2, 2),
)
def test_a_binary_body_of_any_framing_is_a_200_or_a_400(
    served: Served, datatype: str, shape: list[int], size: int, blob: bytes, slack: int
) -> None:
    """Shapes past numpy's limits, sizes past the body, header lengths off by a few bytes."""
    inputs = [{"name": "x", "shape": shape, "datatype": datatype}]
    inputs[0]["parameters"] = {"binary_data_size": size}
    header = json.dumps({"inputs": inputs}).encode()
    length = str(max(len(header) + slack, 0))
    r = served.post("forest", V2, header + blob, {"inference-header-content-length": length})
    assert_error_contract(r.status_code, r.headers.get("content-type"), r.content)
    assert r.status_code in (200, 400), r.text[:ERROR_LIMIT]
