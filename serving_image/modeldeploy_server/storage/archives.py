"""Unpacking a model archive into the model directory, refusing anything that could escape it.

An archive comes from wherever STORAGE_URI points, so every entry is checked before extraction:
no absolute paths, no '..', no links, no device files (and Python's tarfile ``data`` filter where
it exists). After unpacking, the same one-model-file rule as for a directory picks the model.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

from modeldeploy_server.errors import StartupError
from modeldeploy_server.storage.selection import choose_candidate, is_archive, local_files


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


def unpack(archive: Path, model_dir: Path, fmt: str) -> Path:
    """Unpack ``archive`` into ``model_dir/unpacked`` and return the model file (or the MLflow
    directory's MLmodel file) inside it."""
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
    inner = choose_candidate(local_files(dest), fmt, f"the archive {archive.name}")
    if is_archive(inner):
        raise StartupError(
            f"{archive.name} holds another archive ({inner}) and no model file; "
            "put the model file itself in the archive",
            reason="artifact_missing",
        )
    return dest / inner
