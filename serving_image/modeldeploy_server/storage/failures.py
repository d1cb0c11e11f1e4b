"""What a storage failure means: retry it or not, and the (reason, message) it ends the pod with.

Backends fail in their own vocabularies (botocore, aiohttp, google-auth, plain OSError), and the
server must not import them all to tell them apart, so exceptions are matched by class name and by
their ``status``/``code``. ``classify`` is the one place that turns a failure into the stable
reason (metrics, logs, the operator's Degraded condition) and the sentence a person acts on; the
two can't drift apart because they are decided together.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from modeldeploy_server.errors import StartupError
from modeldeploy_server.storage.uri import StorageLocation

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_NAMES = {
    # botocore / aiobotocore
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ResponseStreamingError",
    "IncompleteReadError",
    # aiohttp
    "ClientConnectionError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    # google
    "TransportError",
    "ServiceUnavailable",
}
_NO_CREDENTIALS_NAMES = {"NoCredentialsError", "PartialCredentialsError"}

_ACCESS_HINTS = {
    "s3": "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the credentials Secret, the endpoint "
    "(AWS_ENDPOINT_URL) and that the key may read this object",
    "gs": "check the service-account key in GOOGLE_APPLICATION_CREDENTIALS",
    "http": "check the URL (an expired presigned URL?) or STORAGE_HTTP_HEADERS",
    "file": "check the file permissions for uid 1000",
}


def _class_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _status(exc: BaseException) -> object:
    return getattr(exc, "status", None)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: network trouble, timeouts, 5xx/429; never not-found or access denied."""
    if isinstance(exc, (FileNotFoundError, PermissionError, StartupError)):
        return False
    names = _class_names(exc)
    if names & _NO_CREDENTIALS_NAMES:
        return False
    status = _status(exc) or getattr(exc, "code", None)
    if isinstance(status, int) and (status >= 500 or status == 429):
        return True
    if isinstance(status, int) and 400 <= status < 500:
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if names & _TRANSIENT_NAMES:
        return True
    # s3fs maps 5xx S3 error codes to OSError(EREMOTEIO/EIO) and retries them itself first.
    return type(exc) is OSError


@dataclass(frozen=True, slots=True)
class Failure:
    """A stable label for metrics and logs, and one actionable sentence for the termination log."""

    reason: str
    message: str


def classify(exc: BaseException, loc: StorageLocation) -> Failure:
    """Why fetching ``loc`` failed, in the server's own words."""
    if isinstance(exc, StartupError):
        return Failure(exc.reason, exc.message)
    where = loc.display
    status = _status(exc)
    if isinstance(exc, FileNotFoundError) or status == 404:
        return Failure(
            "artifact_missing",
            f"model artifact not found at {where}: check spec.model.storageUri "
            "(bucket, path and file name) and that the object was uploaded",
        )
    if _class_names(exc) & _NO_CREDENTIALS_NAMES:
        return Failure(
            "no_credentials",
            f"no S3 credentials for {where}: reference a Secret with AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in spec.credentials.secretName (or set S3_ANONYMOUS=true "
            "for a public bucket)",
        )
    if isinstance(exc, PermissionError) or status in (401, 403):
        return Failure(
            "access_denied", f"access denied reading {where}: {_ACCESS_HINTS[loc.scheme]}"
        )
    if is_transient(exc):
        return Failure(
            "download_failed",
            f"could not download {where} after retries ({type(exc).__name__}: {exc}); check "
            "that the storage endpoint is reachable from the pod",
        )
    return Failure("download_failed", f"could not fetch {where} ({type(exc).__name__}: {exc})")


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; retry transient failures with exponential backoff and jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= attempts or not is_transient(exc):
                raise
            delay = backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())  # noqa: S311
            log.warning(
                "%s failed (attempt %d/%d: %s: %s); retrying in %.1fs",
                what,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")
