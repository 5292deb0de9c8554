"""TensorRT engines: built on the GPU they will run on, validated like every export before they are published."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dgla_export.api.common import (
    ArtefactWeights,
    EngineResult,
    ImageOptions,
    Images,
    Progress,
    WeightOptions,
    Weights,
    check_held_out,
    default_batches,
    publish,
    quiet,
    raise_if_failed,
)
from dgla_export.errors import OptionError, UserError
from dgla_export.io import check_output, staging_folder

if TYPE_CHECKING:
    from dgla_export.models.resnet import ResNet

__all__ = ["EngineOptions", "build_engine"]


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How TensorRT builds: ``target`` picks the batch profile and workspace of
    ``artefacts/engine_profiles.json`` (``batch`` "MIN:OPT:MAX" and ``workspace`` "8GiB" override
    them); a timing cache speeds up a rebuild; the compatibility flags trade speed for an engine
    that loads on other GPUs of its generation, or other TensorRT versions."""

    target: str = "h100"
    batch: str | None = None
    workspace: str | None = None
    timing_cache: str | Path | None = None
    hardware_compatible: bool = False
    version_compatible: bool = False


def build_engine(
    onnx: str | Path,
    output: str | Path,
    *,
    precision: Literal["fp16", "fp32", "int8"] = "fp16",
    options: EngineOptions | None = None,
    validate: bool = True,
    model: str | ResNet | None = None,
    weights: WeightOptions | Weights = None,
    images: ImageOptions | Images = None,
    batches: list[int] | None = None,
    force: bool = False,
    progress: Progress = quiet,
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
    from dgla_export.models.config import ModelConfig
    from dgla_export.runtimes.availability import tensorrt_problem

    onnx, output, options = Path(onnx), Path(output), options or EngineOptions()
    profiles = load_build_profiles()
    if options.target not in profiles:
        raise OptionError(f"unknown target {options.target!r}; known: {', '.join(profiles)}")
    profile = BatchProfile.parse(options.batch or profiles[options.target]["batch"])
    workspace_bytes = parse_size(options.workspace or profiles[options.target]["workspace"])
    timing = Path(options.timing_cache) if options.timing_cache is not None else None
    check_output(output, force, inputs=(onnx, timing), suffix=".plan")
    check_output(manifest_path(output), force, inputs=(onnx, timing))
    metadata = graph_metadata(load_graph(onnx))
    check_engine_graph(onnx, metadata, precision)
    wanted = default_batches(batches, profile.min, profile.max)
    model = model if model is not None else json.loads(metadata["config"])["name"]
    inputs = ImageOptions.of(images)
    inputs.acceptance.drops()  # max_drop without labels fails here, not after the build
    source = ArtefactWeights.of(onnx, metadata, model, WeightOptions.of(weights)) if validate else None
    checked = inputs.load(ModelConfig.from_dict(json.loads(metadata["config"]))) if validate else None
    labels = None
    if checked is not None:
        labels = inputs.acceptance.read([n for n, _ in checked], json.loads(metadata["class_names"]))
        check_held_out(metadata, checked)
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
            hardware_compatible=options.hardware_compatible,
            version_compatible=options.version_compatible,
            progress=progress,
        )
        validation = None
        if network is not None and checked is not None:
            from dgla_export.runtimes.tensorrt import TensorRTRunner
            from dgla_export.validation import validate_runner

            with TensorRTRunner(staged) as runner:
                validation = validate_runner(
                    runner, network, checked, batches=wanted, preprocessing=inputs.preprocess, labels=labels,
                    max_drop=inputs.acceptance.drops(), progress=progress,
                )  # fmt: skip
        placed = publish(staged, output, validation, force=force, companions=(manifest_path,))
    result = EngineResult(placed, manifest, validation)
    raise_if_failed(result, "the engine", output)
    return result
