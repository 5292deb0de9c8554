"""Engine manifests: what an engine was built from and for, checked before it is loaded.

Pure Python (no TensorRT): profiles, manifest round-trip, precision and compatibility checks.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dgla_export.errors import OptionError, UserError

__all__ = [
    "MANIFEST_FORMAT",
    "BatchProfile",
    "EngineManifest",
    "EngineMismatchError",
    "ManifestError",
    "RuntimeInfo",
    "check_compatible",
    "check_precision",
    "load_build_profiles",
    "manifest_path",
    "parse_size",
    "verify_engine_file",
]

MANIFEST_FORMAT = "dgla-engine-manifest/1"
PROFILES_FILE = Path(__file__).with_name("engine_profiles.json")


class ManifestError(UserError, ValueError):
    """A manifest that is missing, unreadable or inconsistent with its engine."""


class EngineMismatchError(UserError, RuntimeError):
    """An engine built for another GPU or TensorRT version than the running one."""


@dataclasses.dataclass(frozen=True)
class BatchProfile:
    """One optimization profile's batch range, shared by every input."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise OptionError(f"batch profile needs 1 <= MIN <= OPT <= MAX, got {self.min}:{self.opt}:{self.max}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``MIN:OPT:MAX`` (e.g. ``1:8:32``)."""
        parts = text.split(":")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise OptionError(f"batch profile {text!r} is not MIN:OPT:MAX with integers, e.g. 1:8:32")
        return cls(*(int(p) for p in parts))

    def shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """min/opt/max shapes of one input whose non-batch dims are ``input_shape[1:]``."""
        rest = tuple(input_shape[1:])
        return {"min": (self.min, *rest), "opt": (self.opt, *rest), "max": (self.max, *rest)}

    def check(self, batch: int) -> None:
        if not self.min <= batch <= self.max:
            raise OptionError(
                f"batch {batch} is outside the engine's profile {self.min}..{self.max}; rebuild with --batch"
            )

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_size(text: str) -> int:
    """``8GiB``, ``512MiB`` or bytes -> bytes."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit) and lowered[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(lowered[: -len(unit)]) * factor)
    if lowered.isdigit():
        return int(lowered)
    raise OptionError(f"size {text!r} is not a number of bytes or like 8GiB / 512MiB")


def load_build_profiles(path: Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    """Build defaults per target GPU, kept as data beside this module (packaged with it)."""
    profiles = json.loads(path.read_text())["profiles"]
    for name, profile in profiles.items():
        BatchProfile.parse(profile["batch"])
        parse_size(profile["workspace"])
        if not name.isidentifier():
            raise ValueError(f"profile name {name!r} in {path}")
    return profiles


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """The running machine, as an engine cares about it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_version: str | None = None
    driver_version: str | None = None


@dataclasses.dataclass(frozen=True)
class EngineManifest:
    engine_file: str
    engine_sha256: str
    engine_bytes: int
    precision: str
    profile: str
    inputs: Mapping[str, Mapping[str, list[int]]]
    outputs: Mapping[str, str]
    layer_dtypes: Mapping[str, int]
    runtime: RuntimeInfo
    onnx_sha256: str
    onnx_metadata: Mapping[str, str]
    build_seconds: float
    hardware_compatible: bool = False
    version_compatible: bool = False
    format: str = MANIFEST_FORMAT

    @property
    def batch_profile(self) -> BatchProfile:
        return BatchProfile.parse(self.profile)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EngineManifest:
        if record.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"not a {MANIFEST_FORMAT} manifest (format={record.get('format')!r})")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - set(record) - {"hardware_compatible", "version_compatible", "format"})
        if missing:
            raise ManifestError(f"manifest lacks {missing}")
        data = {k: v for k, v in record.items() if k in fields}
        data["runtime"] = RuntimeInfo(**record["runtime"])
        return cls(**data)

    def write(self, path: Path) -> None:
        from dgla_export.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> EngineManifest:
        if not path.is_file():
            raise ManifestError(f"no manifest {path} beside the engine; rebuild it with `dgla-export trt`")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise ManifestError(f"{path} is not a readable manifest: {err}") from err


def manifest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def check_precision(manifest: EngineManifest) -> None:
    """An FP16 engine must contain FP16 layers, an INT8 engine INT8 layers: the claim is read
    back from the built engine, never assumed."""
    needed = {
        "fp16": ("Half", "FP16", "the FP16 ONNX graph (`dgla-export onnx --precision fp16`)"),
        "int8": ("Int8", "INT8", "the INT8 graph (`dgla-export onnx --precision int8 --int8-target tensorrt`)"),
    }
    if manifest.precision not in needed:
        return
    dtype, label, graph = needed[manifest.precision]
    if manifest.layer_dtypes.get(dtype, 0) == 0:
        raise ManifestError(
            f"engine claims {manifest.precision} but has no {label} layer (layer output dtypes "
            f"{dict(manifest.layer_dtypes)}); build it from {graph}"
        )


def check_compatible(manifest: EngineManifest, running: RuntimeInfo, engine: Path) -> None:
    """Refuse an engine whose GPU or TensorRT version differs, unless it was built compatible."""
    built = manifest.runtime
    problems = []
    if not manifest.version_compatible and built.tensorrt_version != running.tensorrt_version:
        problems.append(f"TensorRT {built.tensorrt_version} built it, {running.tensorrt_version} is running")
    if not manifest.hardware_compatible and built.compute_capability != running.compute_capability:
        problems.append(
            f"built on {built.gpu_name} (sm_{built.compute_capability}), running on "
            f"{running.gpu_name} (sm_{running.compute_capability})"
        )
    if problems:
        raise EngineMismatchError(
            f"engine {engine} does not fit this machine: {'; '.join(problems)}. Rebuild it here: "
            f"dgla-export trt --onnx <the ONNX file, sha256 {manifest.onnx_sha256[:12]}...> --output {engine} "
            f"--precision {manifest.precision} --batch {manifest.profile} --force"
        )


def verify_engine_file(engine: Path) -> EngineManifest:
    """The engine's manifest, after checking that the file is the one the manifest describes
    (a truncated or foreign file is refused before TensorRT sees it)."""
    from dgla_export.io import sha256_file

    engine = Path(engine)
    if not engine.is_file():
        raise ManifestError(f"engine {engine} does not exist")
    manifest = EngineManifest.read(manifest_path(engine))
    size = engine.stat().st_size
    if size != manifest.engine_bytes:
        raise ManifestError(
            f"{engine} is {size} bytes, its manifest says {manifest.engine_bytes}: truncated or replaced; rebuild it"
        )
    if sha256_file(engine) != manifest.engine_sha256:
        raise ManifestError(
            f"{engine} does not match its manifest's SHA-256: not the engine that was built; rebuild it"
        )
    check_precision(manifest)
    return manifest
