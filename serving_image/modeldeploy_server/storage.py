"""Fetch the model artifact named by STORAGE_URI into the model directory: the only network I/O.

Backends are fsspec filesystems (s3fs, gcsfs, and fsspec's aiohttp-based HTTP), so the same
streaming loop serves every scheme; local paths and ``pvc://`` mounts are read in place instead of
copied. Every failure ends as a StartupError whose message is one sentence a person can act on,
because it becomes the pod's termination message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from modeldeploy_server.errors import StartupError
from modeldeploy_server.model import MODEL_SUFFIXES, SKOPS_SUFFIXES

log = logging.getLogger(__name__)

Scheme = Literal["file", "http", "s3", "gs"]
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CHUNK = 8 * 1024 * 1024
_PROGRESS_EVERY_S = 5.0
_FALSY = {"0", "false", "no", "off"}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """A parsed STORAGE_URI: ``path`` is what the backend understands (local path or fsspec)."""

    scheme: Scheme
    path: str
    uri: str

    @property
    def display(self) -> str:
        return redact_uri(self.uri)


@dataclass(frozen=True, slots=True)
class Artifact:
    """The local model file to load, and facts about what was fetched."""

    model_path: Path
    sha256: str
    size: int
    source: str


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
    if "://" not in uri:
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


# ---- filesystems -----------------------------------------------------------------------------


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in _FALSY


def s3_options(env: Mapping[str, str]) -> dict[str, Any]:
    """s3fs keyword arguments from the AWS_* / S3_* variables KServe users already set."""
    client: dict[str, Any] = {}
    config: dict[str, Any] = {
        "connect_timeout": 15,
        "read_timeout": 60,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    opts: dict[str, Any] = {"skip_instance_cache": True}
    endpoint = (
        env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
        or env.get("S3_ENDPOINT_URL")
        or env.get("S3_ENDPOINT")
    )
    if endpoint:
        if "://" not in endpoint:
            scheme = "https" if _flag(env, "S3_USE_HTTPS", True) else "http"
            endpoint = f"{scheme}://{endpoint}"
        opts["endpoint_url"] = endpoint
        # MinIO and most S3-compatible stores want path-style addressing.
        style = "virtual" if _flag(env, "S3_USER_VIRTUAL_BUCKET", False) else "path"
        config["s3"] = {"addressing_style": style}
    region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
    if region:
        client["region_name"] = region
    if not _flag(env, "S3_VERIFY_SSL", True):
        client["verify"] = False
    elif env.get("AWS_CA_BUNDLE"):
        client["verify"] = env["AWS_CA_BUNDLE"]
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        opts["key"] = env["AWS_ACCESS_KEY_ID"]
        opts["secret"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            opts["token"] = env["AWS_SESSION_TOKEN"]
    elif _flag(env, "S3_ANONYMOUS", False):
        opts["anon"] = True
    opts["client_kwargs"] = client
    opts["config_kwargs"] = config
    return opts


def _filesystem(loc: StorageLocation, env: Mapping[str, str]) -> Any:
    import fsspec

    if loc.scheme == "s3":
        return fsspec.filesystem("s3", **s3_options(env))
    if loc.scheme == "gs":
        token = env.get("GOOGLE_APPLICATION_CREDENTIALS") or None
        emulator = env.get("STORAGE_EMULATOR_HOST")  # the Google SDKs' variable, same meaning
        if emulator:
            from gcsfs.core import GCSFileSystem

            if "://" not in emulator:
                emulator = f"http://{emulator}"
            # The plain JSON-API filesystem: gcsfs's default one first asks the gRPC Storage
            # Control API for each bucket's layout, which an emulator never answers (60 s, every
            # call). Without a key file an emulator wants no credentials at all.
            return GCSFileSystem(
                token=token or "anon", endpoint_url=emulator, skip_instance_cache=True
            )
        return fsspec.filesystem("gcs", token=token, skip_instance_cache=True)
    if loc.scheme == "http":
        import aiohttp

        headers: dict[str, str] = {}
        raw = env.get("STORAGE_HTTP_HEADERS")
        if raw:
            try:
                headers = {str(k): str(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError):
                raise StartupError(
                    'STORAGE_HTTP_HEADERS must be a JSON object like {"Authorization": "..."}'
                ) from None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
        return fsspec.filesystem(
            "http",
            headers=headers,
            client_kwargs={"timeout": timeout},
            skip_instance_cache=True,
        )
    raise AssertionError(loc.scheme)


# ---- error classification --------------------------------------------------------------------


def _class_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


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


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: network trouble, timeouts, 5xx/429; never not-found or access denied."""
    if isinstance(exc, (FileNotFoundError, PermissionError, StartupError)):
        return False
    names = _class_names(exc)
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return False
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
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


