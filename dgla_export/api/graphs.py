"""ONNX graphs: export (validated by default), validate again on other images, find where one departs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from dgla_export.api.common import (
    ArtefactWeights,
    ExportResult,
    ImageOptions,
    Images,
    Progress,
    WeightOptions,
    Weights,
    check_held_out,
    config_of,
    default_batches,
    identity,
    int8_tolerance,
    load_model,
    publish,
    quiet,
    raise_if_failed,
    validate_graph,
)
from dgla_export.api.common import warn as python_warning
from dgla_export.errors import OptionError, UserError
from dgla_export.golden import golden_answers
from dgla_export.io import check_output, check_output_folder, report_beside, sha256_file, staging_folder

if TYPE_CHECKING:
    from dgla_export.localise import DebugReport
    from dgla_export.models.resnet import ResNet
    from dgla_export.validation import ValidationReport

__all__ = ["Int8Options", "debug", "export_onnx", "validate"]


@dataclasses.dataclass(frozen=True)
class Int8Options:
    """INT8 export: calibration images (default: the bundled photos, which are not dermoscopy),
    the Q/DQ flavour (``openvino``: NNCF's placement for OpenVINO's CPU plugin, under its accuracy
    control where labels and drop bounds are given), the calibration method, and the probability
    bound the graph must meet (default: the model config's int8 tolerance)."""

    calibration_images: Images = None
    calibration_count: int | None = None
    target: Literal["cpu", "tensorrt", "openvino"] = "cpu"
    method: str = "minmax"
    accuracy_target: float | None = None


def export_onnx(
    output: str | Path,
    model: str | ResNet = "dgla_resnet50",
    *,
    weights: WeightOptions | Weights = "demo",
    precision: Literal["fp32", "fp16", "int8"] = "fp32",
    explain: bool = False,
    batch: tuple[int, int] = (1, 32),
    opset: int = 18,
    validate: bool = True,
    images: ImageOptions | Images = None,
    device: str = "cpu",
    runtime: str | None = None,
    batches: list[int] | None = None,
    int8: Int8Options | None = None,
    report: str | Path | None = None,
    force: bool = False,
    progress: Progress = quiet,
    warn: Progress = python_warning,
) -> ExportResult:
    """Export ``model`` to one self-contained ONNX file with a dynamic batch, then validate it with
    ``runtime`` (ONNX Runtime on ``device``, or OpenVINO; default: where the graph is meant to run,
    OpenVINO for INT8 of the openvino target on the CPU, else ONNX Runtime) against the FP32 PyTorch model on
    ``images``.

    The graph reaches ``output`` only when validation passes; one that fails is kept as
    ``NAME.failed.onnx`` and :class:`ValidationFailedError` is raised. INT8 exports the FP32 graph,
    then quantizes it (``int8``: calibration and search options) and validates it on images disjoint
    from the calibration images. ``explain`` adds the output ``cam``: (batch, classes, h, w) class
    activation maps of the architecture's last stage, Grad-CAM up to a positive scale, which
    validation holds to captum's Grad-CAM of the PyTorch model. ``images``' acceptance (labels and
    the largest clinical drop allowed) also becomes the INT8 search's target on labelled
    calibration images.

    >>> result = export_onnx("dgla.onnx", precision="fp16")   # doctest: +SKIP
    >>> result.validation.passed
    True
    """
    import onnx

    from dgla_export.export.onnx_export import ExportOptions, check_contract
    from dgla_export.export.onnx_export import export_onnx as write_graph

    output = check_output(output, force, suffix=".onnx")
    report = check_output(report, force, suffix=".json") if report is not None else None
    if precision not in ("fp32", "fp16", "int8"):
        raise OptionError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if int8 is not None and precision != "int8":
        raise OptionError("int8 options need precision='int8'")
    inputs, chosen, config = ImageOptions.of(images), WeightOptions.of(weights), config_of(model)
    checked = inputs.load(config, warn) if validate else None  # inputs first
    drops = inputs.acceptance.drops()
    int8 = int8 or Int8Options() if precision == "int8" else None
    for_openvino = int8 is not None and int8.target == "openvino"
    runtime = runtime or ("openvino" if for_openvino and device == "cpu" else "onnxruntime")
    if int8 is not None:  # its options, and NNCF for the openvino target, checked before any slow work
        from dgla_export.quantize import QuantizationOptions
        from dgla_export.quantize_nncf import nncf_problem

        QuantizationOptions(target=int8.target, method=int8.method)
        problem = nncf_problem() if for_openvino else None
        if problem:
            raise UserError(f"--int8-target openvino needs NNCF: {problem}")
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
        calibration = dataclasses.replace(inputs, images=int8.calibration_images).load(config)
        if checked is not None:
            both_default = inputs.images is None and int8.calibration_images is None
            calibration, checked = split_held_out(calibration, checked, both_default, warn)
        calibration = calibration[: int8.calibration_count]
    labels = inputs.acceptance.read([n for n, _ in checked], config.class_names) if checked is not None else None
    low, high = batch
    if batches:
        default_batches(batches, low, high)
    traced = "fp32" if int8 else precision  # INT8 is written from the FP32 graph
    options = ExportOptions(opset=opset, precision=traced, min_batch=low, max_batch=high, explain=explain)  # type: ignore[arg-type]
    progress("loading the model")
    network = load_model(model, chosen)
    with staging_folder(output) as staging:
        staged = staging / output.name
        exported = staged.with_suffix(".fp32.onnx") if int8 else staged
        checkpoint = identity(chosen, model, network)
        graph = write_graph(network, exported, options=options, checkpoint=checkpoint, progress=progress)
        quantization = None
        if int8 is not None:
            from dgla_export.quantize import QuantizationError, QuantizationOptions, quantize_onnx
            from dgla_export.quantize_nncf import quantize_nncf

            quantize = QuantizationOptions(
                target=int8.target,
                method=int8.method,
                tolerance=int8_tolerance(network, int8.accuracy_target),
                preprocess=inputs.preprocess,
                labels=inputs.acceptance.labels_of([n for n, _ in calibration], network.config.class_names),
                max_drop=drops,
            )
            try:
                quantization = (quantize_nncf if int8.target == "openvino" else quantize_onnx)(
                    exported, staged, network.config, calibration, options=quantize, progress=progress
                )
            except QuantizationError as err:
                raise QuantizationError(f"INT8 FAILED: {err}; nothing written to {output}") from err
            graph = check_contract(onnx.load(str(staged)), network.config)
        validation = None
        if checked is not None:
            tolerance = int8_tolerance(network, int8.accuracy_target) if int8 else None
            validation = validate_graph(
                staged, network, checked, graph.metadata, device=device, runtime=runtime, batches=batches,
                inputs=inputs, tolerance=tolerance, progress=progress, labels=labels,
            )  # fmt: skip
            # what `dgla-export triton` checks: this graph's SHA-256, and what it serves is held to
            extra = {"graph_sha256": sha256_file(staged), "golden": golden_answers(network, explain)}
            if quantization:
                extra["quantization"] = quantization.to_dict()
            validation.write_json(report_beside(staged), extra)  # travels with the graph
            if report is not None:
                validation.write_json(report, extra)
        companions = (report_beside,) if validation is not None else ()
        placed = publish(staged, output, validation, force=force, companions=companions)
    result = ExportResult(placed, graph, validation, quantization)
    raise_if_failed(result, "the graph", output)
    return result


def validate(
    onnx: str | Path,
    model: str | ResNet | None = None,
    *,
    weights: WeightOptions | Weights = None,
    images: ImageOptions | Images = None,
    device: str = "cpu",
    runtime: str = "onnxruntime",
    batches: list[int] | None = None,
    accuracy_target: float | None = None,
    report: str | Path | None = None,
    force: bool = False,
    progress: Progress = quiet,
) -> ValidationReport:
    """Run an exported graph with ``runtime`` (ONNX Runtime on ``device``; ``openvino``, or
    ``openvino-bf16`` on a CPU with native BF16) and compare it with the FP32 PyTorch model on real
    images (default model: the graph's own, with the weights it was exported from: ``weights``
    that are not those is an error). Returns the report; ``report.passed`` says whether every
    tolerance held (and, with ``images``' acceptance, the clinical drop against the reference).

    >>> validate("dgla.onnx", images="lesions/").passed   # doctest: +SKIP
    True
    """
    from dgla_export.artefacts.graph import check_graph_model, graph_metadata, load_graph

    onnx = Path(onnx)
    metadata = graph_metadata(load_graph(onnx))  # inputs first, then the slow model load
    model = model if model is not None else json.loads(metadata["config"])["name"]
    config, inputs = config_of(model), ImageOptions.of(images)
    check_graph_model(onnx, metadata, config)
    report = check_output(report, force, inputs=(onnx,), suffix=".json") if report is not None else None
    source = ArtefactWeights.of(onnx, metadata, model, WeightOptions.of(weights))
    inputs.acceptance.drops()
    checked = inputs.load(config)
    labels = inputs.acceptance.read([n for n, _ in checked], config.class_names)
    check_held_out(metadata, checked)
    progress("loading the model")
    network = source.load(model)
    int8 = metadata.get("precision") == "int8"
    result = validate_graph(
        onnx, network, checked, metadata, device=device, runtime=runtime, batches=batches, inputs=inputs,
        tolerance=int8_tolerance(network, accuracy_target) if int8 else None, progress=progress, labels=labels,
    )  # fmt: skip
    extra = {"graph_sha256": sha256_file(onnx), "golden": golden_answers(network, "explain" in metadata)}
    result.write_json(report_beside(onnx), extra)  # travels with the graph: `dgla-export triton` finds it there
    if report is not None:
        result.write_json(report, extra)
    return result


def debug(
    onnx: str | Path,
    reference: str | Path | None = None,
    *,
    output: str | Path | None = None,
    images: ImageOptions | Images = None,
    device: str = "cpu",
    bound: float | None = None,
    max_images: int = 2,
    force: bool = False,
    progress: Progress = quiet,
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
    inputs = ImageOptions.of(images)
    checked = inputs.load(config_of(json.loads(graph_metadata(load_graph(onnx))["config"])["name"]))

    def run(into: Path | None) -> DebugReport:
        return localise(
            onnx, reference, checked, output=into, bound=bound, providers=PROVIDERS[device],
            preprocess=inputs.preprocess, max_images=max_images, progress=progress,
        )  # fmt: skip

    if folder is None:
        return run(None)
    with replace_folder(folder, command="dgla-export debug") as staging:
        report = run(staging)
    return dataclasses.replace(report, folder=str(folder))
