"""Storage without a network: URI parsing, S3 options from env, choosing the file, archives,
retries and the sentences written for failures. Real HTTP/S3 servers are in tests/integration."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import joblib
import pytest
from modeldeploy_server.errors import StartupError
from modeldeploy_server.storage.archives import extract_archive
from modeldeploy_server.storage.backends import s3_options
from modeldeploy_server.storage.failures import classify, is_transient, with_retries
from modeldeploy_server.storage.fetch import fetch
from modeldeploy_server.storage.selection import choose_candidate
from modeldeploy_server.storage.uri import StorageLocation, parse_storage_uri, redact_uri
from sklearn.ensemble import RandomForestClassifier

PVC = Path("/mnt/pvc")


@pytest.mark.parametrize(
    ("uri", "scheme", "path"),
    [
        ("/models/iris.joblib", "file", "/models/iris.joblib"),
        ("file:///models/iris.joblib", "file", "/models/iris.joblib"),
        ("pvc://claim/iris/v1", "file", "/mnt/pvc/claim/iris/v1"),
        ("pvc://claim", "file", "/mnt/pvc/claim"),
        ("s3://models/iris/v2/", "s3", "models/iris/v2"),
        ("s3://models/iris/model.joblib", "s3", "models/iris/model.joblib"),
        ("gs://bucket/iris", "gs", "bucket/iris"),
        ("https://example.com/m/model.joblib", "http", "https://example.com/m/model.joblib"),
    ],
)
def test_accepted_uris(uri: str, scheme: str, path: str) -> None:
    loc = parse_storage_uri(uri, PVC)
    assert (loc.scheme, loc.path) == (scheme, path)


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("", "STORAGE_URI is empty"),
        ("hdfs://nn/model", "hdfs:// is not supported"),
        ("s3://", "s3://<bucket>/<path>"),
        ("pvc:///x", "pvc://<claim>/<path>"),
        ("pvc://claim/../other", "'..'"),
        ("s3://b/a/../../c", "'..'"),
        ("https://example.com/", "must name a file"),
        # not "not found" as if it were a local path: the operator resolves registry references
        ("models:/iris/1", "MLflow Model Registry reference, which the operator resolves"),
        ("models:/iris@champion", "spec.model.mlflow.trackingUri"),
        ("mailto:x@y", "has a scheme this server does not read; use s3://"),
    ],
)
def test_rejected_uris(uri: str, fragment: str) -> None:
    with pytest.raises(StartupError, match=fragment):
        parse_storage_uri(uri, PVC)


def test_redaction_drops_credentials_and_signatures() -> None:
    assert (
        redact_uri("https://user:pw@h.example:8443/m.joblib?X-Amz-Signature=abc")
        == "https://h.example:8443/m.joblib"
    )
    assert redact_uri("s3://bucket/key") == "s3://bucket/key"
    assert redact_uri("/local/path") == "/local/path"


def test_s3_options_for_minio() -> None:
    opts = s3_options(
        {
            "AWS_ACCESS_KEY_ID": "minio",
            "AWS_SECRET_ACCESS_KEY": "minio123",
            "S3_ENDPOINT_URL": "minio.minio:9000",
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    assert opts["endpoint_url"] == "http://minio.minio:9000"
    assert opts["key"] == "minio"
    assert opts["secret"] == "minio123"
    assert opts["client_kwargs"] == {"region_name": "eu-west-1", "verify": False}
    assert opts["config_kwargs"]["s3"] == {"addressing_style": "path"}


def test_s3_options_prefer_aws_endpoint_url_and_keep_https() -> None:
    opts = s3_options({"AWS_ENDPOINT_URL": "s3.example.com", "S3_ENDPOINT_URL": "other"})
    assert opts["endpoint_url"] == "https://s3.example.com"
    assert "key" not in opts  # botocore's own chain (IRSA, instance profile) applies
    assert s3_options({"S3_ANONYMOUS": "true"})["anon"] is True


def test_choose_candidate() -> None:
    assert choose_candidate(["README.md", "model.joblib"], "sklearn", "x") == "model.joblib"
    assert choose_candidate(["._model.joblib", "m.pkl"], "sklearn", "x") == "m.pkl"
    assert choose_candidate(["m.joblib", "m.skops"], "skops", "x") == "m.skops"
    assert choose_candidate(["bundle.tar.gz", "notes.txt"], "sklearn", "x") == "bundle.tar.gz"
    with pytest.raises(
        StartupError, match=r"found 2 model files under s3://b/p \(a.pkl, b.joblib\)"
    ):
        choose_candidate(["b.joblib", "a.pkl"], "sklearn", "s3://b/p")
    with pytest.raises(StartupError, match="no model file"):
        choose_candidate(["README.md"], "sklearn", "x")


def _tar_with(entry: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.addfile(entry, io.BytesIO(data) if entry.isfile() else None)
    return buf.getvalue()


def test_tar_path_traversal_is_refused(tmp_path: Path) -> None:
    entry = tarfile.TarInfo("../../evil.joblib")
    entry.size = 1
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(_tar_with(entry))
    with pytest.raises(StartupError, match=r"unsafe entry '\.\./\.\./evil\.joblib'"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.joblib").exists()


def test_tar_symlink_is_refused(tmp_path: Path) -> None:
    entry = tarfile.TarInfo("model.joblib")
    entry.type = tarfile.SYMTYPE
    entry.linkname = "/etc/passwd"
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(_tar_with(entry))
    with pytest.raises(StartupError, match="links and device files"):
        extract_archive(archive, tmp_path / "out")


def test_zip_path_traversal_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.pkl", b"x")
    with pytest.raises(StartupError, match=r"unsafe entry '\.\./escape\.pkl'"):
        extract_archive(archive, tmp_path / "out")


def test_local_archive_is_unpacked_and_verified(
    tmp_path: Path, forest: RandomForestClassifier
) -> None:
    model = tmp_path / "src" / "model.joblib"
    model.parent.mkdir()
    joblib.dump(forest, model)
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(model, arcname="iris/model.joblib")
    art = fetch(str(archive), model_dir=tmp_path / "dl", pvc_root=PVC, fmt="sklearn")
    assert art.model_path == tmp_path / "dl" / "unpacked" / "iris" / "model.joblib"
    with pytest.raises(StartupError, match=r"sha256 of bundle\.tar\.gz is"):
        fetch(str(archive), model_dir=tmp_path / "dl", pvc_root=PVC, fmt="sklearn", sha256="0" * 64)


def test_pvc_path_is_read_in_place(tmp_path: Path, forest: RandomForestClassifier) -> None:
    (tmp_path / "claim" / "iris").mkdir(parents=True)
    joblib.dump(forest, tmp_path / "claim" / "iris" / "model.joblib")
    art = fetch("pvc://claim/iris", model_dir=tmp_path / "dl", pvc_root=tmp_path, fmt="sklearn")
    assert art.model_path == tmp_path / "claim" / "iris" / "model.joblib"
    with pytest.raises(StartupError, match="not found at pvc://claim/nope: check the claim"):
        fetch("pvc://claim/nope", model_dir=tmp_path / "dl", pvc_root=tmp_path, fmt="sklearn")


def test_empty_uri_serves_the_model_dir(tmp_path: Path, forest: RandomForestClassifier) -> None:
    joblib.dump(forest, tmp_path / "model.joblib")
    art = fetch("", model_dir=tmp_path, pvc_root=PVC, fmt="sklearn")
    assert art.model_path == tmp_path / "model.joblib"


class StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class EndpointConnectionError(Exception):
    """Stands in for botocore's class of the same name (matched by name, not import)."""


