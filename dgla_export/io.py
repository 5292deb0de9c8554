"""Safe artefact writing: temp file + rename, and no silent overwrite."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CACHE_ENV", "OutputExistsError", "atomic_path", "cache_dir", "check_output", "sha256_file"]

CACHE_ENV = "DGLA_EXPORT_CACHE"


class OutputExistsError(FileExistsError):
    """The output exists and ``--force`` was not given."""


def check_output(path: str | Path, force: bool) -> Path:
    """Refuse to overwrite a user's file or folder unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it into place only if the block succeeds.

    Works for files and folders: a reader never sees a half-written artefact, and a failure
    leaves the previous version untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where derived, re-creatable data is kept: ``$DGLA_EXPORT_CACHE``, else ~/.cache/dgla_export."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dgla_export"
    )
    return Path(root)
