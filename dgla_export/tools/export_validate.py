"""Run an exported graph with ONNX Runtime and compare it with the FP32 PyTorch model on real
images: errors, NaN/Inf, top-1 flips with margins. Exit 3 when a tolerance fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgla_export.tools.args import add_model_args, add_validation_args, image_options, weight_options

HELP = "validate an ONNX graph against the PyTorch model"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", type=Path, metavar="ONNX", help="graph from `dgla-export onnx`")
    add_model_args(parser, of_graph=True, of_artefact=True)
    add_validation_args(parser)
    parser.add_argument("--force", action="store_true", help="overwrite --report if it exists")


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import validate
    from dgla_export.console import Console
    from dgla_export.errors import EXIT_MISMATCH
    from dgla_export.tools import render

    console = Console("dgla-export")
    with console.status("validating against PyTorch FP32"):
        report = validate(
            args.onnx,
            args.model,
            weights=weight_options(args),
            images=image_options(args),
            device=args.device,
            runtime=args.runtime,
            batches=args.batches,
            report=args.report,
            force=args.force,
            progress=console.log,
        )
    render.validation(report, console)
    if args.report:
        console.print(f"report: {args.report}")
    render.verdict(report, console)
    return 0 if report.passed else EXIT_MISMATCH
