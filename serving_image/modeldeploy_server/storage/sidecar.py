"""Fetch a small file that lives beside the model: the reference profile drift is measured against.

The profile is found automatically next to the model (``<model stem>.profile.json`` or
``profile.json``: in the model's local directory, which covers file://, pvc:// and unpacked
archives, then beside the model in the bucket for s3:// and gs://) or named by PROFILE_URI, read
through the same backends as the model. It is monitoring, not serving: a profile that can't be
read is reported (``SidecarError``, a sentence) and the model is served without drift tracking.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from modeldeploy_server.storage.backends import filesystem
from modeldeploy_server.storage.failures import with_retries
from modeldeploy_server.storage.selection import is_archive, is_model
from modeldeploy_server.storage.uri import StorageLocation, parse_storage_uri

log = logging.getLogger(__name__)

MAX_BYTES = 16 * 1024 * 1024  # a profile of 100 features is a few tens of KiB


class SidecarError(Exception):
    """A named file that could not be read; the message says which and why."""


def profile_names(model_path: Path) -> tuple[str, ...]:
    """File names a profile beside ``model_path`` may have, most specific first."""
    return (f"{model_path.stem}.profile.json", "profile.json")


def _read_remote(fs: Any, loc: StorageLocation, rpath: str) -> bytes:
    opened = fs.open(rpath, "rb", block_size=0) if loc.scheme == "http" else fs.open(rpath, "rb")
    with opened as f:
        data: bytes = f.read(MAX_BYTES + 1)
    return data


def _checked(data: bytes, where: str) -> bytes:
    if len(data) > MAX_BYTES:
        raise SidecarError(f"{where} is larger than {MAX_BYTES // 2**20} MiB; is it a profile?")
    return data


def read_file(
    uri: str,
    *,
    pvc_root: Path,
    env: Mapping[str, str],
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> bytes:
    """The bytes at ``uri`` (any STORAGE_URI scheme); SidecarError if they can't be read."""
    loc = parse_storage_uri(uri, pvc_root)
    try:
        if loc.scheme == "file":
            with Path(loc.path).open("rb") as f:
                return _checked(f.read(MAX_BYTES + 1), loc.display)
        fs = filesystem(loc, env)
        data = with_retries(
            lambda: _read_remote(fs, loc, loc.path),
            what=f"reading {loc.display}",
            attempts=attempts,
            backoff_s=backoff_s,
        )
        return _checked(data, loc.display)
    except SidecarError:
        raise
    except FileNotFoundError:
        raise SidecarError(f"no file at {loc.display}") from None
    except Exception as exc:
        raise SidecarError(f"could not read {loc.display} ({type(exc).__name__}: {exc})") from None


def find_beside(
    storage_uri: str,
    model_path: Path,
    *,
    pvc_root: Path,
    env: Mapping[str, str],
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> tuple[str, bytes] | None:
    """(where, bytes) of the first profile found beside the model, or None."""
    names = profile_names(model_path)
    for name in names:
        local = model_path.parent / name
        if local.is_file():
            return str(local), _checked(local.read_bytes(), str(local))
    if not storage_uri:
        return None
    loc = parse_storage_uri(storage_uri, pvc_root)
    if loc.scheme not in ("s3", "gs"):
        return None  # local ones were looked at above; http(s) siblings need PROFILE_URI
    base = PurePosixPath(loc.path)
    if is_model(base.name) or is_archive(base.name):
        base = base.parent
    fs = filesystem(loc, env)
    for name in names:
        rpath = f"{base}/{name}"
        where = f"{loc.scheme}://{rpath}"
        try:
            data = with_retries(
                functools.partial(_read_remote, fs, loc, rpath),
                what=f"reading {where}",
                attempts=attempts,
                backoff_s=backoff_s,
            )
        except FileNotFoundError:
            continue
        except Exception as exc:
            raise SidecarError(f"could not read {where} ({type(exc).__name__}: {exc})") from None
        return where, _checked(data, where)
    return None