def explain(exc: BaseException, loc: StorageLocation) -> str:
    """One actionable sentence for the termination log."""
    where = loc.display
    names = _class_names(exc)
    status = getattr(exc, "status", None)
    if isinstance(exc, StartupError):
        return exc.message
    if isinstance(exc, FileNotFoundError) or status == 404:
        return (
            f"model artifact not found at {where}: check spec.model.storageUri "
            "(bucket, path and file name) and that the object was uploaded"
        )
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return (
            f"no S3 credentials for {where}: reference a Secret with AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in spec.credentials.secretName (or set S3_ANONYMOUS=true "
            "for a public bucket)"
        )
    if isinstance(exc, PermissionError) or status in (401, 403):
        if loc.scheme == "s3":
            hint = (
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the credentials Secret, the "
                "endpoint (AWS_ENDPOINT_URL) and that the key may read this object"
            )
        elif loc.scheme == "gs":
            hint = "check the service-account key in GOOGLE_APPLICATION_CREDENTIALS"
        elif loc.scheme == "http":
            hint = "check the URL (an expired presigned URL?) or STORAGE_HTTP_HEADERS"
        else:
            hint = "check the file permissions for uid 1000"
        return f"access denied reading {where}: {hint}"
    if is_transient(exc):
        return (
            f"could not download {where} after retries ({type(exc).__name__}: {exc}); check "
            "that the storage endpoint is reachable from the pod"
        )
    return f"could not fetch {where} ({type(exc).__name__}: {exc})"


def failure_reason(exc: BaseException) -> str:
    """A stable label for logs and metrics, matching the cases of ``explain``."""
    names = _class_names(exc)
    status = getattr(exc, "status", None)
    if isinstance(exc, FileNotFoundError) or status == 404:
        return "artifact_missing"
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return "no_credentials"
    if isinstance(exc, PermissionError) or status in (401, 403):
        return "access_denied"
    return "download_failed"


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


# ---- choosing the model file -----------------------------------------------------------------


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_model(name: str, fmt: str) -> bool:
    suffixes = SKOPS_SUFFIXES if fmt == "skops" else MODEL_SUFFIXES
    return name.lower().endswith(suffixes)


def _ignored(path: str) -> bool:
    # macOS archive litter (._model.joblib, __MACOSX/) and hidden files are never the model.
    parts = PurePosixPath(path).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def choose_candidate(files: list[str], fmt: str, where: str) -> str:
    """Exactly one model file (or, failing that, exactly one archive) under a directory."""
    files = [f for f in files if not _ignored(f)]
    models = sorted(f for f in files if _is_model(f, fmt))
    if len(models) == 1:
        return models[0]
    kinds = "*.skops" if fmt == "skops" else "*.joblib, *.pkl, *.pickle or *.skops"
    if len(models) > 1:
        shown = ", ".join(PurePosixPath(m).name for m in models[:5])
        raise StartupError(
            f"found {len(models)} model files under {where} ({shown}); keep exactly one "
            f"{kinds} file there or point storageUri at the file itself",
            reason="ambiguous_artifact",
        )
    archives = sorted(f for f in files if _is_archive(f))
    if len(archives) == 1:
        return archives[0]
    if len(archives) > 1:
        raise StartupError(
            f"found {len(archives)} archives and no model file under {where}; keep exactly one",
            reason="ambiguous_artifact",
        )
    raise StartupError(
        f"no model file ({kinds}) under {where}; upload the model or fix spec.model.storageUri",
        reason="artifact_missing",
    )


