"""The pipeline as a library: every stage the commands run, callable from Python, validated by default.

Each function checks its inputs before slow work, writes its artefacts beside their destination
and renames them into place (never over a user's file without ``force``), returns a typed result
(a dataclass with ``to_dict()``), and raises the package's typed errors: :class:`UserError` (bad
input; exit code 2 on the command line) and :class:`ValidationFailedError` (an artefact whose
numbers are not good enough; exit code 3). The commands are thin shells over these functions
(``dgla_export.tools``). ``progress`` takes a callable that hears each step (``print`` will do).

    import dgla_export as dx

    exported = dx.export_onnx("dgla.onnx", precision="fp16")       # exported, then validated
    report = dx.validate("dgla.onnx", images="lesions/")            # again, on your images
    repo = dx.write_triton_repository("dgla.onnx", "triton-repo")
    with dx.serve("triton-repo") as server:
        print(server.grpc)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dgla_export.clinical import Acceptance
from dgla_export.errors import MismatchError, OptionError, UserError
from dgla_export.io import check_output, check_output_folder, staging_folder
from dgla_export.preprocess import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Method, Preprocessing

if TYPE_CHECKING:
    from dgla_export.artefacts.graph import GraphReport
    from dgla_export.artefacts.manifest import EngineManifest
    from dgla_export.benchmarking.catalogue import Backend
    from dgla_export.benchmarking.results import BenchResult
    from dgla_export.localise import DebugReport
    from dgla_export.models.config import ModelConfig, Tolerance
    from dgla_export.models.identity import CheckpointIdentity
    from dgla_export.models.resnet import ResNet
    from dgla_export.quantize import QuantizationReport
    from dgla_export.triton.repository import TritonOptions
    from dgla_export.validation import ValidationReport

__all__ = [
    "Acceptance",
    "EngineResult",
    "ExportResult",
    "Int8Options",
    "RepositoryResult",
    "ServerEndpoints",
    "ValidationFailedError",
    "bench",
    "build_engine",
    "debug",
    "export_onnx",
    "load_model",
    "serve",
    "validate",
    "write_triton_repository",
]

Progress = Callable[[str], None]
Images = str | Path | Sequence[tuple[str, np.ndarray]] | None
Weights = str | Path | None


def _quiet(message: str) -> None:
    """The default progress: say nothing."""


def _warn(message: str) -> None:
    """The default for ``warn``: a Python warning (the commands print it as a line)."""
    warnings.warn(message, UserWarning, stacklevel=3)


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


class _Record:
    """``to_dict()`` and ``to_json()`` for the result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields if not f.name.startswith("_")}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class _Validated(_Record):
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


@dataclasses.dataclass(frozen=True)
class RepositoryResult(_Record):
    """A written Triton repository: its models and their config.pbtxt texts."""

    path: Path
    configs: dict[str, str]

    @property
    def models(self) -> list[str]:
        return sorted(self.configs)


@dataclasses.dataclass(frozen=True)
class ServerEndpoints(_Record):
    """A running server: where it listens, its PID, each model's state and how it runs."""

    http: str
    grpc: str
    metrics: str
    pid: int | None
    states: list[dict[str, Any]]
    models: dict[str, str]
    _server: Any = dataclasses.field(default=None, repr=False, compare=False)

    def wait(self) -> int | None:
        """Block until the server exits (it should not: this returns only when it crashed)."""
        return self._server.process.wait()

    def exit_reason(self) -> str:
        return self._server.exit_reason()


class ValidationFailedError(MismatchError):
    """An artefact that ran, but whose numbers are not good enough. It is kept beside the requested
    output (``NAME.failed.onnx``, ``NAME.failed.plan``), never at it; ``result`` has the report."""

    def __init__(self, message: str, result: ExportResult | EngineResult) -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass(frozen=True)
class Int8Options:
    """INT8 export: calibration images (default: the bundled photos, which are not dermoscopy),
    the Q/DQ flavour, the calibration method, and the probability bound the search aims for
    (default: the model config's int8 tolerance)."""

    calibration_images: Images = None
    calibration_count: int | None = None
    target: Literal["cpu", "tensorrt"] = "cpu"
    method: str = "minmax"
    accuracy_target: float | None = None


