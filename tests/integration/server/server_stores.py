"""Helpers shared by the server's integration tests (a uniquely named module, not conftest,
so test files can import it without clashing with the other conftest.py files)."""

from __future__ import annotations

import io
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class HttpStore:
    root: Path
    url: str
    hold: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)

    def put(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{name}"


@dataclass
class S3Store:
    endpoint: str
    env: dict[str, str]
    client: Any
    bucket: str = "models"
    scheme: str = "s3"

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=io.BytesIO(data))
        return f"s3://{self.bucket}/{key}"


@dataclass
class GcsStore:
    """A bucket on a GCS emulator (gcp-storage-emulator) speaking the JSON API on loopback."""

    endpoint: str
    env: dict[str, str]
    fs: Any
    bucket: str
    scheme: str = "gs"

    def put(self, key: str, data: bytes) -> str:
        self.fs.pipe(f"{self.bucket}/{key}", data)
        return f"gs://{self.bucket}/{key}"


BucketStore = S3Store | GcsStore  # what the ``bucket_store`` fixture hands out: put, env, scheme