class NoCredentialsError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (StatusError(503), True),
        (StatusError(429), True),
        (EndpointConnectionError(), True),
        (StatusError(403), False),
        (FileNotFoundError(), False),
        (PermissionError(), False),
        (NoCredentialsError(), False),
        (ValueError(), False),
    ],
)
def test_transient_classification(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_retries_back_off_then_succeed() -> None:
    calls: list[int] = []
    delays: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert with_retries(flaky, what="x", attempts=5, backoff_s=1.0, sleep=delays.append) == "ok"
    assert len(calls) == 3
    assert len(delays) == 2
    assert delays[1] > delays[0] * 0.5  # exponential with jitter: 1s*[0.5,1.5) then 2s*[0.5,1.5)


def test_permanent_errors_are_not_retried() -> None:
    calls: list[int] = []

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("nope")

    with pytest.raises(FileNotFoundError):
        with_retries(missing, what="x", attempts=5, backoff_s=0, sleep=lambda _: None)
    assert calls == [1]


def test_retries_give_up_after_the_budget() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        with_retries(down, what="x", attempts=3, backoff_s=0, sleep=lambda _: None)
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("exc", "reason", "fragment"),
    [
        (
            FileNotFoundError("k"),
            "artifact_missing",
            "model artifact not found at s3://b/k: check spec.model.storageUri",
        ),
        (StatusError(404), "artifact_missing", "model artifact not found at s3://b/k"),
        (
            PermissionError("denied"),
            "access_denied",
            "access denied reading s3://b/k: check AWS_ACCESS_KEY_ID",
        ),
        (StatusError(403), "access_denied", "access denied reading s3://b/k"),
        (NoCredentialsError(), "no_credentials", "no S3 credentials for s3://b/k"),
        (
            ConnectionRefusedError("refused"),
            "download_failed",
            "could not download s3://b/k after retries",
        ),
        (ValueError("odd"), "download_failed", "could not fetch s3://b/k (ValueError: odd)"),
        (
            StartupError("the server's own sentence", reason="digest_mismatch"),
            "digest_mismatch",
            "the server's own sentence",
        ),
    ],
)
def test_failure_reason_and_sentence(exc: Exception, reason: str, fragment: str) -> None:
    failure = classify(exc, StorageLocation("s3", "b/k", "s3://b/k"))
    assert failure.reason == reason
    assert fragment in failure.message


@pytest.mark.parametrize(
    ("scheme", "hint"),
    [
        ("gs", "GOOGLE_APPLICATION_CREDENTIALS"),
        ("http", "STORAGE_HTTP_HEADERS"),
        ("file", "file permissions for uid 1000"),
    ],
)
def test_access_denied_says_what_to_check_for_the_backend(scheme: str, hint: str) -> None:
    loc = StorageLocation(scheme, "b/k", f"{scheme}://b/k")  # type: ignore[arg-type]
    assert hint in classify(PermissionError(), loc).message