def load_model(model: str | ResNet = "dgla_resnet50", weights: Weights = "demo", *, partial: bool = False) -> ResNet:
    """A model in eval mode: a registered name with ``weights`` (``"demo"``, ``"random"``/None, or a
    checkpoint path), or a model you built, as it is. Weights holding NaN or Inf are refused."""
    from dgla_export.models import weights as weights_module
    from dgla_export.models.registry import create_model

    if not isinstance(model, str):
        weights_module.check_finite(model.state_dict(), f"the {model.config.name} model given")
        return model.eval()
    if weights is None or str(weights) == "random":
        return create_model(model)
    if str(weights) == "demo":
        return create_model(model, weights="demo")
    state = weights_module.read_checkpoint(weights)  # before building the model: a bad file fails fast
    network = create_model(model)
    weights_module.load_weights(network, state, partial=partial)
    return network


def _identity(weights: Weights, model: str | ResNet, network: ResNet, partial: bool) -> CheckpointIdentity:
    """What an exported artefact records of its weights (see :mod:`dgla_export.models.identity`)."""
    from dgla_export.models.identity import identify

    if not isinstance(model, str):
        return identify(None, network)
    return identify("random" if weights is None else weights, network, partial=partial)


@dataclasses.dataclass(frozen=True)
class _ArtefactWeights:
    """The weights an artefact is compared with: those it records unless the caller gave others
    (checked by digest before the slow work, and once loaded)."""

    artefact: Path
    recorded: CheckpointIdentity | None
    weights: Weights
    partial: bool

    @classmethod
    def of(cls, artefact: Path, metadata: dict[str, str], model: str | ResNet, weights: Weights, partial: bool):
        from dgla_export.models.identity import CheckpointIdentity, resolve_weights

        recorded = CheckpointIdentity.from_metadata(metadata)
        if not isinstance(model, str):  # a model object: its weights are checked once loaded
            return cls(artefact, recorded, weights, partial)
        resolved, recorded_partial = resolve_weights(recorded, weights, artefact)
        return cls(artefact, recorded, resolved, partial or recorded_partial)

    def load(self, model: str | ResNet) -> ResNet:
        from dgla_export.models.identity import check_loaded

        network = load_model(model, self.weights, partial=self.partial)
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


