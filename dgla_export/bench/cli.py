"""``dgla-bench``: every runtime against the PyTorch FP32 reference, parity first, then speed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dgla_export.errors import EXIT_MISMATCH, UserError, run_command
from dgla_export.options import (
    add_common,
    add_model_args,
    add_preprocess_args,
    batch_sizes,
    positive_int,
    quiet_libraries,
)

__all__ = ["main"]

DESCRIPTION = """\
Check every runtime against the FP32 PyTorch model on real images (errors, NaN/Inf, top-1 flips,
and with --labels the ISIC 2018 metrics), then time it: p50/p90/p99 latency, pairs/s, speed-up
over eager PyTorch, memory. Results land in --output as JSON, CSV, Markdown and a plot.

Exit codes: 0 success, 2 bad input (one line says what and how to fix it), 3 a backend failed
parity (with --fail-on-mismatch) or could not run a given file, 1 a bug (with a traceback).
"""
EPILOG = """\
examples:
  dgla-bench --onnx dgla.onnx --onnx-fp16 dgla_fp16.onnx --batches 1,4 --fail-on-mismatch
  dgla-bench --onnx dgla.onnx --onnx-int8 dgla_int8.onnx --backends onnxruntime-cpu-fp32,onnxruntime-cpu-int8
  dgla-bench --onnx dgla.onnx --backends torch-eager-cpu,onnxruntime-cpu-fp32 --images lesions/
  dgla-bench --list-backends
