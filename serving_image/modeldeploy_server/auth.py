"""Access control for ``spec.auth``: who may call this model, decided by the Kubernetes API server.

The model kube-rbac-proxy follows, inside the server instead of a sidecar: a request's bearer
token is validated by the API server (TokenReview), and the identity it names must be allowed, by
a SubjectAccessReview, to ``create`` the subresource ``modeldeployments/predict`` of this
ModelDeployment. So plain RBAC Roles say who may call which model, and revoking a RoleBinding
revokes access, with no key material of our own.

Two API calls per request would cost more than the prediction, so a decision (allowed, or denied
with 401/403 and the reason) is cached for ``AUTH_CACHE_SECONDS`` under the token's sha256 (the
token itself is never stored, logged or compared), in a bounded LRU; concurrent requests with the
same token share one review (single-flight). An API server that can't answer is a 503 and never
cached, so access comes back the moment it does. This module and ``storage/`` are the only ones
that do network I/O (import-linter); the transport (asgi.py) calls ``Reviewer.authorize`` in one
place, so every protocol goes through the same reviewer. It imports aiohttp only when the first
review happens: a server without ``spec.auth`` never loads it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modeldeploy_server.config import Settings
from modeldeploy_server.errors import StartupError
from modeldeploy_server.metrics import Metrics

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
GROUP = "modeldeploy.io"
RESOURCE = "modeldeployments"
SUBRESOURCE = "predict"
VERB = "create"
TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"  # noqa: S105 (a URL path)
ACCESS_REVIEW_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

# Projected ServiceAccount tokens rotate (the kubelet rewrites the file at 80 % of their life,
# an hour at the least), so the server's own token is re-read this often, and at once after the
# API server rejects it.
TOKEN_REREAD_S = 60.0
# Longer bearer values are refused unread: no Kubernetes token comes near, and hashing and
# sending megabytes per request would be a cheap way to load this server and the API server.
MAX_TOKEN_BYTES = 16 * 1024
# Reviews in flight at once: a flood of distinct (garbage) tokens queues here instead of
# becoming a flood of TokenReviews against the API server.
MAX_CONCURRENT_REVIEWS = 16
# "API server unavailable" is logged at most this often; under load every request would say it.
UNAVAILABLE_LOG_EVERY_S = 10.0
# RFC 6750 token68 characters (plus '=' padding): anything else in a bearer value is malformed.
# Checked with bytes.translate (a C loop, ~1 µs for a 1.5 kB token) rather than a set: a
# frozenset's issuperset costs ~30 µs per token, which is the hot path's whole budget.
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="

Outcome = Literal["allowed", "unauthenticated", "forbidden", "unavailable"]
OUTCOMES: tuple[Outcome, ...] = ("allowed", "unauthenticated", "forbidden", "unavailable")
CACHE_RESULTS = ("hit", "miss", "coalesced")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a request: serve it (``allowed``) or answer ``status`` with ``body``.

    The body and headers are encoded once, when the decision is made, so a cached denial costs
    the transport nothing but the send.
    """

    outcome: Outcome
    status: int
    message: str = ""
    user: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"

    @property
    def reason(self) -> str:
        """The ``modeldeploy_errors`` reason for a denial."""
        return "auth_unavailable" if self.outcome == "unavailable" else self.outcome


