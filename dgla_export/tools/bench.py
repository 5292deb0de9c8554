"""Check every runtime against the FP32 PyTorch model on real images (errors, NaN/Inf, top-1 flips,
and with --labels the ISIC 2018 metrics), then time it: p50/p90/p99 latency, pairs/s, speed-up
over eager PyTorch, memory. Results land in --output as JSON, CSV, Markdown and a plot.

Without --backends, only what makes sense on this machine runs: eager and channels_last PyTorch
and ONNX Runtime with the graphs given (on a GPU also TF32, autocast, FP16 + channels_last with and
without CUDA-graph replay, the CUDA and TensorRT providers and the engine; eager on a GPU is strict
FP32); BF16 autocast on a CPU without BF16 units (emulated: minutes a round) and torch.compile
(minutes of compilation) run only when named. PyTorch variants combine with '+'. Before the runs
start it says what will run and roughly how long; --quick gives a first look in a few minutes.

A backend that fails parity is reported as failed, with its errors, and is neither timed (unless
--time-failed, then marked) nor ranked; the run then exits 3.

Exit codes: 0 success, 2 bad input (one line says what and how to fix it), 3 a backend failed
parity or could not run a given file, 1 a bug (with a traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from dgla_export.errors import EXIT_MISMATCH, run_command
from dgla_export.tools.args import (
    add_acceptance_args,
    add_common,
    add_model_args,
    add_preprocess_args,
    batch_sizes,
    image_options,
    positive_float,
    positive_int,
    weight_options,
)

__all__ = ["build_parser", "main"]

EPILOG = """\
examples:
  dgla-bench --onnx dgla.onnx --onnx-fp16 dgla_fp16.onnx --batches 1,4 --fail-on-mismatch
  dgla-bench --onnx dgla.onnx --quick
  dgla-bench --onnx dgla.onnx --onnx-int8 dgla_int8.onnx --backends onnxruntime-cpu-fp32,onnxruntime-cpu-int8
  dgla-bench --onnx dgla.onnx --backends torch-eager-cpu,onnxruntime-cpu-fp32 --images lesions/
  dgla-bench --list-backends
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dgla-bench", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser, partial=False, of_artefact=True)
    parser.add_argument("--onnx", type=Path, metavar="FILE", help="FP32 graph from `dgla-export onnx`")
    parser.add_argument(
        "--onnx-fp16", type=Path, metavar="FILE", help="FP16 graph from `dgla-export onnx --precision fp16`"
    )
    parser.add_argument(
        "--onnx-int8", type=Path, metavar="FILE", help="INT8 Q/DQ graph from `dgla-export onnx --precision int8`"
    )
    parser.add_argument(
        "--engine", type=Path, metavar="FILE", help="TensorRT engine from `dgla-export trt` (with its manifest)"
    )
    parser.add_argument(
        "--backends",
        metavar="NAME,NAME,...",
        help="backends to run (default: those that make sense here with the files given; see --list-backends)",
    )
    parser.add_argument("--list-backends", action="store_true", help="list the backends, and why one cannot run here")
    parser.add_argument(
        "--device",
        action="append",
        choices=["cpu", "cuda"],
        help="devices for the torch backends (repeatable; default: cpu, and cuda if present)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        metavar="FOLDER",
        help="image folder (default: scikit-image's bundled photos, which are not dermoscopy)",
    )
    add_acceptance_args(parser)
    add_preprocess_args(parser)
    parser.add_argument(
        "--batches", type=batch_sizes, default=(1, 4), metavar="B,B,...", help="batch sizes (default 1,4)"
    )
    parser.add_argument(
        "--min-seconds",
        type=positive_float,
        default=3.0,
        metavar="S",
        help="minimum timed seconds per batch size (default 3)",
    )
    parser.add_argument(
        "--min-runs", type=positive_int, default=5, metavar="N", help="minimum timed runs per batch size (default 5)"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        metavar="N",
        help="timing rounds visiting every backend in turn; the minimums are split between them (default 3)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("bench-results"),
        metavar="FOLDER",
        help="results folder (default bench-results)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --output if it holds an earlier dgla-bench result and nothing else",
    )
    parser.add_argument(
        "--heatmaps",
        action="store_true",
        help="with a graph exported with --explain: write heatmaps/KEY.png in --output, the reference's Grad-CAM "
        "and each runtime's map side by side (KEY: the photo's row in predictions/*.csv, its file name without the "
        "extension, or with it where two photos share one)",
    )
    parser.add_argument(
        "--fail-on-mismatch",
        action="store_true",
        help="exit 3 when any backend fails parity (the default; kept for scripts that pass it)",
    )
    parser.add_argument(
        "--time-failed",
        action="store_true",
        help="time a backend that failed parity too, marked as failed in the tables and the plot (never ranked); "
        "the run still exits 3",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a first look in a few minutes: one round, batch 1, one second of timing per runtime",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="measure every backend in this process (faster start; later backends inherit earlier ones' state)",
    )
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dgla_export.console import quiet_libraries

    quiet_libraries(args.verbose)
    with warnings.catch_warnings():
        if not args.verbose:  # third-party warnings never reach the user (child processes filter their own)
            warnings.simplefilter("ignore")
        return run_command("dgla-bench", lambda: _bench(args), debug=args.debug)


def _bench(args: argparse.Namespace) -> int:
    import torch

    from dgla_export.api import bench
    from dgla_export.benchmarking.catalogue import catalogue
    from dgla_export.benchmarking.run import QUICK, BenchOptions
    from dgla_export.console import Console, format_duration
    from dgla_export.tools import render

    if args.list_backends:  # every backend, GPU ones included, with what it lacks here
        given = {"fp32": args.onnx, "fp16": args.onnx_fp16, "int8": args.onnx_int8}
        onnx_files = {k: Path(v) for k, v in given.items() if v is not None}
        for backend in catalogue(["cpu", "cuda"], args.engine):
            reason = backend.unavailable(onnx_files, args.engine)
            default = "" if backend.default else " (runs only when named in --backends)"
            print(backend.name, "-", (reason or "available") + default)
        return 0
    console = Console("dgla-bench")
    options = BenchOptions(
        batches=args.batches,
        min_seconds=args.min_seconds,
        min_runs=args.min_runs,
        rounds=args.rounds,
        isolate=not args.in_process,
        time_failed=args.time_failed,
    )
    if args.quick:
        options = dataclasses.replace(options, **QUICK)

    def plan(names: list[str], seconds: float) -> None:
        console.print(
            f"dgla-bench: will run {', '.join(names)}: {options.rounds} round(s), batch "
            f"{','.join(map(str, options.batches))}, about {format_duration(seconds)} (from the reference and a "
            "fresh process's start, measured here; revised after each runtime's first visit; writing the results "
            "comes after)"
        )

    with console.status("benchmarking"):
        result = bench(
            args.onnx,
            onnx_fp16=args.onnx_fp16,
            onnx_int8=args.onnx_int8,
            engine=args.engine,
            model=args.model,
            weights=weight_options(args),
            backends=args.backends.split(",") if args.backends else None,
            devices=args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]),
            images=image_options(args),
            options=options,
            output=args.output,
            heatmaps=args.heatmaps,
            force=args.force,
            progress=console.log,
            plan=plan,
            warn=lambda message: console.print(f"warning: {message}"),
        )
    render.bench_tables(result, args.preprocess, args.labels.name if args.labels else None, console)
    console.print(f"results: {args.output} (results.json for machines)")
    if result.failed:
        console.print(
            f"could not run: {', '.join(result.failed)} (a requested backend that fails is a failure)", style="red"
        )
        return EXIT_MISMATCH
    if result.parity_failed:
        console.print(f"parity failed: {', '.join(result.parity_failed)} (not timed unless --time-failed)", style="red")
        return EXIT_MISMATCH
    return 0


if __name__ == "__main__":
    sys.exit(main())
