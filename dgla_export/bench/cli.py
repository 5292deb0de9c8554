"""``dgla-bench``: parity against the PyTorch FP32 reference first, then speed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dgla_export.models.registry import list_models

__all__ = ["main"]

EXIT_MISMATCH = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgla-bench", description=__doc__)
    parser.add_argument("--model", default="dgla_resnet50", choices=list_models())
    parser.add_argument("--weights", default="demo", help="'demo' or a checkpoint (.pt/.pth/.safetensors)")
    parser.add_argument("--onnx", type=Path, help="FP32 ONNX file (exported with dgla-export onnx)")
    parser.add_argument("--onnx-fp16", type=Path, help="FP16 ONNX file")
    parser.add_argument("--engine", type=Path, help="TensorRT engine from dgla-export trt (with its manifest)")
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated backend names (default: every one available; see --list-backends)",
    )
    parser.add_argument("--list-backends", action="store_true")
    parser.add_argument(
        "--device",
        action="append",
        choices=["cpu", "cuda"],
        help="torch devices (default: cpu, and cuda if present)",
    )
    parser.add_argument("--images", type=Path, help="image folder (default: scikit-image's bundled set)")
    parser.add_argument("--labels", type=Path, help="ISIC 2018 Task 3 ground-truth CSV: adds accuracy, F1, AUC ...")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed seconds per point")
    parser.add_argument("--min-runs", type=int, default=5, help="minimum timed runs per point")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timing rounds visiting every backend in turn; the minimums are split between them (default 3)",
    )
    parser.add_argument("--output", type=Path, default=Path("bench-results"), help="results folder")
    parser.add_argument("--fail-on-mismatch", action="store_true", help="exit 3 when any backend fails parity")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="measure every backend in this process (faster start; later backends inherit earlier ones' state)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from rich.console import Console
    from rich.table import Table

    from dgla_export.bench.backends import default_backends
    from dgla_export.bench.environment import machine_and_commit
    from dgla_export.bench.run import (
        BenchOptions,
        format_speedup,
        format_utilisation,
        read_labels,
        run_bench,
        write_results,
    )

    console = Console(stderr=True)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    backends = default_backends(devices, args.engine)
    if args.list_backends:
        for backend in backends:
            print(backend.name, "-", backend.unavailable() or "available")
        return 0
    if args.backends:
        wanted = args.backends.split(",")
        unknown = sorted(set(wanted) - {b.name for b in backends})
        if unknown:
            console.print(f"unknown backends {unknown}; known: {', '.join(b.name for b in backends)}")
            return 2
        backends = [b for b in backends if b.name in wanted]

    from dgla_export.data import load_images
    from dgla_export.models.cost import measure_cost
    from dgla_export.models.registry import create_model

    with console.status("loading the model"):
        model = create_model(args.model, weights=args.weights if args.weights != "random" else None)
    onnx_files = {k: v for k, v in (("fp32", args.onnx), ("fp16", args.onnx_fp16)) if v}
    labels = read_labels(args.labels, model.config.class_names) if args.labels else None
    options = BenchOptions(
        batches=tuple(int(b) for b in args.batches.split(",")),
        min_seconds=args.min_seconds,
        min_runs=args.min_runs,
        rounds=args.rounds,
        isolate=not args.in_process,
    )
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("bench", total=2 + len(backends) * options.rounds)

        def progress(message: str) -> None:
            bar.console.log(message)
            bar.advance(task)

        results = run_bench(
            model,
            backends,
            load_images(args.images),
            onnx_files,
            options=options,
            macs_per_pair=measure_cost(model).macs,
            labels=labels,
            progress=progress,
        )
    written = write_results(results, args.output, machine_and_commit())
    table = Table(title=f"dgla-bench {results['model']}")
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
    failed = []
    for b in results["backends"]:
        if "skipped" in b or "parity" not in b:
            if "failed" in b:
                failed.append(b["backend"])
            table.add_row(b["backend"], *["-"] * 9, "[dim]skipped[/]" if "skipped" in b else "[red]FAILED[/]")
            continue
        parity = b["parity"]
        if not parity["passed"]:
            failed.append(b["backend"])
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
    Console(width=max(Console().width, 140)).print(table)
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
    if failed:
        console.print(f"[red]parity failed: {', '.join(failed)}[/]")
        if args.fail_on_mismatch:
            return EXIT_MISMATCH
    print(json.dumps({"results": str(args.output / "results.json"), "parity_failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
