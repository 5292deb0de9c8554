"""Versions of a served model: numbered folders, a manifest per version, and which one is served.

Version ``N`` of the ensemble ``NAME`` is every ``NAME*/N/`` folder of the repository (the graph,
the engine, the preprocessing code) plus the configs it was written with. Its manifest,
``NAME/N/manifest.json`` (in the ensemble's own version folder, which Triton leaves alone), holds
the SHA-256 of each of those files, the config texts, the class names and the graph's validation
report. Which version is served is written in the configs: every model of ``NAME`` carries
``version_policy { specific { versions: N } }`` and the ensemble's steps name version ``N``, so
Triton loads exactly that version of each, and rolling back is rewriting the configs from the
earlier version's manifest once its files have been checked against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dgla_export.errors import UserError
from dgla_export.io import sha256_file

__all__ = [
    "MANIFEST",
    "Version",
    "VersionError",
    "activate",
    "active_version",
    "ensembles",
    "next_version",
    "read_version",
    "versions",
    "write_version",
]

MANIFEST = "manifest.json"
FORMAT = "dgla-triton-version/1"
LABELS = "labels.txt"


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


class VersionError(UserError):
    """A version that does not exist, or whose files are not those its manifest records."""


@dataclasses.dataclass(frozen=True)
class Version:
    """One version of an ensemble, as its manifest records it."""

    name: str
    version: int
    written_at: str
    tool: str
    graph: dict[str, Any]
    files: dict[str, str]  # path in the repository -> SHA-256
    configs: dict[str, str]  # model -> config.pbtxt text, with this version served
    labels: str
    validation: dict[str, Any] | None
    golden: dict[str, Any] | None = None  # the reference photos' answers the self-check holds the server to
    unvalidated: bool = False  # written with --unvalidated: no report, no golden answers

    @property
    def models(self) -> list[str]:
        return sorted(self.configs)

    @property
    def verdict(self) -> str:
        if self.unvalidated:
            return "UNVALIDATED"
        return "not given" if self.validation is None else str(self.validation.get("verdict", "?"))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    def summary(self) -> dict[str, Any]:
        """What a table of versions shows."""
        return {
            "name": self.name,
            "version": self.version,
            "written_at": self.written_at,
            "model": self.graph.get("model_name"),
            "precision": self.graph.get("precision"),
            "graph_sha256": self.graph.get("sha256", "")[:12],
            "validation": self.verdict,
        }


def _manifest_path(repository: Path, name: str, version: int) -> Path:
    return repository / name / str(version) / MANIFEST


def write_version(
    repository: Path,
    name: str,
    version: int,
    *,
    graph: dict[str, Any],
    configs: dict[str, str],
    labels: str,
    validation: dict[str, Any] | None,
    tool: str,
    golden: dict[str, Any] | None = None,
) -> Version:
    """Record version ``version`` of ``name`` from the files now in ``repository``'s version folders."""
    files = {
        str(path.relative_to(repository)): sha256_file(path)
        for model in sorted(configs)
        for path in sorted((repository / model / str(version)).rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    record = Version(
        name=name,
        version=version,
        written_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        tool=tool,
        graph=graph,
        files=files,
        configs=configs,
        labels=labels,
        validation=validation,
        golden=golden,
        unvalidated=validation is None,
    )
    path = _manifest_path(repository, name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return record


def read_version(repository: Path, name: str, version: int) -> Version:
    path = _manifest_path(repository, name, version)
    if not path.is_file():
        held = ", ".join(str(v) for v in versions(repository, name)) or "none"
        raise VersionError(f"{repository} holds no version {version} of {name} (versions: {held})")
    try:
        data = json.loads(path.read_text())
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        record = Version(**data)
        if (record.name, record.version) != (name, version) or not record.files:
            raise ValueError(f"it describes version {record.version} of {record.name} with {len(record.files)} files")
        return record
    except (ValueError, TypeError) as err:
        raise VersionError(f"{path} is not a manifest this version of dgla-export reads ({err})") from err


def versions(repository: Path, name: str) -> list[int]:
    """The versions of ``name`` that have a manifest, oldest first."""
    folder = repository / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file())


def ensembles(repository: Path) -> list[str]:
    """The ensembles of ``repository`` that have versions."""
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and versions(repository, p.name))


def next_version(repository: Path, name: str) -> int:
    held = versions(repository, name)
    return held[-1] + 1 if held else 1


def active_version(repository: Path, name: str) -> int | None:
    """The version the ensemble's config serves (None: none pinned)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = repository / name / "config.pbtxt"
    if not path.is_file():
        return None
    try:
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as err:
        held = versions(repository, name)
        restore = f"dgla-export versions {repository} --activate {held[-1]}" if held else "dgla-export triton --force"
        raise VersionError(
            f"{path} is not a model config Triton reads ({str(err).splitlines()[0]}); write a version's "
            f"configs anew: {restore}"
        ) from err
    pinned = list(config.version_policy.specific.versions)
    return pinned[0] if len(pinned) == 1 else None


def verify(repository: Path, version: Version, *, configs: bool = False) -> None:
    """Every file of ``version`` is there, unchanged since it was written, and nothing else in its
    folders; with ``configs`` (it is the version the configs serve) its configs and labels too. The
    self-check's own test, which the repository's copy of it runs without this package."""
    from dgla_export.triton.selfcheck import SelfCheckError, verify_files

    try:
        verify_files(repository, version.to_dict(), configs=configs)
    except SelfCheckError as err:
        raise VersionError(str(err)) from err


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then take effect as they would have.

    Python runs signal handlers in the main thread, whatever thread a signal arrives on (a signal
    mask would hold it back from one thread only), so the main thread's handlers are swapped for
    ones that note the signal; from another thread no handler interrupts this one's work."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in _DEFERRED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in received:
            signal.raise_signal(sig)


def _apply(repository: Path, version: Version) -> None:
    """Write ``version``'s configs and class names into ``repository``: every model folder checked,
    every file staged beside its target, then all renamed into place with Ctrl-C and SIGTERM held
    back, so that an interruption leaves the earlier version whole, never half of each."""
    missing = [model for model in version.configs if not (repository / model).is_dir()]
    if missing:
        needed = f"version {version.version} of {version.name} needs it"
        raise VersionError(f"{repository / missing[0]} is missing: {needed}")
    staged: list[tuple[Path, Path]] = []
    try:
        for model, text in version.configs.items():
            folder = repository / model
            files = {"config.pbtxt": text, **({LABELS: version.labels} if (folder / LABELS).exists() else {})}
            for filename, content in files.items():
                target = folder / filename
                tmp = target.with_name(f".{filename}.{secrets.token_hex(4)}.staged")
                staged.append((tmp, target))  # listed before it is written: a failed write is removed too
                tmp.write_text(content)
        with _signals_deferred():
            for tmp, target in staged:
                os.replace(tmp, target)
            staged.clear()
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def activate(repository: Path, name: str, version: int | None = None) -> tuple[int | None, Version]:
    """Serve ``version`` of ``name`` (default: the one before the active one): its files are checked
    against its manifest first, then its configs replace the current ones. Returns the version
    served before and the one served now."""
    try:
        current = active_version(repository, name)
    except VersionError:
        if version is None:  # a rollback needs to know what is served now
            raise
        current = None  # a broken config: --activate N writes a whole version's configs anew
    held = versions(repository, name)
    if not held:
        raise VersionError(f"{repository} holds no versioned model {name!r} (ensembles: {ensembles(repository)})")
    if version is None:
        earlier = [v for v in held if current is not None and v < current]
        if not earlier:
            raise VersionError(f"{name} serves version {current}, its oldest: there is nothing to roll back to")
        version = earlier[-1]
    chosen = read_version(repository, name, version)
    verify(repository, chosen)
    _apply(repository, chosen)
    return current, chosen