# ---- archives --------------------------------------------------------------------------------


def _inside(dest: Path, name: str) -> bool:
    target = (dest / name).resolve()
    return target == dest or dest in target.parents


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpack .tar[.gz]/.tgz/.zip refusing absolute paths, '..', links and device files."""
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    bad = f"refusing to unpack {archive.name}: it contains the unsafe entry"
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename.startswith("/") or not _inside(dest, info.filename):
                    raise StartupError(f"{bad} {info.filename!r}", reason="unsafe_archive")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise StartupError(
                        f"{bad} {info.filename!r} (symlink)", reason="unsafe_archive"
                    )
            zf.extractall(dest)  # noqa: S202 - every entry was checked above
        return
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            if m.name.startswith("/") or not _inside(dest, m.name):
                raise StartupError(f"{bad} {m.name!r}", reason="unsafe_archive")
            if not (m.isfile() or m.isdir()):
                raise StartupError(
                    f"{bad} {m.name!r} (links and device files are not allowed)",
                    reason="unsafe_archive",
                )
        if hasattr(tarfile, "data_filter"):  # PEP 706, Python >= 3.11.4 (and Debian backports)
            tf.extractall(dest, members=members, filter="data")
        else:  # the checks above already refused everything the filter would
            tf.extractall(dest, members=members)  # noqa: S202 - checked above


def _local_files(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def _unpack(archive: Path, model_dir: Path, fmt: str) -> Path:
    dest = model_dir / "unpacked"
    if dest.exists():
        shutil.rmtree(dest)
    try:
        extract_archive(archive, dest)
    except StartupError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise StartupError(
            f"could not unpack {archive.name} ({type(exc).__name__}: {exc}); upload a valid "
            ".tar.gz or .zip",
            reason="unreadable_archive",
        ) from exc
    inner = choose_candidate(_local_files(dest), fmt, f"the archive {archive.name}")
    if _is_archive(inner):
        raise StartupError(
            f"{archive.name} holds another archive ({inner}) and no model file; "
            "put the model file itself in the archive",
            reason="artifact_missing",
        )
    return dest / inner


# ---- fetching --------------------------------------------------------------------------------


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
        artifact = root / choose_candidate(_local_files(root), fmt, loc.display)
    else:
        artifact = root
    actual = sha256_file(artifact)
    _verify(actual, sha256, artifact.name)
    size = artifact.stat().st_size
    model_path = _unpack(artifact, model_dir, fmt) if _is_archive(artifact.name) else artifact
    return Artifact(model_path, actual, size, str(artifact))


def _remote_name(rpath: str, loc: StorageLocation, fmt: str) -> str:
    name = PurePosixPath(urlsplit(rpath).path if loc.scheme == "http" else rpath).name
    if _is_model(name, "sklearn") or _is_archive(name):
        return name
    # A URL without a telling suffix (e.g. /download?id=3): name it after the format.
    return "model.skops" if fmt == "skops" else "model.joblib"


def _fetch_remote(
    loc: StorageLocation,
    model_dir: Path,
    fmt: str,
    sha256: str,
    env: Mapping[str, str],
    attempts: int,
    backoff_s: float,
) -> Artifact:
    fs = _filesystem(loc, env)

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
    model_path = _unpack(dest, model_dir, fmt) if _is_archive(dest.name) else dest
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
        raise StartupError(explain(exc, loc), reason=failure_reason(exc)) from exc
