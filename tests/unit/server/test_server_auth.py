"""spec.auth on the server: header parsing, the decision cache, single-flight, error mapping, and
which routes are open, against a real loopback HTTP server that plays the API server's
TokenReview and SubjectAccessReview endpoints.

The stub is for the faults a real API server can't easily be made to show (a 500, a hang, a
refused connection, its own token rejected mid-rotation); tests/integration/operator/
test_cluster_server_auth.py runs the same server against the real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from modeldeploy_server.app import create_app
from modeldeploy_server.auth import (
    ACCESS_REVIEW_PATH,
    TOKEN_REVIEW_PATH,
    AuthConfig,
    Decision,
    DecisionCache,
    Reviewer,
    bearer_token,
    config_from_settings,
    token_expiry,
)
from modeldeploy_server.config import Settings, load_settings
from modeldeploy_server.dataplane import DataPlane, ServingInfo
from modeldeploy_server.errors import StartupError
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.runtime.sklearn import load_sklearn_runtime

pytestmark = pytest.mark.anyio

SERVER_TOKEN = "server-sa-token"
ALICE = "alice-token"  # a permitted ServiceAccount
BOB = "bob-token"  # authenticated, not permitted
ALICE_USER: dict[str, Any] = {
    "username": "system:serviceaccount:team:alice",
    "uid": "u-1",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:team"],
    "extra": {"authentication.kubernetes.io/pod-name": ["client-0"]},
}
BOB_USER: dict[str, Any] = {
    "username": "system:serviceaccount:team:bob",
    "uid": "u-2",
    "groups": [],
}
REALM = b"team/iris"
ROW = [5.1, 3.5, 1.4, 0.2]


# ------------------------------------------------------------------------------ the review stub
@dataclass
class ApiStub:
    """A loopback HTTP server answering the two reviews like kube-apiserver does."""

    url: str = ""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)
    server_tokens: set[str] = field(default_factory=lambda: {SERVER_TOKEN})
    fail: dict[str, int] = field(default_factory=dict)  # path -> status to answer instead
    hold: threading.Event = field(default_factory=threading.Event)  # cleared: TokenReview waits
    held: threading.Event = field(default_factory=threading.Event)
    audiences: list[str] = field(default_factory=list)  # the status.audiences it reports
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _, _ in self.requests if p == path)

    def answer(self, path: str, auth: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((path, auth, body))
        if path in self.fail:
            code = self.fail[path]
            return code, {"kind": "Status", "message": f"stub says {code}", "code": code}
        if auth.removeprefix("Bearer ") not in self.server_tokens:
            return 401, {"kind": "Status", "message": "Unauthorized", "code": 401}
        spec = body["spec"]
        if path == TOKEN_REVIEW_PATH:
            if not self.hold.is_set():
                self.held.set()
                self.hold.wait(timeout=30)
            user = self.users.get(spec["token"])
            status: dict[str, Any] = (
                {"authenticated": True, "user": user, "audiences": self.audiences or ["api"]}
                if user
                else {"authenticated": False, "error": "invalid bearer token"}
            )
            return 201, {**body, "status": status}
        if path == ACCESS_REVIEW_PATH:
            ok = spec["user"] in self.allowed
            verdict: dict[str, Any] = {"allowed": ok}
            if ok:
                verdict["reason"] = 'RBAC: allowed by RoleBinding "callers/team"'
            return 201, {**body, "status": verdict}
        return 404, {"kind": "Status", "message": "not found", "code": 404}


@pytest.fixture
def api() -> Iterator[ApiStub]:
    stub = ApiStub(users={ALICE: ALICE_USER, BOB: BOB_USER}, allowed={str(ALICE_USER["username"])})
    stub.hold.set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp's pool expects

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            code, doc = stub.answer(self.path, self.headers.get("authorization", ""), body)
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.hold.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SERVER_TOKEN + "\n")
    return path


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_reviewer(api: ApiStub, token_file: Path) -> AsyncIterator[Any]:
    made: list[Reviewer] = []

    def factory(
        *, clock: Clock | None = None, metrics: Metrics | None = None, **overrides: Any
    ) -> Reviewer:
        settings = {
            "api_server": api.url,
            "token_file": token_file,
            "ca_file": None,
            "namespace": "team",
            "name": "iris",
            "cache_seconds": 10.0,
            "timeout_s": 5.0,
            **overrides,
        }
        kwargs: dict[str, Any] = {}
        if clock is not None:
            kwargs["clock"] = clock
        reviewer = Reviewer(AuthConfig(**settings), metrics or Metrics(), **kwargs)
        made.append(reviewer)
        return reviewer

    yield factory
    for r in made:
        await r.close()


def bearer(token: str) -> list[bytes]:
    return [f"Bearer {token}".encode()]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# ------------------------------------------------------------------------------ the header
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"Bearer abc.DEF-_~+/="], "abc.DEF-_~+/="),
        ([b"bearer abc"], "abc"),  # the scheme is case-insensitive (RFC 7235)
        ([b"BEARER    abc  "], "abc"),
    ],
)
def test_bearer_token_accepts(values: list[bytes], expected: str) -> None:
    assert bearer_token(values, REALM) == expected


@pytest.mark.parametrize(
    ("values", "says", "invalid"),
    [
        ([], "missing bearer token", False),
        ([b"Bearer a", b"Bearer b"], "more than one Authorization header", True),
        ([b"Basic dXNlcjpwYXNz"], "not a bearer token", True),
        ([b"Bearer"], "empty", True),
        ([b"Bearer    "], "empty", True),
        ([b"Bearer abc def"], "characters a token can't have", True),
        ([b"Bearer " + b"a" * 20000], "longer than 16384 bytes", True),
    ],
)
def test_bearer_token_refuses_with_401_and_a_challenge(
    values: list[bytes], says: str, invalid: bool
) -> None:
    decision = bearer_token(values, REALM)
    assert isinstance(decision, Decision)
    assert (decision.status, decision.outcome) == (401, "unauthenticated")
    assert says in decision.message
    assert json.loads(decision.body) == {"error": decision.message}
    challenge = dict(decision.headers)[b"www-authenticate"]
    assert challenge.startswith(b'Bearer realm="team/iris"')
    assert (b'error="invalid_token"' in challenge) is invalid


def test_missing_token_message_says_how_to_get_one() -> None:
    decision = bearer_token([], REALM)
    assert isinstance(decision, Decision)
    assert "Authorization: Bearer <token>" in decision.message
    assert "kubectl create token" in decision.message


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_token_expiry_reads_exp_without_trusting_anything() -> None:
    assert token_expiry(jwt({"exp": 1_900_000_000, "sub": "x"})) == 1_900_000_000.0
    assert token_expiry(jwt({"sub": "no exp"})) is None
    assert token_expiry(jwt({"exp": True})) is None
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.!!!!.c") is None
    assert token_expiry("a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c") is None


# ------------------------------------------------------------------------------ the cache
def test_cache_entries_expire_at_their_deadline() -> None:
    clock = Clock()
    cache = DecisionCache(size=10, clock=clock)
    d = Decision("allowed", 200)
    cache.put(b"k", d, ttl=5)
    clock.now += 4.9
    assert cache.get(b"k") is d
    clock.now += 0.1
    assert cache.get(b"k") is None
    assert len(cache) == 0  # an expired entry is dropped when found


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = DecisionCache(size=3)
    d = Decision("allowed", 200)
    for k in (b"a", b"b", b"c"):
        cache.put(k, d, ttl=60)
    assert cache.get(b"a") is d  # a is now the most recent
    cache.put(b"d", d, ttl=60)
    assert len(cache) == 3
    assert cache.get(b"b") is None
    assert all(cache.get(k) is d for k in (b"a", b"c", b"d"))


def test_cache_with_no_time_keeps_nothing() -> None:
    cache = DecisionCache(size=3)
    cache.put(b"a", Decision("allowed", 200), ttl=0)
    assert len(cache) == 0


# ------------------------------------------------------------------------------ the reviewer
async def test_permitted_token_is_allowed_with_the_reviews_the_issue_specifies(
    api: ApiStub, make_reviewer: Any
) -> None:
    decision = await make_reviewer().authorize(bearer(ALICE))
    assert decision.allowed
    assert decision.user == ALICE_USER["username"]
    (tr_path, tr_auth, tr), (sar_path, sar_auth, sar) = api.requests
    assert (tr_path, sar_path) == (TOKEN_REVIEW_PATH, ACCESS_REVIEW_PATH)
    assert tr_auth == sar_auth == f"Bearer {SERVER_TOKEN}"  # the server's own token
    assert tr["kind"] == "TokenReview"
    assert tr["spec"] == {"token": ALICE}
    assert sar["kind"] == "SubjectAccessReview"
    assert sar["spec"] == {
        "user": ALICE_USER["username"],
        "uid": ALICE_USER["uid"],
        "groups": ALICE_USER["groups"],
        "extra": ALICE_USER["extra"],
        "resourceAttributes": {
            "group": "modeldeploy.io",
            "resource": "modeldeployments",
            "subresource": "predict",
            "verb": "create",
            "namespace": "team",
            "name": "iris",
        },
    }


async def test_not_permitted_is_403_naming_who_what_and_how_to_grant_it(
    api: ApiStub, make_reviewer: Any
) -> None:
    decision = await make_reviewer().authorize(bearer(BOB))
    assert (decision.status, decision.outcome) == (403, "forbidden")
    msg = decision.message
    assert msg.startswith(
        "system:serviceaccount:team:bob may not create modeldeployments/predict on team/iris: "
        "grant it with a Role in team"
    )
    assert "resourceNames: [iris]" in msg
    assert "(RBAC: no Role or ClusterRole binding allows it)" in msg
    assert json.loads(decision.body) == {"error": msg}
    assert decision.headers == ()


async def test_unknown_token_is_401_with_the_api_servers_reason(
    api: ApiStub, make_reviewer: Any
) -> None:
    decision = await make_reviewer().authorize(bearer("garbage"))
    assert (decision.status, decision.outcome) == (401, "unauthenticated")
    assert "TokenReview: invalid bearer token" in decision.message
    assert dict(decision.headers)[b"www-authenticate"].startswith(b"Bearer")
    assert api.count(ACCESS_REVIEW_PATH) == 0  # no identity, nothing to authorize


async def test_decisions_are_cached_per_token_until_cache_seconds(
    api: ApiStub, make_reviewer: Any
) -> None:
    clock, metrics = Clock(), Metrics()
    reviewer = make_reviewer(clock=clock, metrics=metrics, cache_seconds=10.0)
    for token in (ALICE, BOB, "garbage"):
        first = await reviewer.authorize(bearer(token))
        again = await reviewer.authorize(bearer(token))
        assert again is first  # allowed, 403 and 401 alike
    assert api.count(TOKEN_REVIEW_PATH) == 3
    clock.now += 9.9
    await reviewer.authorize(bearer(ALICE))
    assert api.count(TOKEN_REVIEW_PATH) == 3
    # RBAC changes on the API server are seen once the entry has expired.
    api.allowed.clear()
    clock.now += 0.1
    assert (await reviewer.authorize(bearer(ALICE))).status == 403
    assert api.count(TOKEN_REVIEW_PATH) == 4
    name = "modeldeploy_auth_requests_total"
    assert sample(metrics, name, outcome="allowed", cache="miss") == 1
    assert sample(metrics, name, outcome="allowed", cache="hit") == 2
    assert sample(metrics, name, outcome="forbidden", cache="hit") == 1
    assert sample(metrics, name, outcome="forbidden", cache="miss") == 2
    assert sample(metrics, name, outcome="unauthenticated", cache="hit") == 1
    assert sample(metrics, "modeldeploy_auth_review_duration_seconds_count", result="answered") == 4


async def test_a_token_about_to_expire_is_cached_only_until_it_does(
    api: ApiStub, make_reviewer: Any
) -> None:
    token = jwt({"exp": int(time.time()) + 2})  # expires in ~2 s, cacheSeconds is 60
    api.users[token] = ALICE_USER
    clock = Clock()
    reviewer = make_reviewer(clock=clock, cache_seconds=60.0)
    assert (await reviewer.authorize(bearer(token))).allowed
    clock.now += 3
    assert (await reviewer.authorize(bearer(token))).allowed
    assert api.count(TOKEN_REVIEW_PATH) == 2


async def test_cache_seconds_zero_reviews_every_request(api: ApiStub, make_reviewer: Any) -> None:
    reviewer = make_reviewer(cache_seconds=0.0)
    for _ in range(3):
        assert (await reviewer.authorize(bearer(ALICE))).allowed
    assert api.count(TOKEN_REVIEW_PATH) == 3


async def test_the_cache_size_bounds_what_is_remembered(api: ApiStub, make_reviewer: Any) -> None:
    reviewer = make_reviewer(cache_size=2)
    for i in range(5):
        await reviewer.authorize(bearer(f"garbage-{i}"))
    assert len(reviewer.cache) == 2


async def test_concurrent_requests_with_one_token_share_one_review(
    api: ApiStub, make_reviewer: Any
) -> None:
    metrics = Metrics()
    reviewer = make_reviewer(metrics=metrics)
    api.hold.clear()
    calls = [asyncio.create_task(reviewer.authorize(bearer(ALICE))) for _ in range(20)]
    other = asyncio.create_task(reviewer.authorize(bearer(BOB)))
    assert await asyncio.to_thread(api.held.wait, 10)
    await asyncio.sleep(0.05)  # every task has reached the in-flight review by now
    api.hold.set()
    decisions = await asyncio.gather(*calls)
    assert all(d.allowed for d in decisions)
    assert (await other).status == 403
    assert api.count(TOKEN_REVIEW_PATH) == 2  # one per distinct token
    name = "modeldeploy_auth_requests_total"
    assert sample(metrics, name, outcome="allowed", cache="miss") == 1
    assert sample(metrics, name, outcome="allowed", cache="coalesced") == 19


async def test_a_caller_that_hangs_up_does_not_cancel_the_shared_review(
    api: ApiStub, make_reviewer: Any
) -> None:
    reviewer = make_reviewer()
    api.hold.clear()
    first = asyncio.create_task(reviewer.authorize(bearer(ALICE)))
    second = asyncio.create_task(reviewer.authorize(bearer(ALICE)))
    assert await asyncio.to_thread(api.held.wait, 10)
    first.cancel()
    api.hold.set()
    assert (await second).allowed
    assert api.count(TOKEN_REVIEW_PATH) == 1


@pytest.mark.parametrize("path", [TOKEN_REVIEW_PATH, ACCESS_REVIEW_PATH])
async def test_api_server_5xx_is_503_and_never_cached(
    api: ApiStub, make_reviewer: Any, path: str
) -> None:
    metrics = Metrics()
    reviewer = make_reviewer(metrics=metrics)
    api.fail[path] = 500
    decision = await reviewer.authorize(bearer(ALICE))
    assert (decision.status, decision.outcome) == (503, "unavailable")
    assert "answered the" in decision.message
    assert "500 (stub says 500)" in decision.message
    assert dict(decision.headers) == {b"retry-after": b"1"}
    assert json.loads(decision.body)["error"].startswith("cannot check the bearer token")
    del api.fail[path]
    assert (await reviewer.authorize(bearer(ALICE))).allowed  # the 503 was not remembered
    assert (
        sample(metrics, "modeldeploy_auth_review_duration_seconds_count", result="unavailable") == 1
    )


async def test_unreachable_api_server_is_503_saying_so(make_reviewer: Any) -> None:
    # A port nothing listens on: bind one and close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    decision = await make_reviewer(api_server=f"http://127.0.0.1:{port}").authorize(bearer(ALICE))
    assert decision.status == 503
    assert f"the Kubernetes API server at http://127.0.0.1:{port} is unreachable" in (
        decision.message
    )


async def test_a_hanging_api_server_is_503_after_the_timeout(
    api: ApiStub, make_reviewer: Any
) -> None:
    api.hold.clear()
    started = time.monotonic()
    decision = await make_reviewer(timeout_s=0.3).authorize(bearer(ALICE))
    assert decision.status == 503
    assert "did not answer the review within 0.3 s (AUTH_TIMEOUT_S)" in decision.message
    assert time.monotonic() - started < 5


async def test_missing_review_permission_is_503_naming_the_cluster_role(
    api: ApiStub, make_reviewer: Any
) -> None:
    api.fail[TOKEN_REVIEW_PATH] = 403
    decision = await make_reviewer().authorize(bearer(ALICE))
    assert decision.status == 503
    assert "may not create TokenReviews" in decision.message
    assert "ClusterRole modeldeploy-server-auth" in decision.message


async def test_own_token_rotated_is_reread_and_the_review_retried(
    api: ApiStub, make_reviewer: Any, token_file: Path
) -> None:
    reviewer = make_reviewer()
    # The kubelet rotates the projected token: the API server now knows only the new one.
    await asyncio.to_thread(token_file.write_text, "rotated-token")
    api.server_tokens = {"rotated-token"}
    assert (await reviewer.authorize(bearer(ALICE))).allowed
    auths = [a for _, a, _ in api.requests]
    assert auths == [f"Bearer {SERVER_TOKEN}", "Bearer rotated-token", "Bearer rotated-token"]


async def test_own_token_rejected_for_good_is_503(api: ApiStub, make_reviewer: Any) -> None:
    api.server_tokens = {"something-else"}
    decision = await make_reviewer().authorize(bearer(ALICE))
    assert decision.status == 503
    assert "rejected this server's own ServiceAccount token" in decision.message


async def test_audiences_are_sent_and_a_token_for_another_audience_is_401(
    api: ApiStub, make_reviewer: Any
) -> None:
    reviewer = make_reviewer(audiences=("modeldeploy",))
    api.audiences = ["api"]
    decision = await reviewer.authorize(bearer(ALICE))
    assert decision.status == 401
    assert "--audience=modeldeploy" in decision.message
    assert api.requests[0][2]["spec"]["audiences"] == ["modeldeploy"]
    api.audiences = ["modeldeploy"]
    assert (await make_reviewer(audiences=("modeldeploy",)).authorize(bearer(ALICE))).allowed


async def test_tokens_are_never_logged(
    api: ApiStub, make_reviewer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reviewer = make_reviewer(cache_seconds=0.0)
    for token in (ALICE, BOB, "garbage"):
        await reviewer.authorize(bearer(token))
    api.fail[TOKEN_REVIEW_PATH] = 500
    await reviewer.authorize(bearer(ALICE))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "503" in logged  # something was logged, just never a token
    for secret in (ALICE, BOB, "garbage", SERVER_TOKEN):
        assert secret not in logged


# ------------------------------------------------------------------------------ through the app
@pytest.fixture
async def client(
    make_reviewer: Any, model_files: dict[str, Path]
) -> AsyncIterator[tuple[httpx.AsyncClient, DataPlane]]:
    info = ServingInfo(
        name="iris", version="v1", track="stable", storage_uri="", sha256="", predict_proba_v1=False
    )
    dp = DataPlane(info, Metrics(), max_batch_rows=64, max_wait_s=0.0)
    await dp.set_ready(load_sklearn_runtime(model_files["forest"], "sklearn"), "ab" * 32)
    app = create_app(dp, max_body_bytes=4096, auth=make_reviewer(metrics=dp.metrics))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, dp
    await dp.stop()


OPEN = ["/healthz", "/ready", "/v2/health/live", "/v2/health/ready", "/metrics", "/", "/v2"]
PROTECTED_GET = [
    "/v1/models",
    "/v1/models/iris",
    "/v2/models",
    "/v2/models/iris",
    "/v2/models/iris/versions/v1",
    "/v2/models/iris/ready",
    "/docs",
    "/openapi.json",
    "/no/such/path",
]
V1 = ("/v1/models/iris:predict", {"instances": [ROW]})
V2 = (
    "/v2/models/iris/infer",
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]},
)


@pytest.mark.parametrize("path", OPEN)
async def test_health_and_metrics_stay_open(
    client: tuple[httpx.AsyncClient, DataPlane], path: str
) -> None:
    c, _ = client
    r = await c.get(path)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", PROTECTED_GET)
async def test_metadata_docs_and_unknown_paths_need_a_token(
    client: tuple[httpx.AsyncClient, DataPlane], path: str
) -> None:
    c, _ = client
    r = await c.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "missing bearer token" in r.json()["error"]
    assert r.headers["x-modeldeploy-track"] == "stable"
    ok = await c.get(path, headers={"authorization": f"Bearer {ALICE}"})
    assert ok.status_code == (404 if path == "/no/such/path" else 200)


@pytest.mark.parametrize(("path", "body"), [V1, V2], ids=["v1", "v2"])
async def test_inference_401_403_and_200(
    client: tuple[httpx.AsyncClient, DataPlane], path: str, body: dict[str, Any]
) -> None:
    c, dp = client
    r = await c.post(path, json=body)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="team/iris"'
    r = await c.post(path, json=body, headers={"authorization": "Bearer garbage"})
    assert r.status_code == 401
    assert "invalid_token" in r.headers["www-authenticate"]
    assert "not accepted by the Kubernetes API server" in r.json()["error"]
    r = await c.post(path, json=body, headers={"authorization": f"Bearer {BOB}"})
    assert r.status_code == 403
    assert r.json()["error"].startswith("system:serviceaccount:team:bob may not create")
    r = await c.post(path, json=body, headers={"authorization": f"Bearer {ALICE}"})
    assert r.status_code == 200, r.text
    assert "server-timing" in r.headers
    answer = r.json()
    assert (answer.get("predictions") or answer["outputs"][0]["data"]) == [0]
    m = dp.metrics
    for reason in ("unauthenticated", "forbidden"):
        assert sample(m, "modeldeploy_errors_total", reason=reason) >= 1
    assert sample(m, "modeldeploy_requests_total", endpoint=_template(path), protocol=path[1:3],
                  status="403") == 1  # fmt: skip


def _template(path: str) -> str:
    return "/v1/models/{name}:predict" if path.startswith("/v1") else "/v2/models/{name}/infer"


async def test_access_is_checked_before_the_method_and_the_body_limit(
    client: tuple[httpx.AsyncClient, DataPlane],
) -> None:
    c, _ = client
    assert (await c.get("/v1/models/iris:predict")).status_code == 401
    big = {"instances": [ROW] * 400}  # over the 4096-byte limit
    assert (await c.post("/v1/models/iris:predict", json=big)).status_code == 401
    ok = {"authorization": f"Bearer {ALICE}"}
    assert (await c.get("/v1/models/iris:predict", headers=ok)).status_code == 405
    assert (await c.post("/v1/models/iris:predict", json=big, headers=ok)).status_code == 413


async def test_denials_on_other_routes_are_counted_under_one_endpoint_label(
    client: tuple[httpx.AsyncClient, DataPlane],
) -> None:
    c, dp = client
    await c.get("/v2/models/iris")
    await c.get("/no/such/path")
    value = sample(
        dp.metrics, "modeldeploy_requests_total", endpoint="auth_denied", protocol="v2",
        status="401",
    )  # fmt: skip
    assert value == 1
    text = (await c.get("/metrics")).text
    assert 'modeldeploy_auth_requests_total{cache="miss",outcome="unauthenticated"} 2.0' in text


async def test_api_server_down_is_503_through_the_app(
    client: tuple[httpx.AsyncClient, DataPlane], api: ApiStub
) -> None:
    c, _ = client
    api.fail[TOKEN_REVIEW_PATH] = 502
    r = await c.post(V1[0], json=V1[1], headers={"authorization": f"Bearer {ALICE}"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "cannot check the bearer token right now" in r.json()["error"]


# ------------------------------------------------------------------------------ configuration
def test_auth_settings_from_the_operator_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {
        "AUTH_ENABLED": "true",
        "AUTH_CACHE_SECONDS": "30",
        "MODEL_NAMESPACE": "team",
        "AUTH_API_SERVER": "https://127.0.0.1:6443",
        "AUTH_TOKEN_FILE": "/tmp/t",
        "AUTH_CA_FILE": "/tmp/ca.crt",
        "AUTH_AUDIENCES": "a, b",
    }.items():
        monkeypatch.setenv(k, v)
    s = load_settings([])
    assert s.auth_enabled is True
    assert s.auth_cache_seconds == 30
    assert s.model_namespace == "team"
    assert s.auth_api_server == "https://127.0.0.1:6443"
    assert s.auth_token_file == Path("/tmp/t")
    assert s.auth_ca_file == "/tmp/ca.crt"
    assert s.audiences == ("a", "b")
    s = load_settings(["--no-auth", "--auth-cache-seconds", "1", "--model-namespace", "x"])
    assert (s.auth_enabled, s.auth_cache_seconds, s.model_namespace) == (False, 1, "x")


def test_auth_is_off_by_default() -> None:
    assert Settings().auth_enabled is False


def test_in_cluster_api_server_and_trust_by_default(token_file: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not read until the first review")
    s = Settings(
        auth_enabled=True, model_namespace="team", auth_token_file=token_file, auth_ca_file=str(ca)
    )
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = config_from_settings(s, env)
    assert cfg.api_server == "https://10.96.0.1:443"
    assert cfg.ca_file == ca
    assert (cfg.namespace, cfg.name, cfg.cache_seconds) == ("team", "model", 10.0)
    v6 = config_from_settings(s, {"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert v6.api_server == "https://[fd00::1]:443"


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({}, "KUBERNETES_SERVICE_HOST is unset (not in a pod?); set AUTH_API_SERVER"),
        ({"auth_api_server": "ftp://x"}, "must be an https:// URL"),
        ({"auth_api_server": "https://x", "auth_token_file": "/nonexistent"}, "automount"),
        ({"auth_api_server": "https://x", "auth_ca_file": "/nonexistent.crt"}, "AUTH_CA_FILE"),
        ({"auth_api_server": "https://x", "model_namespace": ""}, "MODEL_NAMESPACE is empty"),
    ],
)
def test_misconfiguration_fails_at_start_naming_the_fix(
    token_file: Path, overrides: dict[str, Any], says: str
) -> None:
    fields: dict[str, Any] = {
        "auth_enabled": True,
        "model_namespace": "team",
        "auth_token_file": token_file,
        **overrides,
    }
    with pytest.raises(StartupError) as exc:
        config_from_settings(Settings(**fields), {})
    assert says in exc.value.message
