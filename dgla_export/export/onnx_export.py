"""PyTorch -> ONNX: one self-contained, TensorRT-friendly file per precision.

Stages: fold BN (and cast to FP16 with FP32 islands) -> dynamo export with one symbolic batch
shared by every input and output -> Polygraphy constant folding -> contract check -> atomic
write. Every stage is a function of its own so tests and the CLI can call them alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import onnx
import torch

from dgla_export._version import __version__
from dgla_export.artefacts.graph import GraphContractError, GraphReport, inspect_graph
from dgla_export.console import library_chatter_muted, quiet_onnxruntime
from dgla_export.errors import OptionError
from dgla_export.export.prepare import ExportModule, fold_batchnorm, to_fp16
from dgla_export.io import atomic_path, check_output
from dgla_export.models.config import ModelConfig
from dgla_export.models.identity import CheckpointIdentity
from dgla_export.models.resnet import ResNet

__all__ = [
    "CAM_OUTPUT",
    "CAM_TOP1_OUTPUT",
    "OUTPUT_NAMES",
    "ExportOptions",
    "build_metadata",
    "cam_shape",
    "check_contract",
    "export_onnx",
    "output_names",
    "to_onnx",
]

log = logging.getLogger(__name__)
OUTPUT_NAMES = ("logits", "probs")
CAM_OUTPUT = "cam"  # with explain: (batch, classes, h, w) class activation maps of layer4
CAM_TOP1_OUTPUT = "cam_top1"  # with explain: (batch, h, w) the map of each image's top-1 class
Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """opset 18 is parsed by TensorRT 8.6 to 11.x and ONNX Runtime >= 1.14."""

    opset: int = 18
    precision: Literal["fp32", "fp16"] = "fp32"
    min_batch: int = 1
    max_batch: int = 32
    explain: bool = False  # add the ``cam`` output (Grad-CAM at layer4, up to a positive scale)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise OptionError(f"precision must be fp32 or fp16, got {self.precision!r}")
        if not 1 <= self.min_batch < self.max_batch:
            # torch.export cannot make a dynamic dimension of one size (it raised an AssertionError)
            raise OptionError(
                f"need 1 <= min_batch < max_batch (the batch is the graph's dynamic dimension), "
                f"got {self.min_batch}:{self.max_batch}; e.g. 1:2 for a graph run one image at a time"
            )
        if not 18 <= self.opset <= 23:
            raise OptionError(f"opset {self.opset} unsupported: use 18 to 23 (TensorRT 10.0 parses up to 20)")


def build_metadata(config: ModelConfig, options: ExportOptions, checkpoint: CheckpointIdentity) -> dict[str, str]:
    """``metadata_props`` that let a consumer (Triton writer, bench) trust the file alone."""
    return {
        "model_name": config.name,
        "class_names": json.dumps(list(config.class_names)),
        "mean": json.dumps(list(config.mean)),
        "std": json.dumps(list(config.std)),
        "input_sizes": json.dumps(config.input_sizes),
        "precision": options.precision,
        "batch_range": f"{options.min_batch}:{options.max_batch}",
        **checkpoint.to_metadata(),
        "spec_version": config.architecture.spec_version,
        "tool": f"dgla-export {__version__}",
        "torch_version": torch.__version__,
        "config": json.dumps(config.to_dict()),
        **({"explain": json.dumps(_explain_record(config))} if options.explain else {}),
    }


def cam_shape(config: ModelConfig) -> tuple[int, int]:
    """(h, w) of the maps: the main input's side over the network's stride (the contract's)."""
    return config.architecture.cam_shape()


def _explain_record(config: ModelConfig) -> dict[str, object]:
    return {
        "outputs": {
            CAM_OUTPUT: ["batch", config.num_classes, *cam_shape(config)],
            CAM_TOP1_OUTPUT: ["batch", *cam_shape(config)],
        },
        "layer": config.architecture.cam_layer,
        "method": f"relu(sum_k fc.weight[c, k] * {config.architecture.cam_layer}[k]): Grad-CAM at "
        f"{config.architecture.cam_layer} up to a positive scale",
        "normalise": "per image and class: (map - min) / (max - min), 0 where the map is flat",
    }


def output_names(explain: bool) -> tuple[str, ...]:
    return (*OUTPUT_NAMES, CAM_OUTPUT, CAM_TOP1_OUTPUT) if explain else OUTPUT_NAMES


def to_onnx(model: ResNet, options: ExportOptions) -> onnx.ModelProto:
    """Trace ``model`` (eval) into an ONNX model with a symbolic batch dimension."""
    prepared = fold_batchnorm(model)
    if options.precision == "fp16":
        prepared = to_fp16(prepared)
    config = model.config
    example = tuple(torch.rand(shape) for shape in config.input_shapes(2).values())
    batch = torch.export.Dim("batch", min=options.min_batch, max=options.max_batch)
    with warnings.catch_warnings(), torch.no_grad(), library_chatter_muted():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            ExportModule(prepared, explain=options.explain),
            example,
            dynamo=True,
            opset_version=options.opset,
            input_names=list(config.input_names),
            output_names=list(output_names(options.explain)),
            dynamic_shapes=(tuple({0: batch} for _ in config.input_names),),  # forward(*images)
            external_data=False,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    proto = _fold_constants(proto)
    # The lowest IR version that carries this opset: loadable by the widest range of runtimes.
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    _name_batch(proto)
    return proto


def _fold_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Polygraphy's constant folding, without its log lines (-v turns them on through the logging
    setup of the commands; a library user's stdout stays theirs)."""
    from polygraphy.backend.onnx import fold_constants
    from polygraphy.logger import G_LOGGER

    quiet = not logging.getLogger().isEnabledFor(logging.INFO)
    severity, colors = G_LOGGER.module_severity, G_LOGGER.colors
    if quiet:
        G_LOGGER.module_severity, G_LOGGER.colors = G_LOGGER.ERROR, False
        quiet_onnxruntime()  # the folding runs ONNX Runtime
    try:
        return fold_constants(proto, num_passes=2, size_threshold=None, allow_onnxruntime_shape_inference=False)
    finally:
        G_LOGGER.module_severity, G_LOGGER.colors = severity, colors


def _name_batch(proto: onnx.ModelProto) -> None:
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def check_contract(proto: onnx.ModelProto, config: ModelConfig) -> GraphReport:
    """onnx's full check, then names, shapes and ops (:func:`inspect_graph`); raise on any problem.
    A graph that says it explains (metadata ``explain``) must have the ``cam`` outputs too."""
    onnx.checker.check_model(proto, full_check=True)
    explain = any(p.key == "explain" for p in proto.metadata_props)
    expected: dict[str, tuple[int | str, ...]] = {name: ("batch", config.num_classes) for name in OUTPUT_NAMES}
    if explain:
        expected[CAM_OUTPUT] = ("batch", config.num_classes, *cam_shape(config))
        expected[CAM_TOP1_OUTPUT] = ("batch", *cam_shape(config))
    report = inspect_graph(
        proto,
        expected_inputs={n: tuple(s) for n, s in config.input_shapes("batch").items()},
        expected_outputs=expected,
    )
    if report.problems:
        raise GraphContractError("exported graph breaks the contract:\n- " + "\n- ".join(report.problems))
    return report


def export_onnx(
    model: ResNet,
    output: str | Path,
    *,
    options: ExportOptions = ExportOptions(),
    checkpoint: CheckpointIdentity,
    force: bool = False,
    progress: Progress = log.info,
) -> GraphReport:
    """Export, check and atomically write ``output``; raise before writing if the graph
    breaks the contract (see :func:`dgla_export.artefacts.graph.inspect_graph`)."""
    output = check_output(output, force)
    started = time.perf_counter()
    progress(f"exporting {model.config.name} ({options.precision}, opset {options.opset}) with torch.export")
    proto = to_onnx(model, options)
    progress(f"traced in {time.perf_counter() - started:.0f} s; checking the graph")
    onnx.helper.set_model_props(proto, build_metadata(model.config, options, checkpoint))
    proto.producer_name, proto.producer_version = "dgla-export", __version__
    report = check_contract(proto, model.config)
    with atomic_path(output) as tmp:
        onnx.save_model(proto, str(tmp))
    progress(f"exported and checked {report.node_count} nodes in {time.perf_counter() - started:.0f} s")
    return report