def _publish(
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


def _raise_if_failed(result: ExportResult | EngineResult, what: str, output: Path) -> None:
    if result.validation is not None and not result.validation.passed:
        raise ValidationFailedError(
            f"validation FAILED ({'; '.join(result.validation.failures)}): "
            f"{what} is kept as {result.path} for inspection, not at {output}",
            result,
        )


def _config(model: str | ResNet) -> ModelConfig:
    """The config of a registered model's name, or of a model object."""
    from dgla_export.models.registry import get_config

    return get_config(model) if isinstance(model, str) else model.config


def _images(
    images: Images, model: str | ResNet, preprocess: Method, max_pixels: int, max_bytes: int
) -> list[tuple[str, np.ndarray]]:
    """Named images: given as arrays, or a folder (decoded as the preprocessing will use them), or the bundled set."""
    from dgla_export.data import load_images

    if images is not None and not isinstance(images, str | Path):
        return list(images)
    return load_images(images, preprocessing=Preprocessing.of(_config(model), preprocess, max_pixels, max_bytes))


def _batches(wanted: Sequence[int] | None, max_batch: int) -> list[int]:
    if wanted:
        too_large = [b for b in wanted if b > max_batch]
        if too_large:
            raise OptionError(f"batches {too_large} exceed the graph's maximum batch {max_batch}; give smaller sizes")
        return list(wanted)
    return sorted({1, min(3, max_batch), max_batch})


def _check_held_out(metadata: dict[str, str], images: Sequence[tuple[str, np.ndarray]]) -> None:
    """An INT8 graph records its calibration images' pixel digests: validating it on one is refused."""
    from dgla_export.data import check_disjoint

    check_disjoint(images, set(json.loads(metadata.get("quantization", "{}")).get("calibration_pixels", [])))


def _int8_tolerance(model: ResNet, accuracy_target: float | None) -> Tolerance:
    tolerance = model.config.tolerances["int8"]
    return dataclasses.replace(tolerance, probs_abs=accuracy_target) if accuracy_target else tolerance


def _validate_graph(
    path: Path,
    model: ResNet,
    images: Sequence[tuple[str, np.ndarray]],
    metadata: dict[str, str],
    *,
    device: str,
    batches: Sequence[int] | None,
    preprocess: Method,
    tolerance: Tolerance | None,
    progress: Progress,
    labels: dict[str, int] | None = None,
    max_drop: dict[str, float] | None = None,
) -> ValidationReport:
    from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner
    from dgla_export.validation import validate_runner

    precision = metadata.get("precision", "fp32")
    max_batch = int(metadata.get("batch_range", "1:8").split(":")[1])
    with OnnxRuntimeRunner(path, device, precision) as runner:  # type: ignore[arg-type]
        return validate_runner(
            runner,
            model,
            images,
            batches=_batches(batches, max_batch),
            tolerance=tolerance,
            preprocessing=preprocess,
            labels=labels,
            max_drop=max_drop,
            progress=progress,
        )


def export_onnx(
    output: str | Path,
    model: str | ResNet = "dgla_resnet50",
    *,
    weights: Weights = "demo",
    precision: Literal["fp32", "fp16", "int8"] = "fp32",
    opset: int = 18,
    batch: tuple[int, int] = (1, 32),
    explain: bool = False,
    validate: bool = True,
    images: Images = None,
    preprocess: Method = "fast",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    device: str = "cpu",
    batches: Sequence[int] | None = None,
    int8: Int8Options | None = None,
    acceptance: Acceptance | None = None,
    report: str | Path | None = None,
    partial: bool = False,
    force: bool = False,
    progress: Progress = _quiet,
    warn: Progress = _warn,
) -> ExportResult:
    """Export ``model`` to one self-contained ONNX file with a dynamic batch, then validate it with
    ONNX Runtime (``device``) against the FP32 PyTorch model on ``images``.

    The graph reaches ``output`` only when validation passes; one that fails is kept as
    ``NAME.failed.onnx`` and :class:`ValidationFailedError` is raised. INT8 exports the FP32 graph,
    then quantizes it (``int8``: calibration and search options) and validates it on images disjoint
    from the calibration images. ``explain`` adds the output ``cam``: (batch, classes, h, w) class
    activation maps of layer4, Grad-CAM up to a positive scale, which validation holds to captum's
    Grad-CAM of the PyTorch model. ``acceptance``: labels and the largest clinical drop allowed
    (they also become the INT8 search's target on labelled calibration images).

    >>> result = export_onnx("dgla.onnx", precision="fp16")   # doctest: +SKIP
    >>> result.validation.passed
    True
    """
    import onnx

    from dgla_export.export.onnx_export import ExportOptions, check_contract
    from dgla_export.export.onnx_export import export_onnx as write_graph

    output = check_output(output, force)
    report = check_output(report, force) if report is not None else None
    if precision not in ("fp32", "fp16", "int8"):
        raise OptionError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if int8 is not None and precision != "int8":
        raise OptionError("int8 options need precision='int8'")
    checked = _images(images, model, preprocess, max_pixels, max_bytes) if validate else None  # inputs first
    acceptance = acceptance or Acceptance()
    drops = acceptance.drops()
    int8 = int8 or Int8Options() if precision == "int8" else None
    calibration: list[tuple[str, np.ndarray]] = []
    if int8 is not None:
        from dgla_export.data import split_held_out
        from dgla_export.quantize import require_calibration_cache

        require_calibration_cache()
        if int8.calibration_images is None:
            warn(
                "calibrating INT8 on scikit-image's bundled photos, which are not dermoscopy; for a deployment "
                "pass --calibration-images with a few hundred images of its domain"
            )
        calibration = _images(int8.calibration_images, model, preprocess, max_pixels, max_bytes)
        if checked is not None:
            both_default = images is None and int8.calibration_images is None
            calibration, checked = split_held_out(calibration, checked, both_default, warn)
        calibration = calibration[: int8.calibration_count]
    config = _config(model)
    labels = acceptance.read([n for n, _ in checked], config.class_names) if checked is not None else None
    low, high = batch
    if batches:
        _batches(batches, high)
    traced = "fp32" if int8 else precision  # INT8 is written from the FP32 graph
    options = ExportOptions(opset=opset, precision=traced, min_batch=low, max_batch=high, explain=explain)  # type: ignore[arg-type]
    progress("loading the model")
    network = load_model(model, weights, partial=partial)
    with staging_folder(output) as staging:
        staged = staging / output.name
        exported = staged.with_suffix(".fp32.onnx") if int8 else staged
        graph = write_graph(
            network,
            exported,
            options=options,
            checkpoint=_identity(weights, model, network, partial),
            progress=progress,
        )
        quantization = None
        if int8 is not None:
            from dgla_export.quantize import QuantizationError, QuantizationOptions, quantize_onnx

            quantize = QuantizationOptions(
                target=int8.target,
                method=int8.method,
                tolerance=_int8_tolerance(network, int8.accuracy_target),
                preprocess=preprocess,
                labels=acceptance.labels_of([n for n, _ in calibration], network.config.class_names),
                max_drop=drops,
            )
            try:
                quantization = quantize_onnx(
                    exported, staged, network.config, calibration, options=quantize, progress=progress
                )
            except QuantizationError as err:
                raise QuantizationError(f"INT8 FAILED: {err}; nothing written to {output}") from err
            graph = check_contract(onnx.load(str(staged)), network.config)
        validation = None
        if checked is not None:
            tolerance = _int8_tolerance(network, int8.accuracy_target) if int8 else None
            validation = _validate_graph(
                staged, network, checked, graph.metadata, device=device, batches=batches, preprocess=preprocess,
                tolerance=tolerance, progress=progress, labels=labels, max_drop=drops,
            )  # fmt: skip
            if report is not None:
                validation.write_json(report, {"quantization": quantization.to_dict()} if quantization else None)
        placed = _publish(staged, output, validation, force=force)
    result = ExportResult(placed, graph, validation, quantization)
    _raise_if_failed(result, "the graph", output)
    return result


def validate(
    onnx: str | Path,
    model: str | ResNet | None = None,
    *,
    weights: Weights = None,
    images: Images = None,
    preprocess: Method = "fast",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    device: str = "cpu",
    batches: Sequence[int] | None = None,
    accuracy_target: float | None = None,
    acceptance: Acceptance | None = None,
    report: str | Path | None = None,
    partial: bool = False,
    force: bool = False,
    progress: Progress = _quiet,
) -> ValidationReport:
    """Run an exported graph with ONNX Runtime and compare it with the FP32 PyTorch model on real
    images (default model: the graph's own, with the weights it was exported from: ``weights``
    that are not those is an error). Returns the report; ``report.passed`` says whether every
    tolerance held. ``acceptance``: labels, and the largest clinical drop allowed against the reference.

    >>> validate("dgla.onnx", images="lesions/").passed   # doctest: +SKIP
    True
    """
    from dgla_export.artefacts.graph import check_graph_model, graph_metadata, load_graph

    onnx = Path(onnx)
    metadata = graph_metadata(load_graph(onnx))  # inputs first, then the slow model load
    model = model if model is not None else json.loads(metadata["config"])["name"]
    config = _config(model)
    check_graph_model(onnx, metadata, config)
    report = check_output(report, force, inputs=(onnx,)) if report is not None else None
    source = _ArtefactWeights.of(onnx, metadata, model, weights, partial)
    acceptance = acceptance or Acceptance()
    drops = acceptance.drops()
    checked = _images(images, model, preprocess, max_pixels, max_bytes)
    labels = acceptance.read([n for n, _ in checked], config.class_names)
    _check_held_out(metadata, checked)
    progress("loading the model")
    network = source.load(model)
    int8 = metadata.get("precision") == "int8"
    result = _validate_graph(
        onnx, network, checked, metadata, device=device, batches=batches, preprocess=preprocess,
        tolerance=_int8_tolerance(network, accuracy_target) if int8 else None, progress=progress, labels=labels,
        max_drop=drops,
    )  # fmt: skip
    if report is not None:
        result.write_json(report)
    return result


def build_engine(
    onnx: str | Path,
    output: str | Path,
    *,
    precision: Literal["fp16", "fp32", "int8"] = "fp16",
    target: str = "h100",
    batch: str | None = None,
    workspace: str | None = None,
    timing_cache: str | Path | None = None,
    hardware_compatible: bool = False,
    version_compatible: bool = False,
    validate: bool = True,
    model: str | ResNet | None = None,
    weights: Weights = None,
    images: Images = None,
    preprocess: Method = "fast",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    batches: Sequence[int] | None = None,
    acceptance: Acceptance | None = None,
    force: bool = False,
    progress: Progress = _quiet,
) -> EngineResult:
    """Build a strongly typed TensorRT engine (and its manifest) from a graph of :func:`export_onnx`,
    on the GPU it will run on, then validate the engine against the FP32 PyTorch model like every
    export (with the weights the graph records; ``weights`` must be those). The engine is built
    beside ``output`` and moved there only once validated; one that fails is kept as
    ``NAME.failed.plan`` and :class:`ValidationFailedError` is raised. Needs TensorRT and a CUDA GPU.

    >>> build_engine("dgla_fp16.onnx", "dgla_fp16.plan")   # doctest: +SKIP
    """
    from dgla_export.artefacts.graph import graph_metadata, load_graph
    from dgla_export.artefacts.manifest import BatchProfile, load_build_profiles, manifest_path, parse_size
    from dgla_export.export.tensorrt_build import build_engine as build
    from dgla_export.export.tensorrt_build import check_engine_graph
    from dgla_export.runtimes.availability import tensorrt_problem

    onnx, output = Path(onnx), Path(output)
    profiles = load_build_profiles()
    if target not in profiles:
        raise OptionError(f"unknown target {target!r}; known: {', '.join(profiles)}")
    profile = BatchProfile.parse(batch or profiles[target]["batch"])
    workspace_bytes = parse_size(workspace or profiles[target]["workspace"])
    timing = Path(timing_cache) if timing_cache is not None else None
    check_output(output, force, inputs=(onnx, timing))
    check_output(manifest_path(output), force, inputs=(onnx, timing))
    metadata = graph_metadata(load_graph(onnx))
    check_engine_graph(onnx, metadata, precision)
    model = model if model is not None else json.loads(metadata["config"])["name"]
    source = _ArtefactWeights.of(onnx, metadata, model, weights, False) if validate else None
    checked = _images(images, model, preprocess, max_pixels, max_bytes) if validate else None
    acceptance = acceptance or Acceptance()
    drops = acceptance.drops()
    labels = None
    if checked is not None:
        labels = acceptance.read([n for n, _ in checked], json.loads(metadata["class_names"]))
        _check_held_out(metadata, checked)
    problem = tensorrt_problem()
    if problem:
        raise UserError(f"cannot build an engine here: {problem}; build on the GPU machine the engine will run on")
    network = None
    if source is not None:  # before the build: wrong weights fail in seconds, not after minutes
        progress("loading the model")
        network = source.load(model)
    with staging_folder(output) as staging:
        staged = staging / output.name
        manifest = build(
            onnx,
            staged,
            precision=precision,
            profile=profile,
            workspace=workspace_bytes,
            timing_cache=timing,
            hardware_compatible=hardware_compatible,
            version_compatible=version_compatible,
            progress=progress,
        )
        validation = None
        if network is not None and checked is not None:
            from dgla_export.runtimes.tensorrt import TensorRTRunner
            from dgla_export.validation import validate_runner

            wanted = batches or sorted({profile.min, min(3, profile.max), profile.max})
            with TensorRTRunner(staged) as runner:
                validation = validate_runner(
                    runner, network, checked, batches=_batches(wanted, profile.max), preprocessing=preprocess,
                    labels=labels, max_drop=drops, progress=progress,
                )  # fmt: skip
        placed = _publish(staged, output, validation, force=force, companions=(manifest_path,))
    result = EngineResult(placed, manifest, validation)
    _raise_if_failed(result, "the engine", output)
    return result


def debug(
    onnx: str | Path,
    reference: str | Path | None = None,
    *,
    output: str | Path | None = None,
    images: Images = None,
    preprocess: Method = "fast",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    device: str = "cpu",
    bound: float | None = None,
    max_images: int = 2,
    force: bool = False,
    progress: Progress = _quiet,
) -> DebugReport:
    """Find the layer where a failing graph departs from the FP32 graph: every intermediate tensor of
    ``onnx`` (run on ``device``) against ``reference``'s (the FP32 graph on the CPU; default: ``onnx``
    itself on the CPU, to find a provider's fault) on the images that fail, naming the first whose
    relative error exceeds ``bound`` (default: the precision's logits tolerance). With ``output``, a
    folder with the inputs, golden outputs and a one-line ``polygraphy run`` reproducing it.

    >>> debug("dgla_fp16.onnx", "dgla.onnx", output="fp16-debug").first_failure   # doctest: +SKIP
    """
    from dgla_export.artefacts.graph import graph_metadata, load_graph
    from dgla_export.io import replace_folder
    from dgla_export.localise import localise
    from dgla_export.runtimes.availability import onnxruntime_gpu_problem
    from dgla_export.runtimes.onnxruntime import PROVIDERS

    onnx = Path(onnx)
    if device not in PROVIDERS:
        raise OptionError(f"device must be one of {', '.join(PROVIDERS)}, got {device!r}")
    if reference is None and device == "cpu":
        raise OptionError(
            "give the FP32 graph to compare with (--reference, reference=), or another --device (device=) to "
            "compare this graph's providers"
        )
    reference = Path(reference) if reference is not None else onnx
    if device != "cpu":
        problem = onnxruntime_gpu_problem(PROVIDERS[device][0])
        if problem:
            raise UserError(f"cannot run {device} here: {problem}")
    folder = Path(output) if output is not None else None
    if folder is not None:
        check_output_folder(folder, force, command="dgla-export debug", inputs=(onnx, reference))
    model = json.loads(graph_metadata(load_graph(onnx))["config"])["name"]
    checked = _images(images, model, preprocess, max_pixels, max_bytes)

    def run(into: Path | None) -> DebugReport:
        return localise(
            onnx, reference, checked, output=into, bound=bound, providers=PROVIDERS[device], preprocess=preprocess,
            max_images=max_images, progress=progress,
        )  # fmt: skip

    if folder is None:
        return run(None)
    with replace_folder(folder, command="dgla-export debug") as staging:
        report = run(staging)
    return dataclasses.replace(report, folder=str(folder))


def bench(
    onnx: str | Path | None = None,
    *,
    onnx_fp16: str | Path | None = None,
    onnx_int8: str | Path | None = None,
    engine: str | Path | None = None,
    model: str | ResNet = "dgla_resnet50",
    weights: Weights = None,
    backends: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    images: Images = None,
    acceptance: Acceptance | None = None,
    options: Any = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    output: str | Path | None = None,
    heatmaps: bool = False,
    force: bool = False,
    progress: Progress = _quiet,
    plan: Callable[[list[str], float], None] = lambda names, seconds: None,
    warn: Progress = _warn,
) -> BenchResult:
    """Check every runtime against the FP32 PyTorch model on real images, then time it (see
    :mod:`dgla_export.benchmarking`). ``backends``: names to run (default: every one that makes sense here
    with the files given); ``options``: a :class:`dgla_export.benchmarking.run.BenchOptions`. With
    ``output`` the results are written there as JSON, CSV, Markdown and a plot. ``plan`` hears the
    runtimes about to run and an estimate of the seconds it will take, before they start; ``warn``
    hears of a file given that no chosen runtime uses. A graph exported with ``explain`` also has
    its maps compared with Grad-CAM of the PyTorch model; ``heatmaps`` (with ``output``) draws them,
    the reference's and each runtime's side by side per image.

    >>> bench("dgla.onnx", backends=["onnxruntime-cpu-fp32"]).failed   # doctest: +SKIP
    []
    """
    from dgla_export.artefacts.graph import check_graph_model, graph_metadata, load_graph
    from dgla_export.benchmarking.catalogue import OPTIONS, catalogue
    from dgla_export.benchmarking.report import write_results
    from dgla_export.benchmarking.run import BENCH_COMMAND, BenchOptions, estimate_seconds, run_bench
    from dgla_export.machine import provenance
    from dgla_export.models.cost import measure_cost

    options = options or BenchOptions()
    acceptance = acceptance or Acceptance()
    drops = acceptance.drops()
    labels = acceptance.labels
    given = {"fp32": onnx, "fp16": onnx_fp16, "int8": onnx_int8}
    onnx_files = {k: Path(v) for k, v in given.items() if v is not None}
    engine = Path(engine) if engine is not None else None
    config = _config(model)
    checkpoint = None if weights is None or str(weights) in ("demo", "random") else weights
    artefacts: dict[Path, dict[str, str]] = {}
    if output is not None:
        sources = (*onnx_files.values(), engine, images if isinstance(images, str | Path) else None, labels, checkpoint)
        check_output_folder(output, force, command=BENCH_COMMAND, inputs=sources)
    explain = False
    for precision, path in onnx_files.items():
        metadata = artefacts[path] = graph_metadata(load_graph(path))
        check_graph_model(path, metadata, config)
        found = metadata.get("precision", "fp32")
        if found != precision:
            raise UserError(f"{OPTIONS[precision]} {path} is an {found} graph; pass it as {OPTIONS[found]}")
    if engine is not None:
        from dgla_export.artefacts.manifest import verify_engine_file

        artefacts[engine] = verify_engine_file(engine).onnx_metadata
    explain = any("explain" in metadata for metadata in artefacts.values())
    source = _bench_weights(artefacts, model, weights)
    import torch

    chosen = _choose_backends(
        catalogue(list(devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])), engine),
        backends,
        onnx_files,
        engine,
    )
    for precision, path in onnx_files.items():
        if not any(b.source == precision and not b.unavailable(onnx_files, engine) for b in chosen):
            warn(f"{OPTIONS[precision]} {path} is not used by any selected backend that can run here")
    engine_runs = [b for b in chosen if b.source == "engine"]
    why = (
        engine_runs[0].unavailable(onnx_files, engine) if engine_runs else "the tensorrt-engine backend is not selected"
    )
    if engine is not None and (not engine_runs or why):
        warn(f"--engine {engine} is not used: {why}")
    checked = _images(
        images, config.name if isinstance(model, str) else model, options.preprocess, max_pixels, max_bytes
    )
    label_map = acceptance.read([name for name, _ in checked], config.class_names)
    for metadata in artefacts.values():
        _check_held_out(metadata, checked)
    if heatmaps and (output is None or not explain):
        raise OptionError("heatmaps need an output folder and a graph exported with explain (--explain)")
    progress("loading the model")
    network = source.load(model)
    runners = [
        (b, b.runner(network, onnx_files, engine) if not b.unavailable(onnx_files, engine) else None) for b in chosen
    ]
    running = [b.name for b, r in runners if r is not None]
    result = run_bench(
        network,
        runners,
        checked,
        options=options,
        macs_per_pair=measure_cost(network).macs,
        labels=label_map,
        max_drop=drops,
        explain=explain,
        provenance=provenance(),
        progress=progress,
        reference_done=lambda per_pair: plan(running, estimate_seconds(options, len(running), len(checked), per_pair)),
    )
    for backend, runner in runners:
        if runner is None:
            record = next(r for r in result.backends if r.backend == backend.name)
            record.skipped = backend.unavailable(onnx_files, engine)
    if output is not None:
        write_results(result, Path(output), dict(checked) if heatmaps else None)
    return result


