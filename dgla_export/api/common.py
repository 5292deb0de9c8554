"""What every stage of the API shares: the option records, the result records, loading a model and
its images, and publishing an artefact only once it is validated."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dgla_export.clinical import Acceptance
from dgla_export.errors import MismatchError, OptionError, UserError, option
from dgla_export.preprocess import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Method, Preprocessing

if TYPE_CHECKING:
    from dgla_export.artefacts.graph import GraphReport
    from dgla_export.artefacts.manifest import EngineManifest
    from dgla_export.models.config import ModelConfig, Tolerance
    from dgla_export.models.identity import CheckpointIdentity
    from dgla_export.models.resnet import ResNet
    from dgla_export.quantize import QuantizationReport
    from dgla_export.runtimes.base import Runner
    from dgla_export.validation import ValidationReport

__all__ = [
    "EngineResult",
    "ExportResult",
    "ImageOptions",
    "Images",
    "Progress",
    "ValidationFailedError",
    "WeightOptions",
    "Weights",
    "default_batches",
    "load_model",
]

Progress = Callable[[str], None]
Images = str | Path | Sequence[tuple[str, np.ndarray]] | None
Weights = str | Path | None


def quiet(message: str) -> None:
    """The default progress: say nothing."""


def warn(message: str) -> None:
    """The default for ``warn``: a Python warning (the commands print it as a line)."""
    warnings.warn(message, UserWarning, stacklevel=3)


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """The images a stage checks on and how they become the model's inputs.

    ``images``: a folder, (name, array) pairs, or None for the bundled photos; ``preprocess``: the
    recipe's path (fast or exact, as the deployment will run it); ``max_pixels`` and ``max_bytes``:
    images refused before decoding; ``acceptance``: labels and the largest clinical drop allowed.
    Every stage also takes a plain ``images`` value where these defaults will do."""

    images: Images = None
    preprocess: Method = "fast"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    acceptance: Acceptance = dataclasses.field(default_factory=Acceptance)

    @classmethod
    def of(cls, value: ImageOptions | Images) -> ImageOptions:
        return value if isinstance(value, ImageOptions) else cls(value)

    def load(self, config: ModelConfig, skipped: Progress = warn) -> list[tuple[str, np.ndarray]]:
        """Named images: given as arrays, or a folder (decoded as the preprocessing will; ``skipped``
        hears what it holds that is not an image), or the bundled set."""
        from dgla_export.data import load_images

        if self.images is not None and not isinstance(self.images, str | Path):
            return list(self.images)
        recipe = Preprocessing.of(config, self.preprocess, self.max_pixels, self.max_bytes)
        return load_images(self.images, preprocessing=recipe, warn=skipped)

    @property
    def folder(self) -> Path | None:
        return Path(self.images) if isinstance(self.images, str | Path) else None


@dataclasses.dataclass(frozen=True)
class WeightOptions:
    """Which weights: ``"demo"``, ``"random"``/None, or a checkpoint path (.pt/.pth/.safetensors,
    read with ``weights_only=True``); ``partial`` loads only the tensors that match (e.g. a
    torchvision ResNet50 into a GLA or ARL model) instead of refusing the checkpoint."""

    weights: Weights = None
    partial: bool = False

    @classmethod
    def of(cls, value: WeightOptions | Weights) -> WeightOptions:
        return value if isinstance(value, WeightOptions) else cls(value)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return to_dict() if to_dict else {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class Record:
    """``to_dict()`` and ``to_json()`` for the result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields if not f.name.startswith("_")}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class _Validated(Record):
    """A result whose artefact was validated, or not (``validation`` None): three-valued, so that
    nothing unvalidated ever reads as passed."""

    validation: ValidationReport | None

    @property
    def verdict(self) -> str:
        """'passed', 'failed' or 'not validated'."""
        return "not validated" if self.validation is None else self.validation.verdict

    @property
    def passed(self) -> bool | None:
        """True, False, or None where nothing was validated."""
        return None if self.validation is None else self.validation.passed

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "verdict": self.verdict, "passed": self.passed}


@dataclasses.dataclass(frozen=True)
class ExportResult(_Validated):
    """An exported graph: where it is, its contract, and (unless skipped) its validation report."""

    path: Path
    graph: GraphReport
    validation: ValidationReport | None
    quantization: QuantizationReport | None = None


