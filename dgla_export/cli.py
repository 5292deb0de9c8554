"""``dgla-export``: info, onnx, trt, triton, validate. Heavy backends are imported inside the commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dgla_export.models.registry import list_models

__all__ = ["main"]

EXIT_MISMATCH = 3


def _console():  # rich is light, but keep `--help` free of it
    from rich.console import Console

    return Console(stderr=True)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="dgla_resnet50", choices=list_models(), help="registered model name")
    parser.add_argument(
        "--weights",
        default="demo",
        help="'demo' (deterministic untrained demo weights), 'random', or a .pt/.pth/.safetensors checkpoint",
    )
    parser.add_argument(
        "--partial", action="store_true", help="load only the checkpoint tensors that match (report the rest)"
    )


def _add_validation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, help="folder of images (default: scikit-image's bundled set)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime provider")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 1, 3 and the maximum)")
    parser.add_argument("--report", type=Path, help="write the validation report as JSON here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgla-export", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameters and MACs per stage, input/output contract")
    info.add_argument("--model", default="dgla_resnet50", choices=list_models())
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")

    onnx_cmd = sub.add_parser("onnx", help="export an ONNX graph, then validate it against PyTorch")
    _add_model_args(onnx_cmd)
    onnx_cmd.add_argument("--output", type=Path, required=True, help="the .onnx file to write")
    onnx_cmd.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    onnx_cmd.add_argument("--opset", type=int, default=18)
    onnx_cmd.add_argument("--batch", default="1:32", help="MIN:MAX of the dynamic batch (default 1:32)")
    onnx_cmd.add_argument("--force", action="store_true", help="overwrite an existing output")
    onnx_cmd.add_argument("--no-validate", action="store_true", help="skip the validation run")
    _add_validation_args(onnx_cmd)

    trt_cmd = sub.add_parser("trt", help="build a TensorRT engine (+ manifest) from an exported ONNX graph")
    trt_cmd.add_argument("--onnx", type=Path, required=True, help="ONNX file from `dgla-export onnx`")
    trt_cmd.add_argument("--output", type=Path, required=True, help="engine file to write (.plan)")
    trt_cmd.add_argument("--precision", default="fp16", choices=["fp16", "fp32"], help="must match the ONNX graph")
    trt_cmd.add_argument(
        "--target", default="h100", help="build defaults from dgla_export/export/engine_profiles.json (default h100)"
    )
    trt_cmd.add_argument("--batch", help="MIN:OPT:MAX batch profile (default: the target's)")
    trt_cmd.add_argument("--workspace", help="workspace pool limit, e.g. 8GiB (default: the target's)")
    trt_cmd.add_argument("--timing-cache", type=Path, help="read and update this timing cache (same GPU/TensorRT only)")
    trt_cmd.add_argument("--hardware-compatible", action="store_true", help="run on Ampere and newer GPUs (slower)")
    trt_cmd.add_argument("--version-compatible", action="store_true", help="run on later TensorRT versions (slower)")
    trt_cmd.add_argument("--force", action="store_true")

    triton = sub.add_parser("triton", help="write a Triton model repository (ONNX, engine, preprocessing, ensemble)")
    triton.add_argument("--onnx", type=Path, required=True, help="ONNX file from `dgla-export onnx`")
    triton.add_argument("--engine", type=Path, help="TensorRT engine from `dgla-export trt` (adds dgla_trt)")
    triton.add_argument("--output", type=Path, required=True, help="repository folder to write")
    triton.add_argument("--max-batch-size", type=int, help="default: the graph's / engine's maximum batch")
    triton.add_argument("--preferred-batch-sizes", default="8,16", help="dynamic batching targets (default 8,16)")
    triton.add_argument("--max-queue-delay-us", type=int, default=200)
    triton.add_argument("--instances", type=int, default=1, help="instances per GPU model")
    triton.add_argument("--ort-tensorrt-fp16", action="store_true", help="ONNX Runtime's TensorRT accelerator, FP16")
    triton.add_argument("--force", action="store_true")

    validate = sub.add_parser("validate", help="validate an ONNX file against the PyTorch model")
    _add_model_args(validate)
    validate.add_argument("onnx", type=Path)
    _add_validation_args(validate)
    return parser


def _load_model(args: argparse.Namespace):
    from dgla_export.models import weights as weights_module
    from dgla_export.models.registry import create_model

    if args.weights == "random":
        return create_model(args.model)
    if args.weights == "demo":
        return create_model(args.model, weights="demo")
    model = create_model(args.model)
    weights_module.load_weights(model, weights_module.read_checkpoint(args.weights), partial=args.partial)
    return model


def _checkpoint_digest(args: argparse.Namespace, model) -> str:
    from dgla_export.io import sha256_file
    from dgla_export.models.weights import state_dict_sha256

    if args.weights in ("demo", "random"):
        return f"state_dict:{state_dict_sha256(model)}"
    return sha256_file(args.weights)


def _cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from dgla_export.models.config import SPEC_VERSION
    from dgla_export.models.cost import measure_cost
    from dgla_export.models.registry import create_model

    model = create_model(args.model)
    cost = measure_cost(model)
    config = model.config
    record = {
        "model": config.name,
        "spec_version": SPEC_VERSION,
        "inputs": {k: list(v) for k, v in config.input_shapes("B").items()},
        "outputs": {"logits": ["B", config.num_classes], "probs": ["B", config.num_classes]},
        "classes": list(config.class_names),
        "cost": cost.to_dict(),
    }
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    table = Table(title=f"{config.name} ({SPEC_VERSION}), per image pair")
    for column in ("stage", "params", "GMACs"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage in cost.stages:
        table.add_row(stage.name, f"{stage.params:,}", f"{stage.macs / 1e9:.3f}")
    table.add_row("total", f"{cost.params:,}", f"{cost.macs / 1e9:.3f}", style="bold")
    from rich.console import Console

    console = Console()
    console.print(table)
    console.print("MACs = multiply-accumulates of conv/matmul/linear (1 MAC = 2 FLOPs)")
    for name, shape in record["inputs"].items():
        console.print(f"input  {name}: {tuple(shape)} float32, RGB, ImageNet-normalised")
    console.print(f"output logits, probs: (B, {config.num_classes}) float32; classes {', '.join(config.class_names)}")
    return 0


def _batches(spec: str | None, max_batch: int) -> list[int]:
    if spec:
        return [int(b) for b in spec.split(",")]
    return sorted({1, min(3, max_batch), max_batch})


def _print_validation(report, console) -> None:
    from rich.table import Table

    table = Table(title=f"{report.runtime} ({report.precision}) vs PyTorch FP32, {len(report.images)} images")
    for column in (
        "batch",
        "logits max rel",
        "logits p99 abs",
        "probs max abs",
        "NaN/Inf",
        "top-1",
        "verdict",
    ):
        table.add_column(column)
    for check in report.checks:
        c = check.comparison
        table.add_row(
            str(check.batch),
            f"{c.logits.max_rel:.2e}",
            f"{c.logits.p99_abs:.2e}",
            f"{c.probs.max_abs:.2e}",
            f"{c.logits.nan + c.probs.nan}/{c.logits.inf + c.probs.inf}",
            f"{c.top1_agreement:.0%}",
            "[green]pass[/]" if c.passed else "[red]FAIL: " + "; ".join(c.failures) + "[/]",
        )
    console.print(table)
    console.print(f"same image across batch positions: max logit spread {report.position_spread:.2e}")
    for check in report.checks:
        for flip in check.comparison.flips:
            console.print(
                f"[yellow]flip[/] batch {check.batch}: {flip.image} "
                f"{flip.reference_class} -> {flip.actual_class} "
                f"(margins {flip.reference_margin:.3f} -> {flip.actual_margin:.3f})"
            )


def _validate(args: argparse.Namespace, model, onnx_path: Path, console) -> int:
    import onnx
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from dgla_export.data import load_images
    from dgla_export.runtimes.onnxruntime import create_session
    from dgla_export.validate import validate_runner

    metadata = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    precision = metadata.get("precision", "fp32")
    max_batch = int(metadata.get("batch_range", "1:8").split(":")[1])
    session = create_session(onnx_path, args.device)
    with OnnxrtRunner(session) as runner:
        report = validate_runner(
            runner.infer,
            model,
            load_images(args.images),
            runtime=f"onnxruntime-{args.device}",
            precision=precision,
            batches=_batches(args.batches, max_batch),
            progress=lambda message: console.log(message),
        )
    _print_validation(report, console)
    if args.report:
        report.write_json(args.report)
        console.print(f"report: {args.report}")
    if not report.passed:
        console.print("[red]validation FAILED[/]")
        return EXIT_MISMATCH
    console.print("[green]validation passed[/]")
    return 0


def _cmd_onnx(args: argparse.Namespace) -> int:
    from dgla_export.export.onnx_export import ExportOptions, export_onnx
    from dgla_export.io import check_output

    console = _console()
    check_output(args.output, args.force)  # fail before a minute of work, not after
    low, high = (int(v) for v in args.batch.split(":"))
    options = ExportOptions(opset=args.opset, precision=args.precision, min_batch=low, max_batch=high)
    with console.status("loading the model (first demo run calibrates BatchNorm, ~20 s for the full model)"):
        model = _load_model(args)
    with console.status("exporting (about a minute for the full model on 2 cores)"):
        report = export_onnx(
            model,
            args.output,
            options=options,
            checkpoint_sha256=_checkpoint_digest(args, model),
            force=args.force,
            progress=lambda message: console.log(message),
        )
    ops = ", ".join(f"{op} {n}" for op, n in report.op_counts.items())
    console.print(f"{args.output}: opset {report.opset}, IR {report.ir_version}, {report.node_count} nodes ({ops})")
    if args.no_validate:
        return 0
    return _validate(args, model, args.output, console)


def _cmd_trt(args: argparse.Namespace) -> int:
    from dgla_export.export.manifest import BatchProfile, load_build_profiles, parse_size
    from dgla_export.io import check_output

    profiles = load_build_profiles()
    if args.target not in profiles:
        raise ValueError(f"unknown --target {args.target!r}; known: {', '.join(profiles)}")
    target = profiles[args.target]
    profile = BatchProfile.parse(args.batch or target["batch"])
    workspace = parse_size(args.workspace or target["workspace"])
    check_output(args.output, args.force)
    try:
        import tensorrt  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            "TensorRT is not installed here: install NVIDIA's tensorrt wheel (10.x or 11.x) on the GPU machine"
        ) from err
    from dgla_export.export.tensorrt_build import build_engine

    console = _console()
    manifest = build_engine(
        args.onnx,
        args.output,
        precision=args.precision,
        profile=profile,
        workspace=workspace,
        timing_cache=args.timing_cache,
        hardware_compatible=args.hardware_compatible,
        version_compatible=args.version_compatible,
        force=args.force,
        progress=lambda m: console.log(m),
    )
    console.print(json.dumps({"engine": str(args.output), "layer_dtypes": dict(manifest.layer_dtypes)}))
    return 0


def _cmd_triton(args: argparse.Namespace) -> int:
    from dgla_export.triton.repository import TritonOptions, write_repository

    options = TritonOptions(
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=tuple(int(b) for b in args.preferred_batch_sizes.split(",")),
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        ort_tensorrt_fp16=args.ort_tensorrt_fp16,
    )
    texts = write_repository(args.onnx, args.output, engine=args.engine, options=options, force=args.force)
    print(f"wrote {args.output}: {', '.join(sorted(texts))} (configs parsed with Triton's schema)")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    console = _console()
    with console.status("loading the model"):
        model = _load_model(args)
    return _validate(args, model, args.onnx, console)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        for noisy in ("torch.onnx", "torch._dynamo", "torch.export"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    commands = {"info": _cmd_info, "onnx": _cmd_onnx, "trt": _cmd_trt, "triton": _cmd_triton, "validate": _cmd_validate}
    try:
        return commands[args.command](args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as err:
        print(f"dgla-export {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
