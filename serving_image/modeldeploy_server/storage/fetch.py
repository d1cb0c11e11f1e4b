"""Fetch the model artifact named by STORAGE_URI into the model directory.

Local paths and ``pvc://`` mounts are read in place; remote ones are streamed through an fsspec
filesystem (``storage.backends``) to a ``.part`` file, hashed while streaming, and renamed when
complete. Every failure ends as a StartupError whose reason and message come from
``storage.failures.classify``, because the message becomes the pod's termination message.

An MLflow directory is fetched as its ``MLmodel`` file and the one model file it names (the
environment files beside them are never read); the digest covers that model file.
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
from modeldeploy_server.formats import MLMODEL_FILE, MLMODEL_FORMATS, model_format
from modeldeploy_server.mlmodel import MLmodel, missing_model_file, parse_mlmodel
from modeldeploy_server.storage.archives import unpack
from modeldeploy_server.storage.backends import filesystem
from modeldeploy_server.storage.failures import classify, with_retries
from modeldeploy_server.storage.selection import (
    choose_candidate,
    is_archive,
    is_mlmodel,
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
    mlmodel: MLmodel | None = None  # an MLflow directory's MLmodel, beside model_path


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


def _local_mlflow(mlmodel_path: Path, where: str) -> tuple[MLmodel, Path]:
    """The parsed MLmodel and the model file it names, which must be beside it."""
    try:
        text = mlmodel_path.read_bytes()
    except OSError as exc:
        raise StartupError(
            f"could not read {where} ({type(exc).__name__}: {exc})", reason="artifact_missing"
        ) from exc
    mlmodel = parse_mlmodel(text, where)
    model = mlmodel_path.parent / mlmodel.pickled_model
    if not model.is_file():
        raise missing_model_file(mlmodel, str(model))
    return mlmodel, model


def _artifact(
    model_path: Path, sha256: str, size: int, source: str, fmt: str, packed_in: str
) -> Artifact:
    """What storage produced: a model file, or (under the formats that recognise MLflow
    directories) the MLmodel of a directory that came packed in the archive ``packed_in``."""
    if fmt in MLMODEL_FORMATS and is_mlmodel(model_path.name):
        mlmodel, model = _local_mlflow(model_path, f"{MLMODEL_FILE} in {packed_in}")
        return Artifact(model, sha256, size, source, mlmodel)
    return Artifact(model_path, sha256, size, source)


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
    if fmt in MLMODEL_FORMATS and is_mlmodel(artifact.name):
        mlmodel, model = _local_mlflow(artifact, str(artifact))
        actual = sha256_file(model)
        _verify(actual, sha256, model.name)
        return Artifact(model, actual, model.stat().st_size, str(model), mlmodel)
    actual = sha256_file(artifact)
    _verify(actual, sha256, artifact.name)
    size = artifact.stat().st_size
    model_path = unpack(artifact, model_dir, fmt) if is_archive(artifact.name) else artifact
    return _artifact(model_path, actual, size, str(artifact), fmt, artifact.name)


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
    if fmt in MLMODEL_FORMATS and is_mlmodel(rpath):
        return _fetch_remote_mlflow(fs, loc, rpath, model_dir, sha256, attempts, backoff_s)
    dest = model_dir / _remote_name(rpath, loc, fmt)
    actual = _download_verified(fs, loc, rpath, dest, size, sha256, attempts, backoff_s)
    size_now = dest.stat().st_size
    model_path = unpack(dest, model_dir, fmt) if is_archive(dest.name) else dest
    return _artifact(model_path, actual, size_now, redact_uri(loc.uri), fmt, dest.name)


def _download_verified(
    fs: Any,
    loc: StorageLocation,
    rpath: str,
    dest: Path,
    size: int | None,
    sha256: str,
    attempts: int,
    backoff_s: float,
) -> str:
    """Download ``rpath`` to ``dest`` (unless a restart left it there) and check its digest."""
    if sha256 and dest.exists() and sha256_file(dest) == sha256:
        # A restarted container keeps its emptyDir: don't download the same bytes again.
        log.info("reusing %s already in %s (sha256 matches)", dest.name, dest.parent)
        return sha256
    actual = with_retries(
        lambda: _download(fs, loc, rpath, dest, size),
        what=f"downloading {_remote_display(loc, rpath)}",
        attempts=attempts,
        backoff_s=backoff_s,
    )
    _verify(actual, sha256, dest.name)
    return actual


def _remote_display(loc: StorageLocation, rpath: str) -> str:
    return redact_uri(rpath if loc.scheme == "http" else f"{loc.scheme}://{rpath}")


def _fetch_remote_mlflow(
    fs: Any,
    loc: StorageLocation,
    mlmodel_rpath: str,
    model_dir: Path,
    sha256: str,
    attempts: int,
    backoff_s: float,
) -> Artifact:
    """The MLmodel file, then the one model file it names from the same directory."""
    where = _remote_display(loc, mlmodel_rpath)
    text: bytes = with_retries(
        lambda: fs.cat_file(mlmodel_rpath),
        what=f"reading {where}",
        attempts=attempts,
        backoff_s=backoff_s,
    )
    mlmodel = parse_mlmodel(text, where)
    (model_dir / MLMODEL_FILE).write_bytes(text)
    rmodel = f"{mlmodel_rpath.rsplit('/', 1)[0]}/{mlmodel.pickled_model}"

    def model_size() -> int | None:
        try:
            info = fs.info(rmodel)
        except FileNotFoundError:
            raise missing_model_file(mlmodel, _remote_display(loc, rmodel)) from None
        size = info.get("size")
        return int(size) if size is not None else None

    size = with_retries(model_size, what=f"listing {where}", attempts=attempts, backoff_s=backoff_s)
    dest = model_dir / mlmodel.pickled_model
    dest.parent.mkdir(parents=True, exist_ok=True)
    actual = _download_verified(fs, loc, rmodel, dest, size, sha256, attempts, backoff_s)
    return Artifact(dest, actual, dest.stat().st_size, _remote_display(loc, rmodel), mlmodel)


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