def _bench_weights(artefacts: dict[Path, dict[str, str]], model: str | ResNet, weights: Weights) -> _ArtefactWeights:
    """The weights every artefact of a bench run was made from: they must agree (a runtime compared
    with another checkpoint's reference would fail parity for no fault of its own)."""
    from dgla_export.models.identity import CheckpointIdentity

    if not artefacts:  # PyTorch backends only: the weights given, the demo by default
        return _ArtefactWeights(Path("."), None, weights if weights is not None else "demo", False)
    digests = {path: getattr(CheckpointIdentity.from_metadata(m), "digest", None) for path, m in artefacts.items()}
    if len(set(digests.values())) > 1:
        listed = "; ".join(f"{path}: {digest}" for path, digest in digests.items())
        raise UserError(f"the artefacts were exported from different checkpoints ({listed}); bench one checkpoint's")
    first = next(iter(artefacts))
    return _ArtefactWeights.of(first, artefacts[first], model, weights, False)


def _choose_backends(
    known: list[Backend], wanted: Sequence[str] | None, onnx_files: dict[str, Path], engine: Path | None
) -> list[Backend]:
    """The requested runtimes (each must be able to run), else the default ones that can."""
    if not wanted:
        return [b for b in known if b.default and not b.missing(onnx_files, engine)]
    unknown = sorted(set(wanted) - {b.name for b in known})
    if unknown:
        raise OptionError(f"backends: unknown {unknown}; known: {', '.join(b.name for b in known)}")
    chosen = [b for b in known if b.name in wanted]
    for backend in chosen:
        reason = backend.unavailable(onnx_files, engine)
        if reason:
            raise UserError(f"--backends: {backend.name} cannot run here: {reason}")
    return chosen


