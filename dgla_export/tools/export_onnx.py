"""Export the model to one self-contained ONNX file with a dynamic batch, then validate it with ONNX
Runtime against the FP32 PyTorch model on real images. The graph reaches --output only when
validation passes; a graph that fails is kept beside it as NAME.failed.onnx for inspection (exit 3).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from dgla_export.tools.args import (
    add_model_args,
    add_validation_args,
    batch_range,
    image_options,
    positive_int,
    probability,
    weight_options,
)

HELP = "export an ONNX graph, then validate it against PyTorch"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp16", "int8"],
        help="fp32 (default); fp16 with FP32 attention islands, for TensorRT; int8: Q/DQ from real-image "
        "calibration, the most sensitive layers kept in FP32 until the accuracy target holds (minutes; "
        "--int8-target openvino: NNCF's placement, judged against the same target)",
    )
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    parser.add_argument(
        "--batch",
        type=batch_range,
        default=(1, 32),
        metavar="MIN:MAX",
        help="range of the dynamic batch dimension (default 1:32)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="add the output cam: per-class Grad-CAM maps of layer4 (7x7 for 224 px), checked against "
        "captum's Grad-CAM of the PyTorch model; costs a 1x1 convolution",
    )
    parser.add_argument("--force", action="store_true", help="overwrite --output (and --report) if they exist")
    parser.add_argument("--no-validate", action="store_true", help="write the graph without validating it")
    add_validation_args(parser)
    parser.set_defaults(runtime=None)  # where the graph runs: OpenVINO for --int8-target openvino
    int8 = parser.add_argument_group("int8 (with --precision int8)")
    int8.add_argument(
        "--calibration-images",
        type=Path,
        metavar="FOLDER",
        help="images of the deployment's domain to calibrate on (default: the bundled photos, which are not "
        "dermoscopy: fine for a demo, not for a clinic)",
    )
    int8.add_argument(
        "--calibration-count",
        type=positive_int,
        metavar="N",
        help="use the first N images (by name) of the calibration folder (default: all)",
    )
    int8.add_argument(
        "--calibration-method",
        choices=["minmax", "percentile", "entropy"],
        help="how ONNX Runtime's quantizer chooses activation ranges from the calibration images (default "
        "minmax; not with --int8-target openvino, where NNCF chooses them)",
    )
    int8.add_argument(
        "--int8-target",
        default="cpu",
        choices=["cpu", "tensorrt", "openvino"],
        help="cpu: unsigned activations, fastest in ONNX Runtime on x86 (default); tensorrt: signed symmetric "
        "activations, the only INT8 form TensorRT builds; openvino: NNCF places the quantizers where OpenVINO's "
        "CPU plugin fuses them (VNNI, AMX); the graph must meet the target on OpenVINO, and with --labels covering "
        "calibration images and --max-drop NNCF's accuracy control first reverts layers to FP32 until the clinical "
        "drops hold too (hours for the full model on 2 cores); validated with OpenVINO (on --device cpu) unless "
        "--runtime says otherwise (the openvino extra)",
    )
    int8.add_argument(
        "--accuracy-target",
        type=probability,
        metavar="P",
        help="largest probability error vs PyTorch FP32 allowed on the calibration and validation images "
        "(default: the model config's int8 tolerance, 0.05); no top-1 flip is allowed where FP32's margin is >= 0.05",
    )


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import Int8Options, ValidationFailedError, export_onnx
    from dgla_export.console import PLAIN_WIDTH, Console
    from dgla_export.errors import OptionError
    from dgla_export.quantize import NNCF_RANGES
    from dgla_export.tools import render

    console = Console("dgla-export")
    int8 = None
    if args.precision == "int8":
        if args.calibration_method and args.int8_target == "openvino":
            raise OptionError(NNCF_RANGES)
        int8 = Int8Options(
            calibration_images=args.calibration_images,
            calibration_count=args.calibration_count,
            target=args.int8_target,
            method=args.calibration_method or "minmax",
            accuracy_target=args.accuracy_target,
        )
    elif args.calibration_images or args.calibration_count or args.accuracy_target:
        raise OptionError("--calibration-images, --calibration-count and --accuracy-target need --precision int8")
    nncf = args.int8_target == "openvino"
    quantizing = ", quantizing with NNCF" if nncf else ", calibrating and searching INT8 (minutes)"
    steps = "exporting" + (quantizing if int8 else "") + " and validating"
    try:
        with console.status(steps):  # each step names itself (and its seconds) as it ends
            result = export_onnx(
                args.output,
                args.model,
                weights=weight_options(args),
                precision=args.precision,
                opset=args.opset,
                batch=args.batch,
                explain=args.explain,
                validate=not args.no_validate,
                images=image_options(args),
                device=args.device,
                runtime=args.runtime,
                batches=args.batches,
                int8=int8,
                report=args.report,
                force=args.force,
                progress=console.log,
                warn=lambda message: console.print(f"warning: {message}"),
            )
    except ValidationFailedError as err:
        if err.result.quantization is not None:
            render.quantization(err.result.quantization, console)
        render.validation(err.result.validation, console)  # type: ignore[arg-type]
        raise
    if result.quantization is not None:
        render.quantization(result.quantization, console)
    graph = result.graph
    ops = ", ".join(f"{op} {n}" for op, n in graph.op_counts.items())
    # the operator counts wrapped (a log keeps them within its width); the path whole
    ops = textwrap.fill(ops, width=PLAIN_WIDTH, initial_indent="  ", subsequent_indent="  ")
    summary = f"opset {graph.opset}, IR {graph.ir_version}, {graph.node_count} nodes"
    if result.validation is None:
        console.print(f"{result.path}: {summary} (not validated)\n{ops}")
        return 0
    render.validation(result.validation, console)
    if args.report:
        console.print(f"report: {args.report}")
    console.print(f"{result.path}: {summary}\n{ops}")
    render.verdict(result.validation, console)
    return 0