"""
ONNX_OPTIONS = {"fp32": "--onnx", "fp16": "--onnx-fp16", "int8": "--onnx-int8"}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dgla-bench", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser, partial=False)
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
        help="backends to run (default: every one that can run here with the files given; see --list-backends)",
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
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="CSV",
        help="ISIC 2018 Task 3 ground truth (image,MEL,NV,...): adds accuracy, F1, balanced accuracy, AUC",
    )
    add_preprocess_args(parser)
    parser.add_argument(
        "--batches", type=batch_sizes, default=(1, 4), metavar="B,B,...", help="batch sizes (default 1,4)"
    )
    parser.add_argument(
        "--min-seconds",
        type=_positive_float,
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
        "--allow-label-subset",
        action="store_true",
        help="with --labels: score only the images that have a label, and ignore labels without an image "
        "(default: any mismatch is an error)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --output if it holds an earlier dgla-bench result and nothing else",
    )
    parser.add_argument("--fail-on-mismatch", action="store_true", help="exit 3 when any backend fails parity")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="measure every backend in this process (faster start; later backends inherit earlier ones' state)",
    )
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    return run_command("dgla-bench", lambda: _bench(args), debug=args.debug)


def _graph_option(backend) -> str | None:
    """The option that gives this backend its graph (ONNX Runtime backends only)."""
    return ONNX_OPTIONS.get(backend.precision) if backend.name.startswith("onnxruntime") else None


def _select(args: argparse.Namespace, backends: list, onnx_files: dict[str, Path]) -> list:
    """The backends to run: the requested ones (each must be able to run), else every runnable one."""

    def lacks(backend) -> str | None:
        needs = _graph_option(backend)
        return f"no {needs} given" if needs and backend.precision not in onnx_files else None

    if not args.backends:
        return [b for b in backends if not lacks(b)]
    wanted = args.backends.split(",")
    unknown = sorted(set(wanted) - {b.name for b in backends})
    if unknown:
        raise UserError(f"--backends: unknown {unknown}; known: {', '.join(b.name for b in backends)}")
    chosen = [b for b in backends if b.name in wanted]
    for backend in chosen:
        reason = lacks(backend) or backend.unavailable()
        if reason:
            raise UserError(f"--backends: {backend.name} cannot run here: {reason}")
    return chosen


def _bench(args: argparse.Namespace) -> int:
    import torch
    from rich.table import Table

    from dgla_export.bench.backends import default_backends
    from dgla_export.bench.environment import machine_and_commit
    from dgla_export.bench.run import (
        BENCH_COMMAND,
        METRIC_COLUMNS,
        BenchOptions,
        format_score,
        format_speedup,
        format_utilisation,
        match_labels,
        metrics_rows,
        read_labels,
        run_bench,
        write_results,
    )
    from dgla_export.console import Console

    console = Console("dgla-bench")
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    backends = default_backends(devices, args.engine)
    if args.list_backends:  # every backend, GPU ones included, with what it lacks here
        for backend in default_backends(["cpu", "cuda"], args.engine):
            print(backend.name, "-", backend.unavailable() or "available")
        return 0
    # Every input is checked against every other before the slow work starts.
    from dgla_export.export.graph import check_graph_model, graph_metadata, load_graph
    from dgla_export.io import check_output_folder
    from dgla_export.models.registry import get_config

    given = (("fp32", args.onnx), ("fp16", args.onnx_fp16), ("int8", args.onnx_int8))
    onnx_files = {k: v for k, v in given if v}
    weights = None if args.weights in ("demo", "random") else args.weights
    inputs = (*onnx_files.values(), args.engine, args.images, args.labels, weights)
    check_output_folder(args.output, args.force, command=BENCH_COMMAND, inputs=inputs)
    config = get_config(args.model)
    for precision, path in onnx_files.items():
        metadata = graph_metadata(load_graph(path))
        check_graph_model(path, metadata, config)
        found = metadata.get("precision", "fp32")
        if found != precision:
            raise UserError(f"{ONNX_OPTIONS[precision]} {path} is an {found} graph; pass it as {ONNX_OPTIONS[found]}")
    if args.engine is not None:
        from dgla_export.runtimes.tensorrt import verify_engine_file

        verify_engine_file(args.engine)
    backends = _select(args, backends, onnx_files)
    for precision, path in onnx_files.items():
        if not any(_graph_option(b) == ONNX_OPTIONS[precision] and not b.unavailable() for b in backends):
            console.print(
                f"warning: {ONNX_OPTIONS[precision]} {path} is not used by any selected backend that can run here"
            )
    engine_backend = next((b for b in backends if b.name == "tensorrt-engine"), None)
    if args.engine is not None and (engine_backend is None or engine_backend.unavailable()):
        why = engine_backend.unavailable() if engine_backend else "the tensorrt-engine backend is not selected"
        console.print(f"warning: --engine {args.engine} is not used: {why}")

    from dgla_export.data import load_images
    from dgla_export.models.cost import measure_cost
    from dgla_export.models.registry import create_model
    from dgla_export.preprocess import Preprocessing

    images = load_images(args.images, preprocessing=Preprocessing.of(config, args.preprocess, args.max_pixels))
    labels = None
    if args.labels:
        labels = read_labels(args.labels, config.class_names)
        match_labels([name for name, _ in images], labels, args.labels, allow_subset=args.allow_label_subset)
    elif args.allow_label_subset:
        raise UserError("--allow-label-subset needs --labels")
    if weights is not None:
        from dgla_export.models.weights import read_checkpoint

        read_checkpoint(weights)  # a damaged file fails here, not after the reference run
    with console.status("loading the model"):
        model = create_model(args.model, weights=args.weights if args.weights != "random" else None)
    options = BenchOptions(
        batches=args.batches,
        min_seconds=args.min_seconds,
        min_runs=args.min_runs,
        rounds=args.rounds,
        isolate=not args.in_process,
        preprocess=args.preprocess,
    )
    from rich.progress import Progress

    with Progress(console=console.err, transient=True, disable=not console.interactive) as bar:
        task = bar.add_task("bench", total=2 + len(backends) * options.rounds)

        def progress(message: str) -> None:
            console.log(message)  # every step on a terminal, one line per heartbeat in a log
            bar.advance(task)

        results = run_bench(
            model,
            backends,
            images,
            onnx_files,
            options=options,
            macs_per_pair=measure_cost(model).macs,
            labels=labels,
            progress=progress,
        )
    written = write_results(results, args.output, machine_and_commit())
    table = Table(title=f"dgla-bench {results['model']} ({args.preprocess} preprocessing)")
    for column in (
        "backend",
        "batch",
        "p50 ms",
        "p99 ms",
        "pairs/s",
        "x eager",
        "MFU",
        "logits rel",
        "probs abs",
        "flips",
        "parity",
    ):
        table.add_column(column, no_wrap=True)
    broken = [b["backend"] for b in results["backends"] if "failed" in b]
    mismatched = [b["backend"] for b in results["backends"] if "parity" in b and not b["parity"]["passed"]]
    for b in results["backends"]:
        if "skipped" in b or "failed" in b or "parity" not in b:
            table.add_row(b["backend"], *["-"] * 9, "[dim]skipped[/]" if "skipped" in b else "[red]FAILED[/]")
            continue
        parity = b["parity"]
        for t in b["timing"]:
            table.add_row(
                b["backend"],
                str(t["batch"]),
                f"{t['p50_ms']:.1f}",
                f"{t['p99_ms']:.1f}",
                f"{t['throughput_pairs_s']:.2f}",
                format_speedup(t),
                format_utilisation(t),
                f"{parity['logits']['max_rel']:.1e}",
                f"{parity['probs']['max_abs']:.1e}",
                str(len(parity["flips"])),
                "[green]pass[/]" if parity["passed"] else "[red]FAIL[/]",
            )
    from rich.console import Console as RichConsole

    wide = RichConsole(width=max(RichConsole().width, 140))
    wide.print(table)
    scores = metrics_rows(results)
    if scores:  # the summary; every class's sensitivity is in results.md, .csv and .json
        first = results["class_names"][0]
        metrics = Table(title=f"scores against {args.labels.name} ({scores[0]['images']} images)")
        for column in ("backend", "accuracy", "balanced acc.", "weighted F1", "macro AUC", f"{first} sens."):
            metrics.add_column(column, no_wrap=True)
        for score in scores:
            figures = [format_score(score[k]) for k in (*METRIC_COLUMNS, f"sensitivity_{first}")]
            metrics.add_row(score["backend"], *figures)
        wide.print(metrics)
    for b in results["backends"]:
        for outcome in ("skipped", "failed"):
            if outcome in b:
                console.print(f"{outcome} {b['backend']}: {b[outcome]}")
    for b in results["backends"]:
        for flip in b.get("parity", {}).get("flips", []):
            console.print(
                f"[yellow]flip[/] {b['backend']}: {flip['image']} {flip['reference_class']} -> "
                f"{flip['actual_class']} (margins {flip['reference_margin']:.3f} -> "
                f"{flip['actual_margin']:.3f})"
            )
    console.print("results: " + ", ".join(str(p) for p in written))
    print(json.dumps({"results": str(args.output / "results.json"), "parity_failed": mismatched, "failed": broken}))
    if broken:
        console.print(f"[red]could not run: {', '.join(broken)}[/] (a requested backend that fails is a failure)")
        return EXIT_MISMATCH
    if mismatched:
        console.print(f"[red]parity failed: {', '.join(mismatched)}[/]")
        if args.fail_on_mismatch:
            return EXIT_MISMATCH
    return 0


if __name__ == "__main__":
    sys.exit(main())