def write_triton_repository(
    onnx: str | Path,
    output: str | Path,
    *,
    engine: str | Path | None = None,
    options: TritonOptions | None = None,
    force: bool = False,
) -> RepositoryResult:
    """Write a Triton Inference Server repository: dgla_onnx (ONNX Runtime), dgla_trt (given an
    engine, checked against its manifest and SHA-256 first), dgla_preprocess (image bytes -> tensors)
    and the ensemble dgla (image bytes in, probabilities out). ``force`` replaces an earlier
    repository of this function, nothing else.

    >>> write_triton_repository("dgla.onnx", "triton-repo").models   # doctest: +SKIP
    ['dgla', 'dgla_onnx', 'dgla_preprocess']
    """
    from dgla_export.triton.repository import TritonOptions, write_repository

    engine = Path(engine) if engine is not None else None
    configs = write_repository(Path(onnx), Path(output), engine=engine, options=options or TritonOptions(), force=force)
    return RepositoryResult(Path(output), configs)


@contextlib.contextmanager
def serve(
    repository: str | Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    timeout: float = 300.0,
    log: str | Path | None = None,
    progress: Progress = _quiet,
) -> Iterator[ServerEndpoints]:
    """Serve a repository with the pip-installed Triton (``pip install 'dgla-export[serve]'``):
    yields the endpoints once every model is ready, and stops the server (and everything it
    started) on exit.

    >>> with serve("triton-repo") as server:   # doctest: +SKIP
    ...     classify(["lesion.jpg"], url=server.grpc)
    """
    from dgla_export.triton.server import Ports, TritonServer

    ports = Ports(host, http_port, grpc_port, metrics_port)
    with TritonServer(Path(repository), ports, log_path=Path(log) if log else None) as server:
        progress(f"tritonserver pid {server.pid}, loading {repository} ...")
        states = server.wait_ready(timeout)
        urls = ports.urls
        yield ServerEndpoints(urls["http"], urls["grpc"], urls["metrics"], server.pid, states, dict(server.how), server)