@dataclasses.dataclass(frozen=True)
class EngineResult(_Validated):
    """A built engine, its manifest, and its validation against PyTorch (None where not run)."""

    path: Path
    manifest: EngineManifest
    validation: ValidationReport | None


class ValidationFailedError(MismatchError):
    """An artefact that ran, but whose numbers are not good enough. It is kept beside the requested
    output (``NAME.failed.onnx``, ``NAME.failed.plan``), never at it; ``result`` has the report."""

    def __init__(self, message: str, result: ExportResult | EngineResult) -> None:
        super().__init__(message)
        self.result = result


def load_model(
    model: str | ResNet = "dgla_resnet50", weights: WeightOptions | Weights = "demo", *, partial: bool = False
) -> ResNet:
    """A model in eval mode: a registered name with ``weights`` (``"demo"``, ``"random"``/None, or a
    checkpoint path), or a model you built, as it is. Weights holding NaN or Inf are refused."""
    from dgla_export.models import weights as weights_module
    from dgla_export.models.registry import create_model

    chosen = WeightOptions.of(weights)
    partial = partial or chosen.partial
    if not isinstance(model, str):
        weights_module.check_finite(model.state_dict(), f"the {model.config.name} model given")
        return model.eval()
    if chosen.weights is None or str(chosen.weights) == "random":
        return create_model(model)
    if str(chosen.weights) == "demo":
        return create_model(model, weights="demo")
    state = weights_module.read_checkpoint(chosen.weights)  # before building the model: a bad file fails fast
    network = create_model(model)
    weights_module.load_weights(network, state, partial=partial)
    return network


def identity(weights: WeightOptions, model: str | ResNet, network: ResNet) -> CheckpointIdentity:
    """What an exported artefact records of its weights (see :mod:`dgla_export.models.identity`)."""
    from dgla_export.models.identity import identify

    if not isinstance(model, str):
        return identify(None, network)
    chosen = "random" if weights.weights is None else weights.weights
    return identify(chosen, network, partial=weights.partial)


@dataclasses.dataclass(frozen=True)
class ArtefactWeights:
    """The weights an artefact is compared with: those it records unless the caller gave others
    (checked by digest before the slow work, and once loaded)."""

    artefact: Path
    recorded: CheckpointIdentity | None
    weights: WeightOptions

    @classmethod
    def of(cls, artefact: Path, metadata: dict[str, str], model: str | ResNet, weights: WeightOptions):
        from dgla_export.models.identity import CheckpointIdentity, resolve_weights

        recorded = CheckpointIdentity.from_metadata(metadata)
        if not isinstance(model, str):  # a model object: its weights are checked once loaded
            return cls(artefact, recorded, weights)
        resolved, recorded_partial = resolve_weights(recorded, weights.weights, artefact)
        return cls(artefact, recorded, WeightOptions(resolved, weights.partial or recorded_partial))

    def load(self, model: str | ResNet) -> ResNet:
        from dgla_export.models.identity import check_loaded

        network = load_model(model, self.weights)
        check_loaded(self.recorded, network, self.artefact)
        return network


def _failed_path(output: Path, force: bool, companions: Sequence[Callable[[Path], Path]] = ()) -> Path:
    """Where an artefact that failed validation is kept: ``NAME.failed.SUFFIX``, or with ``-2``,
    ``-3``, ... where an earlier failure is (replaced only with ``force``)."""
    number = 1
    while True:
        tag = "failed" if number == 1 else f"failed-{number}"
        candidate = output.with_name(f"{output.stem}.{tag}{output.suffix}")
        taken = [p for p in (candidate, *(name(candidate) for name in companions)) if p.exists()]
        if force or not taken:
            return candidate
        number += 1


def publish(
    staged: Path,
    output: Path,
    validation: ValidationReport | None,
    *,
    force: bool,
    companions: Sequence[Callable[[Path], Path]] = (),
) -> Path:
    """Move a staged artefact (and its companion files, e.g. an engine's manifest, first) to
    ``output`` when its validation passed or none was asked for, else beside it as a failed one;
    returns where it went. Nothing unvalidated-and-failing ever sits at ``output``."""
    failed = validation is not None and not validation.passed
    destination = _failed_path(output, force, companions) if failed else output
    for name in companions:
        os.replace(name(staged), name(destination))
    os.replace(staged, destination)
    return destination


