"""Find where a graph that fails validation goes wrong: every intermediate tensor of the FP16 or
INT8 graph (or of a graph on another provider) against the FP32 graph's, on the images that fail,
walked in the graph's order; the first tensor whose relative error exceeds the bound (default: the
precision's logits tolerance) is where the fault starts. --output keeps the inputs, the golden
outputs and reproduce.sh, a one-line `polygraphy run` that shows the failure alone.

Exit codes: 0 nothing past the bound, 3 a tensor past it (named), 2 bad input, 1 a bug.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgla_export.tools.args import add_preprocess_args, image_options, positive_float, positive_int

HELP = "find the first layer where a failing graph departs from the FP32 graph"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", type=Path, metavar="ONNX", help="the failing graph (FP16, INT8, or any on --device)")
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="FP32_ONNX",
        help="the FP32 graph of the same model and checkpoint (default: ONNX itself on the CPU, with --device)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "tensorrt"],
        help="ONNX Runtime provider the failing graph runs on (default cpu; the reference always runs on the CPU)",
    )
    parser.add_argument("--images", type=Path, metavar="FOLDER", help="images (default: scikit-image's bundled photos)")
    parser.add_argument(
        "--bound",
        type=positive_float,
        metavar="REL",
        help="largest relative error max|a-r|/max|r| of an intermediate tensor (default: the precision's logits "
        "tolerance)",
    )
    parser.add_argument(
        "--max-images", type=positive_int, default=2, metavar="N", help="failing images to trace (default 2)"
    )
    parser.add_argument(
        "--output", type=Path, metavar="FOLDER", help="write inputs.json, golden.json, report.json and reproduce.sh"
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier --output of this command")
    add_preprocess_args(parser)


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import debug
    from dgla_export.console import Console
    from dgla_export.errors import EXIT_MISMATCH
    from dgla_export.tools import render

    console = Console("dgla-export")
    with console.status("comparing every intermediate tensor"):
        report = debug(
            args.onnx,
            args.reference,
            output=args.output,
            images=image_options(args),
            device=args.device,
            bound=args.bound,
            max_images=args.max_images,
            force=args.force,
            progress=console.log,
        )
    render.debug_report(report, console)
    return EXIT_MISMATCH if report.first_failure is not None else 0
