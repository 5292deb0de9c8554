"""Build a strongly typed TensorRT engine from a graph of `dgla-export onnx`, on the GPU it will run
on, with a JSON manifest beside it (versions, GPU, profile, layer precisions), then validate the
engine against the FP32 PyTorch model like every export (--weights: those the graph came from). An
engine that fails validation is kept as NAME.failed.plan (exit 3). Needs NVIDIA's tensorrt wheel
(10.x or 11.x) and a CUDA GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgla_export.tools.args import add_model_args, add_validation_args, image_options, weight_options

HELP = "build a TensorRT engine (and its manifest), then validate it against PyTorch"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="graph from `dgla-export onnx`")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="engine file to write (.plan)")
    parser.add_argument(
        "--precision",
        default="fp16",
        choices=["fp16", "fp32", "int8"],
        help="must match the graph's precision (default fp16); int8 needs a graph of --int8-target tensorrt",
    )
    parser.add_argument(
        "--target",
        default="h100",
        metavar="GPU",
        help="build defaults from dgla_export/artefacts/engine_profiles.json (default h100)",
    )
    parser.add_argument("--batch", metavar="MIN:OPT:MAX", help="batch profile, e.g. 1:8:32 (default: the target's)")
    parser.add_argument("--workspace", metavar="SIZE", help="workspace limit, e.g. 8GiB (default: the target's)")
    parser.add_argument(
        "--timing-cache",
        type=Path,
        metavar="FILE",
        help="read and update this timing cache (valid for the same GPU and TensorRT only)",
    )
    parser.add_argument("--hardware-compatible", action="store_true", help="run on Ampere and newer GPUs (slower)")
    parser.add_argument("--version-compatible", action="store_true", help="run on later TensorRT versions (slower)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--no-validate", action="store_true", help="write the engine without validating it")
    add_model_args(parser, partial=False, of_graph=True, of_artefact=True)
    add_validation_args(parser, runtimes=False)


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import EngineOptions, ValidationFailedError, build_engine
    from dgla_export.console import Console
    from dgla_export.tools import render

    console = Console("dgla-export")
    try:
        with console.status("building the engine (minutes), then validating it"):
            result = build_engine(
                args.onnx,
                args.output,
                precision=args.precision,
                options=EngineOptions(
                    target=args.target,
                    batch=args.batch,
                    workspace=args.workspace,
                    timing_cache=args.timing_cache,
                    hardware_compatible=args.hardware_compatible,
                    version_compatible=args.version_compatible,
                ),
                validate=not args.no_validate,
                model=args.model,
                weights=weight_options(args),
                images=image_options(args),
                batches=args.batches,
                force=args.force,
                progress=console.log,
            )
    except ValidationFailedError as err:
        render.validation(err.result.validation, console)  # type: ignore[arg-type]
        raise
    if result.validation is not None:
        render.validation(result.validation, console)
    layers = ", ".join(f"{dtype} {count}" for dtype, count in result.manifest.layer_dtypes.items())
    console.print(f"{result.path}: layers by output type: {layers} (the manifest beside it for machines)")
    return 0
