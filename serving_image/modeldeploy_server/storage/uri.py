"""STORAGE_URI parsing and redaction: pure functions, no I/O.

Every accepted form (a path, file://, pvc://, http(s)://, s3://, gs://) maps onto one of four
backends here, and everything else is refused with a sentence that names what is accepted, before
anything touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from modeldeploy_server.errors import StartupError

Scheme = Literal["file", "http", "s3", "gs"]


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """A parsed STORAGE_URI: ``path`` is what the backend understands (local path or fsspec)."""

    scheme: Scheme
    path: str
    uri: str

    @property
    def display(self) -> str:
        return redact_uri(self.uri)


def redact_uri(uri: str) -> str:
    """Drop user:password and query strings (presigned URLs carry signatures) for logs/metrics."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if not parts.scheme or parts.scheme == "file":
        return uri
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _no_dotdot(path: str, uri: str) -> None:
    if ".." in PurePosixPath(path).parts:
        raise StartupError(f"storage URI {uri} must not contain '..' path segments")


def parse_storage_uri(uri: str, pvc_root: Path) -> StorageLocation:
    """Map every accepted form onto a backend; reject the rest naming what is accepted."""
    uri = uri.strip()
    if not uri:
        raise StartupError("STORAGE_URI is empty; set spec.model.storageUri")
    if uri.startswith("models:/"):
        raise StartupError(
            f"storage URI {uri} is an MLflow Model Registry reference, which the operator "
            "resolves (spec.model.mlflow.trackingUri); run the server with the version's "
            "artifact location instead (s3://, gs://, pvc://<claim>/<path> or file://)"
        )
    if "://" not in uri:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", uri):
            raise StartupError(
                f"storage URI {uri} has a scheme this server does not read; use s3://, gs://, "
                "http(s)://, pvc://<claim>/<path> or file:// (or a local path)"
            )
        return StorageLocation("file", uri, uri)
    scheme, _, rest = uri.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        if not rest:
            raise StartupError(f"storage URI {uri} has no path")
        # file:///abs/path -> /abs/path; file://relative -> relative (as KServe accepts it).
        return StorageLocation("file", rest, uri)
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        if not claim:
            raise StartupError(f"storage URI {uri} must look like pvc://<claim>/<path>")
        _no_dotdot(sub, uri)
        return StorageLocation("file", str(pvc_root / claim / sub), uri)
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        if not parts.hostname or parts.path in ("", "/"):
            raise StartupError(
                f"storage URI {redact_uri(uri)} must name a file, e.g. https://host/model.joblib"
            )
        return StorageLocation("http", uri, uri)
    if scheme in ("s3", "gs", "gcs"):
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise StartupError(f"storage URI {uri} must look like {scheme}://<bucket>/<path>")
        _no_dotdot(key, uri)
        path = f"{bucket}/{key}".rstrip("/")
        return StorageLocation("s3" if scheme == "s3" else "gs", path, uri)
    raise StartupError(
        f"storage URI scheme {scheme}:// is not supported; use s3://, gs://, http(s)://, "
        "pvc://<claim>/<path> or file://"
    )