def _deny(
    outcome: Outcome, status: int, message: str, *headers: tuple[bytes, bytes], user: str = ""
) -> Decision:
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    return Decision(outcome, status, message, user, headers, body)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Where the API server is, how to trust and authenticate to it, and what to ask it."""

    api_server: str  # https://host:port (http:// only for a loopback stub in tests)
    token_file: Path  # the server's own ServiceAccount token
    ca_file: Path | None  # None: the system's trust store (or plain http)
    namespace: str
    name: str
    cache_seconds: float = 10.0
    cache_size: int = 10_000
    timeout_s: float = 5.0
    audiences: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.name}"


def _in_cluster_api(env: dict[str, str]) -> str:
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return ""
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    return f"https://{host}:{port}"


def config_from_settings(settings: Settings, env: dict[str, str] | None = None) -> AuthConfig:
    """The reviewer's configuration, or a StartupError naming what is missing.

    Checked at start so a pod that can't authorize anyone fails with a termination message
    instead of answering every request with 503.
    """
    env = dict(os.environ) if env is None else env
    api = settings.auth_api_server.rstrip("/") or _in_cluster_api(env)
    if not api:
        raise StartupError(
            "AUTH_ENABLED is set but there is no API server to review tokens with: "
            "KUBERNETES_SERVICE_HOST is unset (not in a pod?); set AUTH_API_SERVER",
            reason="auth_config",
        )
    if not api.startswith(("https://", "http://")):
        raise StartupError(
            f"AUTH_API_SERVER must be an https:// URL, got {api!r}", reason="auth_config"
        )
    token_file = settings.auth_token_file
    if not token_file.is_file():
        raise StartupError(
            f"AUTH_ENABLED is set but the ServiceAccount token {token_file} does not exist: the "
            "pod needs automountServiceAccountToken (the operator sets it with spec.auth), or "
            "set AUTH_TOKEN_FILE",
            reason="auth_config",
        )
    ca: Path | None = Path(settings.auth_ca_file) if settings.auth_ca_file else None
    if api.startswith("http://"):
        ca = None  # plain http: a loopback stub in tests, nothing to trust
    elif ca is not None and not ca.is_file():
        if settings.auth_ca_file != str(SA_DIR / "ca.crt"):
            raise StartupError(
                f"AUTH_CA_FILE {ca} does not exist: point it at the API server's CA bundle, or "
                "set it empty to use the system trust store",
                reason="auth_config",
            )
        ca = None  # the default path outside a pod: fall back to the system trust store
    namespace = settings.model_namespace
    if not namespace and (SA_DIR / "namespace").is_file():
        namespace = (SA_DIR / "namespace").read_text().strip()
    if not namespace:
        raise StartupError(
            "AUTH_ENABLED is set but MODEL_NAMESPACE is empty: the access review needs the "
            "ModelDeployment's namespace",
            reason="auth_config",
        )
    return AuthConfig(
        api_server=api,
        token_file=token_file,
        ca_file=ca,
        namespace=namespace,
        name=settings.model_name,
        cache_seconds=settings.auth_cache_seconds,
        cache_size=settings.auth_cache_size,
        timeout_s=settings.auth_timeout_s,
        audiences=settings.audiences,
    )


# ---------------------------------------------------------------------------------- the header
def bearer_token(values: Sequence[bytes], realm: bytes) -> str | Decision:
    """The token of the one ``Authorization: Bearer <token>`` header, or the 401 to answer.

    ``values`` are every Authorization header of the request (ASGI keeps repeats apart).
    """
    token = split_bearer(values, realm)
    if isinstance(token, Decision):
        return token
    return malformed(token, realm) or token.decode("ascii")


def split_bearer(values: Sequence[bytes], realm: bytes) -> bytes | Decision:
    """The one bearer value, checked only for what costs nothing (count, scheme, length).

    The character check (``malformed``) waits for a cache miss: a cached token was checked when
    it was first seen, and the hot path is a cache hit.
    """
    if not values:
        return _unauthenticated(
            "missing bearer token: this model requires `Authorization: Bearer <token>` "
            "(spec.auth is on); send a Kubernetes ServiceAccount token, e.g. from "
            "`kubectl create token <serviceaccount> -n <namespace>` or the token mounted in the "
            "client pod",
            realm,
        )
    if len(values) > 1:
        return _unauthenticated(
            "more than one Authorization header: send exactly one `Authorization: Bearer <token>`",
            realm,
            invalid=True,
        )
    scheme, _, rest = values[0].strip().partition(b" ")
    token = rest.strip(b" ")
    if scheme.lower() != b"bearer":
        return _unauthenticated(
            "the Authorization header is not a bearer token: this model accepts only "
            "`Authorization: Bearer <token>` with a Kubernetes token",
            realm,
            invalid=True,
        )
    if not token:
        return _unauthenticated("the bearer token is empty", realm, invalid=True)
    if len(token) > MAX_TOKEN_BYTES:
        return _unauthenticated(
            f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes: not a Kubernetes token",
            realm,
            invalid=True,
        )
    return token


def malformed(token: bytes, realm: bytes) -> Decision | None:
    """The 401 for a bearer value with characters no token has (RFC 6750 token68), else None."""
    if token.translate(None, _TOKEN_CHARS):  # anything left is a character not allowed
        return _unauthenticated(
            "the bearer token has characters a token can't have (RFC 6750 token68): send the "
            "token exactly as `kubectl create token` printed it",
            realm,
            invalid=True,
        )
    return None


def _unauthenticated(message: str, realm: bytes, *, invalid: bool = False) -> Decision:
    # RFC 6750: a request without credentials gets the bare challenge, one with bad credentials
    # also error="invalid_token".
    challenge = b'Bearer realm="' + realm + b'"'
    if invalid:
        challenge += b', error="invalid_token"'
    return _deny("unauthenticated", 401, message, (b"www-authenticate", challenge))


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying anything.

    Used only to *shorten* how long a decision is cached, so a token that expires in two seconds
    isn't served for ten; the API server's review is what decides whether it is valid.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


# ---------------------------------------------------------------------------------- the cache
@dataclass
class DecisionCache:
    """Decisions by sha256(token), each until its own deadline, at most ``size`` of them (LRU)."""

    size: int
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[bytes, tuple[float, Decision]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: bytes, decision: Decision, ttl: float) -> None:
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self.clock() + ttl, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


# ---------------------------------------------------------------------------------- reviewing
class _UnavailableError(Exception):
    """The API server could not give an answer; becomes a 503 that is never cached."""

    def __init__(self, message: str, *, token_rejected: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.token_rejected = token_rejected


class Reviewer:
    """TokenReview then SubjectAccessReview against the API server, cached and single-flight."""

    def __init__(
        self,
        config: AuthConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.realm = config.target.encode("latin-1", "replace")
        self.cache = DecisionCache(config.cache_size, clock)
        self._clock = clock
        self._wall = wall_clock
        self._inflight: dict[bytes, asyncio.Task[Decision]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._server_token = ""
        self._token_read_at = -TOKEN_REREAD_S
        self._unavailable_logged_at = -UNAVAILABLE_LOG_EVERY_S
        self._read_server_token(force=True)  # fails at start, not at the first request
        # Bound children: labels() costs ~10 µs, and every outcome shows (as 0) from the start.
        self._counted = {
            (o, c): metrics.auth_requests.labels(o, c) for o in OUTCOMES for c in CACHE_RESULTS
        }
        self._review_ok = metrics.auth_review_seconds.labels("answered")
        self._review_failed = metrics.auth_review_seconds.labels("unavailable")

    # -- the one entry point ---------------------------------------------------------------
    async def authorize(self, authorization: Sequence[bytes]) -> Decision:
        """The decision for a request carrying these Authorization header values."""
        raw = split_bearer(authorization, self.realm)
        if isinstance(raw, Decision):
            self._counted[(raw.outcome, "miss")].inc()
            return raw
        key = hashlib.sha256(raw).digest()
        cached = self.cache.get(key)
        if cached is not None:  # the hot path: ~3 µs for a 1.5 kB token
            self._counted[(cached.outcome, "hit")].inc()
            return cached
        task = self._inflight.get(key)
        how = "coalesced"
        if task is None:
            bad = malformed(raw, self.realm)
            if bad is not None:
                self._counted[(bad.outcome, "miss")].inc()
                return bad
            how = "miss"
            task = asyncio.get_running_loop().create_task(
                self._review_and_cache(key, raw.decode("ascii"))
            )
            self._inflight[key] = task
        # shield: a client that hangs up must not cancel the review others are waiting for.
        decision = await asyncio.shield(task)
        self._counted[(decision.outcome, how)].inc()
        return decision

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one review --------------------------------------------------------------------------
    async def _review_and_cache(self, key: bytes, token: str) -> Decision:
        try:
            decision = await self._review(token)
            if decision.outcome != "unavailable":
                ttl = self.config.cache_seconds
                exp = token_expiry(token)
                if exp is not None:
                    ttl = min(ttl, exp - self._wall())
                self.cache.put(key, decision, ttl)
            return decision
        finally:
            self._inflight.pop(key, None)

    async def _review(self, token: str) -> Decision:
        started = self._clock()
        try:
            if self._semaphore is None:
                self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_REVIEWS)
            async with asyncio.timeout(self.config.timeout_s), self._semaphore:
                try:
                    decision = await self._token_then_access(token)
                except _UnavailableError as exc:
                    if not exc.token_rejected or not self._read_server_token(force=True):
                        raise
                    # Our own token was rotated under us: one more try with the new one.
                    decision = await self._token_then_access(token)
        except _UnavailableError as exc:
            self._review_failed.observe(self._clock() - started)
            return self._unavailable(exc.message)
        except TimeoutError:
            self._review_failed.observe(self._clock() - started)
            return self._unavailable(
                f"the Kubernetes API server at {self.config.api_server} did not answer the "
                f"review within {self.config.timeout_s:g} s (AUTH_TIMEOUT_S)"
            )
        self._review_ok.observe(self._clock() - started)
        log.debug("auth: %s for %s", decision.outcome, decision.user or "(no identity)")
        return decision

    async def _token_then_access(self, token: str) -> Decision:
        spec: dict[str, Any] = {"token": token}
        if self.config.audiences:
            spec["audiences"] = list(self.config.audiences)
        review = await self._post(
            TOKEN_REVIEW_PATH,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
            "TokenReview",
        )
        status = review.get("status") or {}
        if not status.get("authenticated"):
            why = status.get("error") or "not authenticated"
            return _unauthenticated(
                "the bearer token was not accepted by the Kubernetes API server "
                f"(TokenReview: {why}): send a current token of a ServiceAccount or user "
                "(tokens from `kubectl create token` expire)",
                self.realm,
                invalid=True,
            )
        wanted = set(self.config.audiences)
        if wanted and not wanted & set(status.get("audiences") or ()):
            return _unauthenticated(
                f"the bearer token is not meant for this server: request one with "
                f"`kubectl create token <serviceaccount> --audience={self.config.audiences[0]}` "
                "(AUTH_AUDIENCES)",
                self.realm,
                invalid=True,
            )
        user = status.get("user") or {}
        username = str(user.get("username") or "")
        attrs = {
            "group": GROUP,
            "resource": RESOURCE,
            "subresource": SUBRESOURCE,
            "verb": VERB,
            "namespace": self.config.namespace,
            "name": self.config.name,
        }
        sar_spec: dict[str, Any] = {"user": username, "resourceAttributes": attrs}
        for src, dst in (("groups", "groups"), ("uid", "uid"), ("extra", "extra")):
            if user.get(src):
                sar_spec[dst] = user[src]
        access = await self._post(
            ACCESS_REVIEW_PATH,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": sar_spec,
            },
            "SubjectAccessReview",
        )
        verdict = access.get("status") or {}
        if verdict.get("allowed") and not verdict.get("denied"):
            return Decision("allowed", 200, user=username)
        return _deny("forbidden", 403, self._forbidden_message(username, verdict), user=username)

    def _forbidden_message(self, username: str, verdict: dict[str, Any]) -> str:
        ns, name = self.config.namespace, self.config.name
        why = verdict.get("reason") or "no Role or ClusterRole binding allows it"
        if verdict.get("evaluationError"):
            why += f"; evaluation error: {verdict['evaluationError']}"
        return (
            f"{username or 'this identity'} may not {VERB} {RESOURCE}/{SUBRESOURCE} on "
            f"{ns}/{name}: grant it with a Role in {ns} (apiGroups: [{GROUP}], resources: "
            f"[{RESOURCE}/{SUBRESOURCE}], verbs: [{VERB}], resourceNames: [{name}]) and a "
            f"RoleBinding to it (RBAC: {why})"
        )

    async def _post(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        import aiohttp

        session = self._client()
        url = self.config.api_server + path
        self._read_server_token()  # when due: projected tokens rotate
        headers = {
            "Authorization": f"Bearer {self._server_token}",
            "Accept": "application/json",
        }
        try:
            async with session.post(url, json=body, headers=headers) as resp:
                text = await resp.text()
                code = resp.status
        except TimeoutError:
            raise  # aiohttp's own timeouts are ClientErrors too; _review reports the deadline
        except aiohttp.ClientError as exc:
            raise _UnavailableError(
                f"the Kubernetes API server at {self.config.api_server} is unreachable "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if code in (200, 201):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                return doc
            raise _UnavailableError(f"the API server's {kind} answer is not JSON")
        detail = _api_message(text)
        if code == 401:
            raise _UnavailableError(
                f"the API server rejected this server's own ServiceAccount token ({kind}: 401 "
                f"{detail}); it is re-read from {self.config.token_file} every "
                f"{TOKEN_REREAD_S:g} s",
                token_rejected=True,
            )
        if code == 403:
            raise _UnavailableError(
                f"this server's ServiceAccount may not create {kind}s (403 {detail}): it needs "
                "the ClusterRole modeldeploy-server-auth, which the operator binds when "
                "spec.auth is on (ClusterRoleBinding modeldeploy-auth.<namespace>.<name>)"
            )
        raise _UnavailableError(f"the API server answered the {kind} with {code} {detail}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            ssl_ctx: ssl.SSLContext | bool = True
            if self.config.ca_file is not None:
                ssl_ctx = ssl.create_default_context(cafile=str(self.config.ca_file))
            connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=MAX_CONCURRENT_REVIEWS)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                # Never pick up HTTP(S)_PROXY for the API server, as client-go doesn't for
                # in-cluster config either.
                trust_env=False,
            )
        return self._session

    def _read_server_token(self, *, force: bool = False) -> bool:
        """Re-reads the server's own token when due; True when it changed."""
        now = self._clock()
        if not force and now - self._token_read_at < TOKEN_REREAD_S:
            return False
        self._token_read_at = now
        try:
            token = self.config.token_file.read_text().strip()
        except OSError as exc:
            if not self._server_token:
                raise StartupError(
                    f"cannot read the ServiceAccount token {self.config.token_file}: {exc}",
                    reason="auth_config",
                ) from None
            log.warning("auth: keeping the previous token, re-reading it failed: %s", exc)
            return False
        changed = token != self._server_token
        self._server_token = token
        return changed

    def _unavailable(self, why: str) -> Decision:
        now = self._clock()
        if now - self._unavailable_logged_at >= UNAVAILABLE_LOG_EVERY_S:
            self._unavailable_logged_at = now
            log.warning("auth: answering 503, cannot review tokens: %s", why)
        return _deny(
            "unavailable",
            503,
            f"cannot check the bearer token right now: {why}; retry shortly",
            (b"retry-after", b"1"),
        )


def _api_message(text: str) -> str:
    """The ``message`` of a Kubernetes Status body, else the start of the body."""
    with contextlib.suppress(ValueError):
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("message"):
            return f"({doc['message']})"
    return f"({text[:200]})" if text else ""
