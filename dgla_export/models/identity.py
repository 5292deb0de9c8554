"""Which checkpoint an artefact was made from, recorded in it and read back by every command.

A graph (and the engine built from it) records the digest of the weights it was exported from:
the state dict's (names, dtypes, shapes, bytes), and for a checkpoint file the file's SHA-256 and
path too. Whatever later compares the artefact with PyTorch takes its weights from that record:
a ``--weights`` file that does not match is refused by its digest before any slow work, the
weights loaded are checked against the state-dict digest before the reference runs, and the
demo default applies only to artefacts exported from the demo weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from dgla_export.errors import UserError

__all__ = ["CheckpointIdentity", "CheckpointIdentityError", "Source", "check_loaded", "identify", "resolve_weights"]

Source = Literal["demo", "random", "file", "model"]
STATE_DICT = "state_dict:"


class CheckpointIdentityError(UserError):
    """The weights given (or defaulted) are not those the artefact was made from."""


def _short(digest: str | None) -> str:
    return (digest or "?").removeprefix(STATE_DICT)[:12]


@dataclasses.dataclass(frozen=True)
class CheckpointIdentity:
    """``state_dict_sha256``: :func:`dgla_export.models.weights.state_dict_sha256` of the weights the
    artefact was made from; ``file_sha256`` and ``path`` (a hint only) where they came from a file;
    ``partial``: loaded with ``--partial`` (the rest of the model was initialised)."""

    state_dict_sha256: str | None
    source: Source
    file_sha256: str | None = None
    path: str | None = None
    partial: bool = False

    @property
    def digest(self) -> str:
        """What ``checkpoint_sha256`` says: the file's digest, else ``state_dict:<digest>``."""
        return self.file_sha256 or f"{STATE_DICT}{self.state_dict_sha256}"

    def to_metadata(self) -> dict[str, str]:
        return {"checkpoint_sha256": self.digest, "checkpoint": json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> CheckpointIdentity | None:
        """The record, or None for an artefact that has none; one that has only ``checkpoint_sha256``
        (written before the rest was recorded) is a file's digest or a state dict of unknown origin."""
        if "checkpoint" in metadata:
            return cls(**json.loads(metadata["checkpoint"]))
        digest = metadata.get("checkpoint_sha256")
        if digest is None:
            return None
        if digest.startswith(STATE_DICT):
            return cls(digest.removeprefix(STATE_DICT), "model")
        return cls(None, "file", file_sha256=digest)

    def describe(self) -> str:
        if self.source == "file":
            where = f" {self.path}" if self.path else ""
            return f"the checkpoint{where} (sha256 {_short(self.file_sha256)})"
        names = {"demo": "the demo weights", "random": "random weights", "model": "a model's weights in memory"}
        return f"{names[self.source]} (state-dict sha256 {_short(self.state_dict_sha256)})"


def identify(weights: str | Path | None, model: object, *, partial: bool = False) -> CheckpointIdentity:
    """The identity of ``model``'s weights, which came from ``weights`` (a checkpoint file,
    ``"demo"``, ``"random"``, or None for a model built in Python)."""
    from dgla_export.io import sha256_file
    from dgla_export.models.weights import state_dict_sha256

    state = state_dict_sha256(model)  # type: ignore[arg-type]
    given = None if weights is None else str(weights)
    if given is not None and given not in ("demo", "random") and Path(given).is_file():
        return CheckpointIdentity(state, "file", sha256_file(given), str(Path(given).resolve()), partial)
    source: Source = "model" if given is None else ("demo" if given == "demo" else "random")
    return CheckpointIdentity(state, source)


def resolve_weights(
    recorded: CheckpointIdentity | None, weights: str | Path | None, artefact: str | Path
) -> tuple[str | Path, bool]:
    """The weights to compare ``artefact`` with, and whether to load them partially: checked here
    by the file's digest (a few hundred ms for ResNet50), before anything slow.

    ``weights`` None means "those the artefact records". Raises :class:`CheckpointIdentityError`
    naming both sides and the fix."""
    from dgla_export.io import sha256_file

    if recorded is None:  # an artefact without a record: the caller's weights, else the demo
        return (weights if weights is not None else "demo"), False
    given = None if weights is None else str(weights)
    fix = "pass --weights (weights=) with that checkpoint"
    if given is None:
        if recorded.source == "random":
            raise CheckpointIdentityError(
                f"{artefact} was exported from random weights, which cannot be made again; export it from a "
                "checkpoint (--weights FILE) to validate it"
            )
        if recorded.source != "file":
            return "demo", False  # checked against the state-dict digest once loaded
        hint = Path(recorded.path) if recorded.path else None
        if hint is not None and hint.is_file() and sha256_file(hint) == recorded.file_sha256:
            return hint, recorded.partial
        raise CheckpointIdentityError(
            f"{artefact} was exported from {recorded.describe()}, which is not at that path now; {fix}"
        )
    if given in ("demo", "random"):
        if recorded.source == "file":
            raise CheckpointIdentityError(
                f"{artefact} was exported from {recorded.describe()}, not {given} weights; {fix}"
            )
        return given, False
    if recorded.source != "file":
        raise CheckpointIdentityError(
            f"{artefact} was exported from {recorded.describe()}, not from the checkpoint {given}; drop --weights "
            "(weights=) to use the weights it records, or export the graph again from this checkpoint"
        )
    if not Path(given).is_file():
        return given, recorded.partial  # the checkpoint reader names a missing file
    digest = sha256_file(given)
    if digest != recorded.file_sha256:
        raise CheckpointIdentityError(
            f"--weights {given} (sha256 {_short(digest)}) is not the checkpoint {artefact} was exported from: "
            f"{recorded.describe()}; pass that checkpoint, or export the graph again from this one"
        )
    return given, recorded.partial


def check_loaded(recorded: CheckpointIdentity | None, model: object, artefact: str | Path) -> None:
    """The weights now in ``model`` are those ``artefact`` records (its state-dict digest), checked
    after loading and before the reference runs: this is what catches demo weights of another
    version, or a model object that is not the one exported. A partial load is not checked: the
    tensors the checkpoint lacked were initialised afresh."""
    from dgla_export.models.weights import state_dict_sha256

    if recorded is None or recorded.state_dict_sha256 is None or recorded.partial:
        return
    loaded = state_dict_sha256(model)  # type: ignore[arg-type]
    if loaded != recorded.state_dict_sha256:
        raise CheckpointIdentityError(
            f"{artefact} was exported from {recorded.describe()}, but the weights loaded now have state-dict sha256 "
            f"{_short(loaded)} (demo weights of another dgla-export version, or another model); pass --weights "
            "(weights=) with the weights it was exported from, or export it again"
        )
