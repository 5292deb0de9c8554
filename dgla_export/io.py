"""Safe artefact writing: outputs checked before the slow work, temp file + rename, nothing lost.

Rules every command follows:
- A file output is overwritten only with ``--force``, never when it is a folder or one of the
  command's own inputs.
- A folder output is written only where nothing of the user's can be lost: a new or empty
  folder, or, with ``--force``, an earlier output of the *same* command (it carries a marker
  file listing what the command wrote) that holds nothing else. ``.``, the home folder, the
  file-system root and any folder holding one of the command's inputs are always refused.
- Everything is written beside its destination and renamed into place (a folder is swapped in
  one step), so a failure leaves the previous output intact and no reader sees half an artefact.
- Errors name the user's path, never a staging name.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from dgla_export.errors import UserError, listed, option

__all__ = [
    "CACHE_ENV",
    "OUTPUT_MARKER",
    "VALIDATION_SUFFIX",
    "OutputError",
    "OutputExistsError",
    "atomic_path",
    "cache_dir",
    "check_output",
    "check_output_folder",
    "folder_mode",
    "replace_folder",
    "report_beside",
    "sha256_file",
    "staging_folder",
]

CACHE_ENV = "DGLA_EXPORT_CACHE"
OUTPUT_MARKER = ".dgla-export-output.json"
VALIDATION_SUFFIX = ".validation.json"


class OutputError(UserError):
    """An output path that cannot be written, or must not be, since something of the user's would be lost."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and ``--force`` was not given."""


def _probe_writable(folder: Path, shown: Path) -> None:
    """Create and remove a file in ``folder`` (or its nearest existing ancestor): the only test
    that also holds for root, read-only mounts and immutable folders."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {shown}: {existing} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".dgla-write-test-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(
            f"cannot write {shown}: {existing} is not writable ({err.strerror}); choose a folder you can write to"
        ) from None


def _is_input(path: Path, inputs: Iterable[str | Path | None]) -> Path | None:
    resolved = path.resolve()
    for source in inputs:
        if source is not None and Path(source).resolve() == resolved:
            return Path(source)
    return None


def check_output(path: str | Path, force: bool, *, inputs: Iterable[str | Path | None] = (), suffix: str = "") -> Path:
    """A file output: refuse a folder, an input, an existing file without ``force`` and an
    unwritable place, before any work is done. ``suffix`` (e.g. ``.onnx``) is the example's."""
    path = Path(path)
    if path.is_dir():
        example = path / f"{path.name or 'model'}{suffix}"
        raise OutputError(f"{path} is a folder; give the output file's name, e.g. {example}")
    source = _is_input(path, inputs)
    if source is not None:
        raise OutputError(f"{path} is also an input ({source}); write the output to another file")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass {option('--force', 'force=True')} to overwrite it")
    _probe_writable(path.parent, path)
    return path


def _entries(folder: Path) -> list[str]:
    """Files and empty folders under ``folder``, relative: what an output consists of."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name != OUTPUT_MARKER and (not p.is_dir() or not any(p.iterdir()))
    )


def _check_own_output(path: Path, command: str) -> None:
    """``path`` is an earlier output of ``command`` holding nothing it did not write."""
    only = f"{option('--force', 'force=True')} replaces only an earlier output of {command}"
    try:
        record = json.loads((path / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        record = {"command": command, "files": []}  # no marker: every entry is the user's
    if record.get("command") != command:
        raise OutputError(f"{path} was written by {record.get('command')}, not {command} ({only}); choose a new folder")
    foreign = sorted(set(_entries(path)) - set(record.get("files", [])))
    if foreign:
        raise OutputError(
            f"{path} holds {listed(foreign)}, which {command} did not write ({only}); "
            "move them away or choose a new folder"
        )


def check_output_folder(
    path: str | Path, force: bool, *, command: str, inputs: Iterable[str | Path | None] = ()
) -> Path:
    """A folder output, checked before any work (see the module's rules)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file, not a folder; give a folder for {command} to write")
    resolved = path.resolve()
    protected = {
        Path.cwd().resolve(): "the current folder",
        Path.home().resolve(): "your home folder",
        Path(resolved.anchor): "the file-system root",
    }
    if resolved in protected:
        raise OutputError(f"{path} is {protected[resolved]}; {command} writes a folder of its own: give a new folder")
    for source in inputs:
        if source is not None and resolved in Path(source).resolve().parents:
            raise OutputError(f"{path} holds the input {source}; write the output to another folder")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise OutputExistsError(
                f"{path} exists and is not empty; pass {option('--force', 'force=True')} to replace an earlier "
                f"output of {command}, "
                "or choose a new folder"
            )
        _check_own_output(path, command)
    _probe_writable(path.parent, path)
    return path


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def replace_folder(path: str | Path, *, command: str) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; when the block succeeds, mark it as
    ``command``'s output and swap it into place. On failure ``path`` is left as it was.

    Call :func:`check_output_folder` first: this replaces whatever folder is at ``path``."""
    path = Path(path)
    _make_parent(path)
    staging = _staging(path, "staging")
    try:
        yield staging
        record = {"command": command, "files": _entries(staging)}
        (staging / OUTPUT_MARKER).write_text(json.dumps(record, indent=1) + "\n")
        # mkdtemp made the staging folder 0700 (private while half-written); the output gets the
        # mode any folder of the user's gets, or a Triton container running as another user, or a
        # colleague, could not read the repository
        staging.chmod(folder_mode())
        if not path.exists():
            os.rename(staging, path)
        elif not _exchange(staging, path):  # no atomic swap here: two renames, undone on failure
            old = _staging(path, "old")
            os.replace(path, old / path.name)
            try:
                os.rename(staging, path)
            except OSError:
                os.replace(old / path.name, path)
                raise
            staging = old  # the staging folder is the output now; what is left to remove is the old one
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def folder_mode() -> int:
    """The mode a new folder gets under the process's umask (0755 under the usual 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {path}: cannot create {path.parent} ({err.strerror})") from None


def _staging(path: Path, kind: str) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.{kind}-", dir=path.parent))
    except OSError as err:
        raise OutputError(f"cannot write {path}: {path.parent} is not writable ({err.strerror})") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of file ``path``; rename it into place only if the block succeeds.

    A reader never sees a half-written file, and a failure leaves the previous version untouched.
    """
    path = Path(path)
    with staging_folder(path) as folder:
        tmp = folder / path.name
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as err:
            if err.filename and Path(err.filename).parent == folder:  # name the user's path, not ours
                raise OutputError(f"cannot write {path}: {err.strerror}") from err
            raise


@contextlib.contextmanager
def staging_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside file ``path`` (its missing parents created), removed afterwards:
    where an output is built, on the same filesystem, before one rename puts it in place."""
    path = Path(path)
    _make_parent(path)
    folder = _staging(path, "tmp")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report_beside(graph: str | Path) -> Path:
    """Where a graph's validation report lives, so that it travels with the graph: ``dgla.onnx`` ->
    ``dgla.validation.json`` (``dgla-export onnx`` and ``validate`` write it; ``triton`` reads it)."""
    graph = Path(graph)
    return graph.with_name(graph.name.removesuffix(".onnx") + VALIDATION_SUFFIX)


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
