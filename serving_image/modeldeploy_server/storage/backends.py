"""The fsspec filesystem for a remote StorageLocation, configured from the environment.

s3fs, gcsfs and fsspec's aiohttp HTTP filesystem all stream through the same loop in
``storage.fetch``; what differs is only how each is told about endpoints, credentials and
timeouts, which is all this module says. The backends are imported lazily, so parsing a URI or
serving a local file never loads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modeldeploy_server.errors import StartupError
from modeldeploy_server.storage.uri import StorageLocation

_FALSY = {"0", "false", "no", "off"}


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


def filesystem(loc: StorageLocation, env: Mapping[str, str]) -> Any:
    """An fsspec filesystem for a remote ``loc`` (not ``file``: local paths are read directly)."""
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
