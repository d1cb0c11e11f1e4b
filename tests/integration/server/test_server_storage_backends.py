"""fetch() + load_model() against a real HTTP server, a real S3 API (moto) and a GCS emulator."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modeldeploy_server.errors import StartupError
from modeldeploy_server.runtime.sklearn_model import load_model
from modeldeploy_server.storage.fetch import fetch
from server_stores import BucketStore, HttpStore, S3Store, free_port

pytestmark = pytest.mark.integration
PVC = Path("/nonexistent-pvc")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_from(store: BucketStore, uri: str, model_dir: Path, **kw: Any) -> Any:
    return fetch(
        uri, model_dir=model_dir, pvc_root=PVC, env=store.env, attempts=2, backoff_s=0, **kw
    )


class TestHttp:
    def test_file_download_with_digest(
        self, http_store: HttpStore, artifacts: dict[str, bytes], tmp_path: Path, iris_forest: Any
    ) -> None:
        url = http_store.put("iris/model.joblib", artifacts["joblib"])
        art = fetch(
            url,
            model_dir=tmp_path,
            pvc_root=PVC,
            fmt="sklearn",
            sha256=sha(artifacts["joblib"]),
            env={},
        )
        assert art.model_path == tmp_path / "model.joblib"
        assert art.sha256 == sha(artifacts["joblib"])
        model = load_model(art.model_path, "sklearn")
        x = np.array([[5.1, 3.5, 1.4, 0.2]])
        assert model.estimator.predict(x).tolist() == iris_forest.predict(x).tolist()

    def test_tar_gz_is_unpacked(
        self, http_store: HttpStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("model/model.skops")
            info.size = len(artifacts["skops"])
            tf.addfile(info, io.BytesIO(artifacts["skops"]))
        url = http_store.put("bundle.tar.gz", buf.getvalue())
        art = fetch(url, model_dir=tmp_path, pvc_root=PVC, fmt="skops", env={})
        assert art.model_path.name == "model.skops"
        assert load_model(art.model_path, "skops").n_features == 4

    def test_digest_mismatch(
        self, http_store: HttpStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        url = http_store.put("model.joblib", artifacts["joblib"])
        with pytest.raises(StartupError) as err:
            fetch(url, model_dir=tmp_path, pvc_root=PVC, fmt="sklearn", sha256="f" * 64, env={})
        assert err.value.reason == "digest_mismatch"
        assert f"sha256 of model.joblib is {sha(artifacts['joblib'])}" in err.value.message
        assert "spec.model.sha256 is " + "f" * 64 in err.value.message

    def test_missing_file(self, http_store: HttpStore, tmp_path: Path) -> None:
        with pytest.raises(StartupError) as err:
            fetch(
                f"{http_store.url}/nope/model.joblib",
                model_dir=tmp_path,
                pvc_root=PVC,
                fmt="sklearn",
                env={},
                attempts=2,
                backoff_s=0,
            )
        assert err.value.reason == "artifact_missing"
        assert "model artifact not found at http://127.0.0.1" in err.value.message


class TestObjectStores:
    """The same cases on each bucket store: S3 (moto) and GCS (gcp-storage-emulator)."""

    def test_prefix_with_one_model(
        self, bucket_store: BucketStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        bucket_store.put("iris/v2/model.joblib", artifacts["joblib"])
        bucket_store.put("iris/v2/README.md", b"notes")
        art = fetch_from(
            bucket_store,
            f"{bucket_store.scheme}://{bucket_store.bucket}/iris/v2/",
            tmp_path,
            fmt="sklearn",
            sha256=sha(artifacts["joblib"]),
        )
        assert art.model_path == tmp_path / "model.joblib"
        assert art.model_path.read_bytes() == artifacts["joblib"]
        assert not (tmp_path / "README.md").exists()  # only the model is downloaded
        model = load_model(art.model_path, "sklearn")
        assert model.estimator.predict(np.array([[5.1, 3.5, 1.4, 0.2]])).tolist() == [0]

    def test_single_object(
        self, bucket_store: BucketStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        uri = bucket_store.put("iris/model.skops", artifacts["skops"])
        art = fetch_from(bucket_store, uri, tmp_path, fmt="skops")
        assert load_model(art.model_path, "skops").classes is not None

    def test_two_candidates(
        self, bucket_store: BucketStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        bucket_store.put("iris/a.joblib", artifacts["joblib"])
        bucket_store.put("iris/b.pkl", artifacts["joblib"])
        uri = f"{bucket_store.scheme}://{bucket_store.bucket}/iris"
        with pytest.raises(StartupError) as err:
            fetch_from(bucket_store, uri, tmp_path, fmt="sklearn")
        assert err.value.reason == "ambiguous_artifact"
        assert "found 2 model files" in err.value.message
        assert "a.joblib, b.pkl" in err.value.message

    def test_missing_object(self, bucket_store: BucketStore, tmp_path: Path) -> None:
        uri = f"{bucket_store.scheme}://{bucket_store.bucket}/iris/v9/model.joblib"
        with pytest.raises(StartupError) as err:
            fetch_from(bucket_store, uri, tmp_path, fmt="sklearn")
        assert err.value.reason == "artifact_missing"
        assert f"model artifact not found at {uri}" in err.value.message

    def test_missing_bucket(self, bucket_store: BucketStore, tmp_path: Path) -> None:
        bucket = f"{bucket_store.scheme}://no-such-bucket"
        with pytest.raises(StartupError, match=f"model artifact not found at {bucket}"):
            fetch_from(bucket_store, f"{bucket}/iris/", tmp_path, fmt="sklearn")

    def test_digest_mismatch(
        self, bucket_store: BucketStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        uri = bucket_store.put("iris/model.joblib", artifacts["joblib"])
        with pytest.raises(StartupError) as err:
            fetch_from(bucket_store, uri, tmp_path, fmt="sklearn", sha256="0" * 64)
        assert err.value.reason == "digest_mismatch"

    def test_corrupted_pickle_is_refused_at_load(
        self, bucket_store: BucketStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        uri = bucket_store.put("iris/model.pkl", artifacts["corrupt"])
        art = fetch_from(bucket_store, uri, tmp_path, fmt="sklearn")
        with pytest.raises(StartupError) as err:
            load_model(art.model_path, "sklearn")
        assert err.value.reason == "unreadable_model"
        assert "could not load model.pkl" in err.value.message

    def test_untrusted_skops_is_refused_at_load(
        self, bucket_store: BucketStore, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        uri = bucket_store.put("iris/model.skops", artifacts["untrusted_skops"])
        art = fetch_from(bucket_store, uri, tmp_path, fmt="skops")
        with pytest.raises(StartupError) as err:
            load_model(art.model_path, "skops")
        assert err.value.reason == "untrusted_types"
        assert "_operator.neg" in err.value.message


class TestS3:
    def test_second_start_reuses_a_verified_file(
        self, s3_store: S3Store, artifacts: dict[str, bytes], tmp_path: Path
    ) -> None:
        uri = s3_store.put("iris/model.joblib", artifacts["joblib"])
        digest = sha(artifacts["joblib"])
        fetch_from(s3_store, uri, tmp_path, fmt="sklearn", sha256=digest)
        s3_store.client.delete_object(Bucket=s3_store.bucket, Key="iris/model.joblib")
        s3_store.put("iris/model.joblib", artifacts["joblib"])  # same bytes, new object
        art = fetch_from(s3_store, uri, tmp_path, fmt="sklearn", sha256=digest)
        assert art.sha256 == digest

    def test_unreachable_endpoint_is_retried_then_explained(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        env = {
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        }
        with pytest.raises(StartupError) as err:
            fetch(
                "s3://models/iris/model.joblib",
                model_dir=tmp_path,
                pvc_root=PVC,
                fmt="sklearn",
                env=env,
                attempts=2,
                backoff_s=0,
            )
        assert "could not download s3://models/iris/model.joblib after retries" in err.value.message
        assert "attempt 1/2" in caplog.text
