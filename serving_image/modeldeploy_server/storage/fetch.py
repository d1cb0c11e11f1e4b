"""Fetch the model artifact named by STORAGE_URI into the model directory.

Local paths and ``pvc://`` mounts are read in place; remote ones are streamed through an fsspec
filesystem (``storage.backends``) to a ``.part`` file, hashed while streaming, and renamed when
complete. Every failure ends as a StartupError whose reason and message come from
``storage.failures.classify``, because the message becomes the pod's termination message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from modeldeploy_server.errors import StartupError
from modeldeploy_server.formats import model_format
from modeldeploy_server.storage.archives import unpack
from modeldeploy_server.storage.backends import filesystem
from modeldeploy_server.storage.failures import classify, with_retries
from modeldeploy_server.storage.selection import (
    choose_candidate,
    is_archive,
    is_model,
    local_files,
)
from modeldeploy_server.storage.uri import StorageLocation, parse_storage_uri, redact_uri

log = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024
_PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Artifact:
    """The local model file to load, and facts about what was fetched."""

    model_path: Path
    sha256: str
    size: int
    source: str


class _Progress:
    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.started = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            self.log(now)

    def log(self, now: float | None = None) -> None:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        mib = self.done / 2**20
        pct = (
            f" of {self.total / 2**20:.1f} MiB ({100 * self.done / self.total:.0f}%)"
            if (self.total)
            else ""
        )
        log.info("%s: %.1f MiB%s at %.1f MiB/s", self.what, mib, pct, mib / elapsed)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _download(fs: Any, loc: StorageLocation, rpath: str, dest: Path, size: int | None) -> str:
    """Stream one remote file to ``dest`` via a .part file, hashing as it goes."""
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    if loc.scheme == "http":
        # block_size=0 streams the body instead of issuing range requests (which presigned URLs
        # and many plain web servers do not support).
        src_cm = fs.open(rpath, "rb", block_size=0)
    else:
        src_cm = fs.open(rpath, "rb", block_size=CHUNK, cache_type="none")
    with src_cm as src:
        if size is None:
            size = getattr(src, "size", None)
        progress = _Progress(f"downloading {PurePosixPath(rpath).name}", size)
        with part.open("wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                progress.add(len(chunk))
        progress.log()
    if size is not None and progress.done != size:
        raise ConnectionError(f"download ended at {progress.done} of {size} bytes")
    part.replace(dest)
    return h.hexdigest()


def _verify(actual: str, expected: str, name: str) -> None:
    if expected and actual != expected:
        raise StartupError(
            f"sha256 of {name} is {actual} but spec.model.sha256 is {expected}: the artifact "
            "changed or the digest is wrong, so the server refuses to load it",
            reason="digest_mismatch",
        )


def _fetch_local(loc: StorageLocation, model_dir: Path, fmt: str, sha256: str) -> Artifact:
    root = Path(loc.path)
    if not root.exists():
        hint = (
            "check the claim name and path, and that the volume is mounted"
            if loc.uri.startswith("pvc://")
            else "check the path"
        )
        raise StartupError(
            f"model artifact not found at {loc.display}: {hint}", reason="artifact_missing"
        )
    if root.is_dir():
        artifact = root / choose_candidate(local_files(root), fmt, loc.display)
    else:
        artifact = root
    actual = sha256_file(artifact)
    _verify(actual, sha256, artifact.name)
    size = artifact.stat().st_size
    model_path = unpack(artifact, model_dir, fmt) if is_archive(artifact.name) else artifact
    return Artifact(model_path, actual, size, str(artifact))


def _remote_name(rpath: str, loc: StorageLocation, fmt: str) -> str:
    name = PurePosixPath(urlsplit(rpath).path if loc.scheme == "http" else rpath).name
    if is_model(name) or is_archive(name):
        return name
    # A URL without a telling suffix (e.g. /download?id=3): name it after the format.
    return model_format(fmt).default_file


def _fetch_remote(
    loc: StorageLocation,
    model_dir: Path,
    fmt: str,
    sha256: str,
    env: Mapping[str, str],
    attempts: int,
    backoff_s: float,
) -> Artifact:
    fs = filesystem(loc, env)

    def resolve() -> tuple[str, int | None]:
        if loc.scheme == "http":
            return loc.path, None
        info = fs.info(loc.path)
        if info.get("type") == "directory":
            files = [p for p in fs.find(loc.path) if p.rstrip("/") != loc.path]
            rel = [p[len(loc.path) :].lstrip("/") for p in files]
            chosen = choose_candidate(rel, fmt, loc.display)
            rpath = f"{loc.path}/{chosen}"
            return rpath, fs.info(rpath).get("size")
        return loc.path, info.get("size")

    rpath, size = with_retries(
        resolve, what=f"listing {loc.display}", attempts=attempts, backoff_s=backoff_s
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    dest = model_dir / _remote_name(rpath, loc, fmt)
    if sha256 and dest.exists() and sha256_file(dest) == sha256:
        # A restarted container keeps its emptyDir: don't download the same bytes again.
        log.info("reusing %s already in %s (sha256 matches)", dest.name, model_dir)
        actual = sha256
    else:
        actual = with_retries(
            lambda: _download(fs, loc, rpath, dest, size),
            what=f"downloading {loc.display}",
            attempts=attempts,
            backoff_s=backoff_s,
        )
        _verify(actual, sha256, dest.name)
    size_now = dest.stat().st_size
    model_path = unpack(dest, model_dir, fmt) if is_archive(dest.name) else dest
    return Artifact(model_path, actual, size_now, redact_uri(f"{loc.uri}"))


def fetch(
    uri: str,
    *,
    model_dir: Path,
    pvc_root: Path,
    fmt: str,
    sha256: str = "",
    env: Mapping[str, str] | None = None,
    attempts: int = 5,
    backoff_s: float = 1.0,
) -> Artifact:
    """Resolve, download (if remote), verify and unpack; StartupError on any failure."""
    env = os.environ if env is None else env
    if not uri:
        # No URI: serve what an init container (or a person) put into the model dir.
        loc = StorageLocation("file", str(model_dir), str(model_dir))
    else:
        loc = parse_storage_uri(uri, pvc_root)
    log.info("fetching model from %s", loc.display)
    try:
        if loc.scheme == "file":
            return _fetch_local(loc, model_dir, fmt, sha256)
        return _fetch_remote(loc, model_dir, fmt, sha256, env, attempts, backoff_s)
    except StartupError:
        raise
    except Exception as exc:
        failure = classify(exc, loc)
        raise StartupError(failure.message, reason=failure.reason) from exc