def raise_if_failed(result: ExportResult | EngineResult, what: str, output: Path) -> None:
    if result.validation is not None and not result.validation.passed:
        raise ValidationFailedError(
            f"validation FAILED ({'; '.join(result.validation.failures)}): "
            f"{what} is kept as {result.path} for inspection, not at {output}",
            result,
        )


def config_of(model: str | ResNet) -> ModelConfig:
    """The config of a registered model's name, or of a model object."""
    from dgla_export.models.registry import get_config

    return get_config(model) if isinstance(model, str) else model.config


def default_batches(wanted: Sequence[int] | None, low: int, high: int) -> list[int]:
    """The batch sizes a validation runs: those asked for (each within the artefact's range), or
    its smallest, an odd one and its largest (a batch-dependent fault shows between them)."""
    if wanted:
        outside = [b for b in wanted if not low <= b <= high]
        if outside:
            raise OptionError(f"batches {outside} are outside the artefact's batch range {low}:{high}; give others")
        return list(wanted)
    return sorted({low, max(low, min(3, high)), high})


def check_held_out(metadata: dict[str, str], images: Sequence[tuple[str, np.ndarray]]) -> None:
    """An INT8 graph records its calibration images' pixel digests: validating it on one is refused."""
    from dgla_export.data import check_disjoint

    check_disjoint(images, set(json.loads(metadata.get("quantization", "{}")).get("calibration_pixels", [])))


def int8_tolerance(model: ResNet, accuracy_target: float | None) -> Tolerance:
    tolerance = model.config.tolerances["int8"]
    return dataclasses.replace(tolerance, probs_abs=accuracy_target) if accuracy_target else tolerance


def graph_runner(path: Path, metadata: dict[str, str], runtime: str, device: str) -> Runner:
    """The runner that runs an exported graph as asked, refused with one line where it cannot."""
    from dgla_export.runtimes import GRAPH_RUNTIMES

    precision = metadata.get("precision", "fp32")
    if runtime not in GRAPH_RUNTIMES:
        raise OptionError(f"runtime must be one of {', '.join(GRAPH_RUNTIMES)}, got {runtime!r}")
    if runtime == "onnxruntime":
        from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device, precision)  # type: ignore[arg-type]
    from dgla_export.runtimes.openvino import OpenVINORunner, openvino_problem

    if device != "cpu":
        raise OptionError(f"{option('--runtime', 'runtime=')} {runtime} runs on the CPU; leave the device at cpu")
    wanted = "bf16" if runtime == "openvino-bf16" else precision
    if precision not in ("fp32", "int8") or (wanted == "bf16" and precision != "fp32"):
        raise OptionError(f"{runtime} runs the FP32 and INT8 graphs (BF16 from the FP32 one), not an {precision} graph")
    problem = openvino_problem(wanted)
    if problem:
        raise UserError(problem)
    return OpenVINORunner(path, wanted)  # type: ignore[arg-type]


def validate_graph(
    path: Path,
    model: ResNet,
    images: Sequence[tuple[str, np.ndarray]],
    metadata: dict[str, str],
    *,
    device: str,
    runtime: str = "onnxruntime",
    batches: Sequence[int] | None,
    inputs: ImageOptions,
    tolerance: Tolerance | None,
    progress: Progress,
    labels: dict[str, int] | None = None,
) -> ValidationReport:
    """An exported graph run by ``runtime`` (ONNX Runtime on ``device``, or OpenVINO) against
    ``model`` (the one parity check of :mod:`dgla_export.validation`)."""
    from dgla_export.validation import validate_runner

    low, high = (int(b) for b in metadata.get("batch_range", "1:8").split(":"))
    with graph_runner(path, metadata, runtime, device) as runner:
        return validate_runner(
            runner,
            model,
            images,
            batches=default_batches(batches, low, high),
            tolerance=tolerance,
            preprocessing=inputs.preprocess,
            labels=labels,
            max_drop=inputs.acceptance.drops(),
            progress=progress,
        )
