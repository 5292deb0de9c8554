"""Artefacts built once per test run and shared by every pytest-xdist worker and subprocess.

A run's workers each hold their own session, so a session fixture alone would export the tiny
model's graphs once per worker. ``once`` builds into a folder under the run's base temporary
directory (the parent of every worker's), keyed by the code that makes the artefact (the package's
sources, the test helpers given and the versions of the libraries that write graphs); the first
worker builds under a file lock, the others wait and read. A build that fails leaves nothing
behind, so the next asker builds again and sees the same error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

PACKAGE = Path(__file__).resolve().parents[1] / "dgla_export"
# What writes or changes a graph besides the package's own code.
LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime-gpu", "polygraphy", "onnx-graphsurgeon", "numpy", "pillow")
DONE = "result.pickle"


def run_root(factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run shares (xdist gives each worker a subfolder of it)."""
    base = factory.getbasetemp()
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # inherited by subprocesses: the folder's name decides
    return base.parent if worker and base.name == f"popen-{worker}" else base


def code_key(*helpers: Path) -> str:
    """A digest of the package's sources, the given test helpers and the graph libraries' versions."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")) + sorted(helpers):
        digest.update(str(path.relative_to(PACKAGE.parent)).encode() + b"\0" + path.read_bytes())
    for name in LIBRARIES:
        try:
            digest.update(f"{name}=={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{name} absent".encode())
    return digest.hexdigest()[:16]


def once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> Any:
    """``build(folder)``'s result, built by the first worker to ask and unpickled by the others.

    The result must be picklable and refer to files inside ``folder`` by absolute path (the folder
    is the same for every worker).
    """
    root = run_root(factory) / "built"
    root.mkdir(exist_ok=True)
    folder = root / f"{name}-{code_key(Path(__file__).with_name('conftest.py'))}"
    with FileLock(str(folder) + ".lock"):
        if (folder / DONE).is_file():
            return pickle.loads((folder / DONE).read_bytes())
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        try:
            result = build(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder / DONE).write_bytes(pickle.dumps(result))
        return result
