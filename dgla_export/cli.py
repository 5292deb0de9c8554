"""``dgla-export``: from a PyTorch checkpoint to checked deployment artefacts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dgla_export.console import Console
from dgla_export.errors import EXIT_MISMATCH, UserError, run_command
from dgla_export.options import (
    add_common,
    add_model_args,
    add_model_name,
    add_preprocess_args,
    batch_range,
    batch_sizes,
    positive_int,
    quiet_libraries,
)

__all__ = ["main"]

DESCRIPTION = """\
Export DGLA-ResNet50 (or another registered model) from a PyTorch checkpoint to a two-input ONNX
graph, check it against the PyTorch model on real images, build TensorRT engines from it, and
write a Triton model repository.

Exit codes: 0 success, 2 bad input (one line says what and how to fix it), 3 a validation or
tolerance failure, 1 a bug (with a traceback; please report it).
"""
EPILOG = """\
examples:
  dgla-export info
  dgla-export onnx --output dgla.onnx                       demo weights, FP32, validated
  dgla-export onnx --weights ckpt.pt --precision fp16 --output dgla_fp16.onnx
  dgla-export onnx --weights ckpt.pt --precision int8 --calibration-images calib/ --output dgla_int8.onnx
  dgla-export validate dgla.onnx --weights ckpt.pt --images my_dermoscopy/
  dgla-export trt --onnx dgla_fp16.onnx --output dgla_fp16.plan       (GPU + TensorRT)
  dgla-export triton --onnx dgla_fp16.onnx --output triton-repo
"""


def _add_validation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        type=Path,
        metavar="FOLDER",
        help="folder of images to validate on (PNG, JPEG, TIFF, BMP; default: scikit-image's bundled photos, "
        "which are not dermoscopy)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "tensorrt"],
        help="ONNX Runtime provider to validate on (default cpu; cuda and tensorrt need a GPU)",
    )
    parser.add_argument(
        "--batches",
        type=batch_sizes,
        metavar="B,B,...",
        help="batch sizes to check, e.g. 1,4,8 (default: 1, 3 and the graph's maximum)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the validation report as JSON")
    add_preprocess_args(parser)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="dgla-export", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="parameters and MACs per stage, and the input/output contract",
        description="Parameters and multiply-accumulates per stage, and the graph's inputs and outputs.",
    )
    add_model_name(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_common(info)

    onnx_cmd = sub.add_parser(
        "onnx",
        help="export an ONNX graph, then validate it against PyTorch",
        description="Export the model to one self-contained ONNX file with a dynamic batch, then validate it with "
        "ONNX Runtime against the FP32 PyTorch model on real images. The graph reaches --output only when "
        "validation passes; a graph that fails is kept beside it as NAME.failed.onnx for inspection (exit 3).",
    )
    add_model_args(onnx_cmd)
    onnx_cmd.add_argument("--output", type=Path, required=True, metavar="FILE", help="the .onnx file to write")
    onnx_cmd.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp16", "int8"],
        help="fp32 (default); fp16 with FP32 attention islands, for TensorRT; int8: Q/DQ from real-image "
        "calibration, the most sensitive layers kept in FP32 until the accuracy target holds (minutes)",
    )
    onnx_cmd.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    onnx_cmd.add_argument(
        "--batch",
        type=batch_range,
        default=(1, 32),
        metavar="MIN:MAX",
        help="range of the dynamic batch dimension (default 1:32)",
    )
    onnx_cmd.add_argument("--force", action="store_true", help="overwrite --output (and --report) if they exist")
    onnx_cmd.add_argument("--no-validate", action="store_true", help="write the graph without validating it")
    _add_validation_args(onnx_cmd)
    int8 = onnx_cmd.add_argument_group("int8 (with --precision int8)")
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
        default="minmax",
        choices=["minmax", "percentile", "entropy"],
        help="how activation ranges are chosen from the calibration images (default minmax)",
    )
    int8.add_argument(
        "--int8-target",
        default="cpu",
        choices=["cpu", "tensorrt"],
        help="cpu: unsigned activations, fastest in ONNX Runtime on x86 (default); tensorrt: signed symmetric "
        "activations, the only INT8 form TensorRT builds",
    )
    int8.add_argument(
        "--accuracy-target",
        type=_probability,
        metavar="P",
        help="largest probability error vs PyTorch FP32 allowed on the calibration and validation images "
        "(default: the model config's int8 tolerance, 0.05); no top-1 flip is allowed where FP32's margin is >= 0.05",
    )
    add_common(onnx_cmd)

    trt_cmd = sub.add_parser(
        "trt",
        help="build a TensorRT engine (and its manifest) from an exported graph",
        description="Build a strongly typed TensorRT engine from a graph of `dgla-export onnx`, on the GPU it will "
        "run on, with a JSON manifest beside it (versions, GPU, profile, layer precisions). Needs NVIDIA's "
        "tensorrt wheel (10.x or 11.x) and a CUDA GPU.",
    )
    trt_cmd.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="graph from `dgla-export onnx`")
    trt_cmd.add_argument("--output", type=Path, required=True, metavar="FILE", help="engine file to write (.plan)")
    trt_cmd.add_argument(
        "--precision",
        default="fp16",
        choices=["fp16", "fp32", "int8"],
        help="must match the graph's precision (default fp16); int8 needs a graph of --int8-target tensorrt",
    )
    trt_cmd.add_argument(
        "--target",
        default="h100",
        metavar="GPU",
        help="build defaults from dgla_export/export/engine_profiles.json (default h100)",
    )
    trt_cmd.add_argument("--batch", metavar="MIN:OPT:MAX", help="batch profile, e.g. 1:8:32 (default: the target's)")
    trt_cmd.add_argument("--workspace", metavar="SIZE", help="workspace limit, e.g. 8GiB (default: the target's)")
    trt_cmd.add_argument(
        "--timing-cache",
        type=Path,
        metavar="FILE",
        help="read and update this timing cache (valid for the same GPU and TensorRT only)",
    )
    trt_cmd.add_argument("--hardware-compatible", action="store_true", help="run on Ampere and newer GPUs (slower)")
    trt_cmd.add_argument("--version-compatible", action="store_true", help="run on later TensorRT versions (slower)")
    trt_cmd.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    add_common(trt_cmd)

    triton = sub.add_parser(
        "triton",
        help="write a Triton model repository (ONNX, engine, preprocessing, ensemble)",
        description="Write a Triton Inference Server repository: dgla_onnx (ONNX Runtime), dgla_trt (with "
        "--engine), dgla_preprocess (image bytes -> tensors, numpy + Pillow) and dgla (the ensemble: image "
        "bytes in, probabilities out). Serve it with `dgla-serve` or the official container.",
    )
    triton.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="graph from `dgla-export onnx`")
    triton.add_argument("--engine", type=Path, metavar="FILE", help="engine from `dgla-export trt` (adds dgla_trt)")
    triton.add_argument("--output", type=Path, required=True, metavar="FOLDER", help="repository folder to write")
    triton.add_argument(
        "--max-batch-size",
        type=positive_int,
        metavar="N",
        help="largest batch Triton forms (default: the graph's, or the engine's, maximum)",
    )
    triton.add_argument(
        "--preferred-batch-sizes",
        type=batch_sizes,
        default=(8, 16),
        metavar="B,B,...",
        help="batch sizes the dynamic batcher aims for (default 8,16)",
    )
    triton.add_argument(
        "--max-queue-delay-us",
        type=positive_int,
        default=200,
        metavar="US",
        help="longest wait for a fuller batch, in microseconds (default 200)",
    )
    triton.add_argument(
        "--instances",
        type=positive_int,
        default=1,
        metavar="N",
        help="instances of each runtime model per GPU (default 1)",
    )
    triton.add_argument(
        "--ort-tensorrt-fp16",
        action="store_true",
        help="let ONNX Runtime use its TensorRT accelerator for dgla_onnx: FP16, or INT8 for an INT8 graph",
    )
    triton.add_argument(
        "--force",
        action="store_true",
        help="replace --output if it is an earlier repository of this command holding nothing else",
    )
    add_preprocess_args(triton, dali=True)
    add_common(triton)

    validate = sub.add_parser(
        "validate",
        help="validate an ONNX graph against the PyTorch model",
        description="Run an exported graph with ONNX Runtime and compare it with the FP32 PyTorch model on real "
        "images: errors, NaN/Inf, top-1 flips with margins. Exit 3 when a tolerance fails.",
    )
    validate.add_argument("onnx", type=Path, metavar="ONNX", help="graph from `dgla-export onnx`")
    add_model_args(validate)
    _add_validation_args(validate)
    validate.add_argument("--force", action="store_true", help="overwrite --report if it exists")
    add_common(validate)
    return parser


def _load_model(args: argparse.Namespace):
    from dgla_export.models import weights as weights_module
    from dgla_export.models.registry import create_model

    if args.weights == "random":
        return create_model(args.model)
    if args.weights == "demo":
        return create_model(args.model, weights="demo")
    state = weights_module.read_checkpoint(args.weights)  # before building the model: a bad file fails fast
    model = create_model(args.model)
    report = weights_module.load_weights(model, state, partial=args.partial)
    if report.skipped and args.verbose:
        print(report.describe(limit=None), file=sys.stderr)
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
    from rich.console import Console as RichConsole

    console = RichConsole()  # the result, on stdout
    console.print(table)
    console.print("MACs = multiply-accumulates of conv/matmul/linear (1 MAC = 2 FLOPs)")
    for name, shape in record["inputs"].items():
        console.print(f"input  {name}: {tuple(shape)} float32, RGB, ImageNet-normalised")
    console.print(f"output logits, probs: (B, {config.num_classes}) float32; classes {', '.join(config.class_names)}")
    return 0


def _batches(wanted: Sequence[int] | None, max_batch: int) -> list[int]:
    if wanted:
        too_large = [b for b in wanted if b > max_batch]
        if too_large:
            raise UserError(f"--batches {too_large} exceed the graph's maximum batch {max_batch}; give smaller sizes")
        return list(wanted)
    return sorted({1, min(3, max_batch), max_batch})


def _print_validation(report, console) -> None:
    from rich.table import Table

    images = f"{len(report.images)} images ({report.preprocessing} preprocessing)"
    table = Table(title=f"{report.runtime} ({report.precision}) vs PyTorch FP32, {images}")
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


def _int8_tolerance(args: argparse.Namespace, model):
    """The config's int8 tolerance, with --accuracy-target as its probability bound."""
    import dataclasses

    tolerance = model.config.tolerances["int8"]
    accuracy = getattr(args, "accuracy_target", None)
    return dataclasses.replace(tolerance, probs_abs=accuracy) if accuracy else tolerance


def _validate(
    args: argparse.Namespace,
    model,
    onnx_path: Path,
    metadata: dict[str, str],
    images,
    console: Console,
    extra_report: dict | None = None,
):
    """Validation report of ``onnx_path`` (whose metadata the caller has read) against ``model``;
    ``extra_report`` is added to the --report JSON."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from dgla_export.runtimes.onnxruntime import create_session
    from dgla_export.validate import validate_runner

    precision = metadata.get("precision", "fp32")
    batches = _batches(args.batches, int(metadata.get("batch_range", "1:8").split(":")[1]))
    session = create_session(onnx_path, args.device)
    with OnnxrtRunner(session) as runner, console.status("validating against PyTorch FP32"):
        report = validate_runner(
            runner.infer,
            model,
            images,
            runtime=f"onnxruntime-{args.device}",
            precision=precision,
            batches=batches,
            tolerance=_int8_tolerance(args, model) if precision == "int8" else None,
            preprocessing=args.preprocess,
            progress=console.log,
        )
    _print_validation(report, console)
    if args.report:
        report.write_json(args.report, extra_report)
        console.print(f"report: {args.report}")
    return report


def _preprocessing(args: argparse.Namespace):
    """The preprocessing the options ask for, for the model --model names."""
    from dgla_export.models.registry import get_config
    from dgla_export.preprocess import Preprocessing

    return Preprocessing.of(get_config(args.model), args.preprocess, args.max_pixels)


def _calibration_images(args: argparse.Namespace, console: Console) -> list:
    from dgla_export.data import load_images

    if args.calibration_images is None:
        console.print(
            "[yellow]warning[/]: calibrating INT8 on scikit-image's bundled photos, which are not dermoscopy; "
            "for a deployment pass --calibration-images with a few hundred images of its domain"
        )
    return load_images(args.calibration_images, preprocessing=_preprocessing(args))[: args.calibration_count]


def _quantize(args: argparse.Namespace, model, fp32_graph: Path, output: Path, images, console: Console):
    from rich.table import Table

    from dgla_export.quantize import QuantizationOptions, quantize_onnx

    options = QuantizationOptions(
        target=args.int8_target,
        method=args.calibration_method,
        tolerance=_int8_tolerance(args, model),
        preprocess=args.preprocess,
    )
    with console.status("INT8: calibration, per-unit sensitivity, mixed-precision search (minutes)"):
        report = quantize_onnx(fp32_graph, output, model.config, images, options=options, progress=console.log)
    table = Table(title=f"INT8 sensitivity ({len(report.sensitivity)} units, logits RMS error when only it is INT8)")
    for column in ("unit", "error", "precision"):
        table.add_column(column)
    for unit, error in report.sensitivity.items():
        table.add_row(unit, f"{error:.4f}", "[yellow]fp32 (kept out)[/]" if unit in report.kept_out else "int8")
    console.print(table)
    check = report.calibration_check
    console.print(
        f"INT8 ({report.target}): {len(report.kept_out)} of {len(report.sensitivity)} units kept in FP32; "
        f"{report.int8_mac_share:.1%} of MACs in INT8 ({report.quantized_nodes} Conv/Gemm nodes); on the "
        f"{len(report.calibration_images)} calibration images: probs max abs error {check['probs_max_abs']:.3g}, "
        f"{len(check['flips'])} top-1 flips"
    )
    return report


def _cmd_onnx(args: argparse.Namespace) -> int:
    import tempfile

    import onnx

    from dgla_export.data import load_images
    from dgla_export.export.onnx_export import ExportOptions, check_contract, export_onnx
    from dgla_export.io import check_output

    console = Console("dgla-export")
    # Inputs first: a bad folder, checkpoint or output path must fail before a minute of export.
    check_output(args.output, args.force)
    if args.report:
        check_output(args.report, args.force)
    images = None if args.no_validate else load_images(args.images, preprocessing=_preprocessing(args))
    int8 = args.precision == "int8"
    if int8:
        from dgla_export.quantize import require_calibration_cache

        require_calibration_cache()
        calibration = _calibration_images(args, console)
    elif args.calibration_images or args.calibration_count or args.accuracy_target:
        raise UserError("--calibration-images, --calibration-count and --accuracy-target need --precision int8")
    low, high = args.batch
    if args.batches:
        _batches(args.batches, high)
    traced = "fp32" if int8 else args.precision  # INT8 is written from the FP32 graph
    options = ExportOptions(opset=args.opset, precision=traced, min_batch=low, max_batch=high)
    with console.status("loading the model (the first demo-weight run calibrates BatchNorm: ~20 s, full model)"):
        model = _load_model(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{args.output.name}.", dir=args.output.parent) as staging:
        staged = Path(staging) / args.output.name
        exported = staged.with_suffix(".fp32.onnx") if int8 else staged
        with console.status("exporting (about a minute for the full model on 2 cores)"):
            report = export_onnx(
                model,
                exported,
                options=options,
                checkpoint_sha256=_checkpoint_digest(args, model),
                progress=console.log,
            )
        extra_report = None
        if int8:
            from dgla_export.quantize import QuantizationError

            try:
                quantization = _quantize(args, model, exported, staged, calibration, console)
            except QuantizationError as err:
                console.print(f"[red]INT8 FAILED[/]: {err}; nothing written to {args.output}")
                return EXIT_MISMATCH
            extra_report = {"quantization": quantization.to_dict()}
            report = check_contract(onnx.load(str(staged)), model.config)
        ops = ", ".join(f"{op} {n}" for op, n in report.op_counts.items())
        summary = f"opset {report.opset}, IR {report.ir_version}, {report.node_count} nodes ({ops})"
        if args.no_validate:
            os.replace(staged, args.output)
            console.print(f"{args.output}: {summary} (not validated)")
            return 0
        validation = _validate(args, model, staged, report.metadata, images, console, extra_report)
        if not validation.passed:
            rejected = args.output.with_name(f"{args.output.stem}.failed.onnx")
            os.replace(staged, rejected)
            console.print(
                f"[red]validation FAILED[/]: the graph is kept as {rejected} for inspection, not at {args.output}"
            )
            return EXIT_MISMATCH
        os.replace(staged, args.output)
    console.print(f"{args.output}: {summary}")
    console.print("[green]validation passed[/]")
    return 0


def _cmd_trt(args: argparse.Namespace) -> int:
    from dgla_export.export.graph import graph_metadata, load_graph
    from dgla_export.export.manifest import BatchProfile, load_build_profiles, manifest_path, parse_size
    from dgla_export.export.tensorrt_build import build_engine, check_engine_graph
    from dgla_export.io import check_output
    from dgla_export.runtimes.availability import tensorrt_problem

    profiles = load_build_profiles()
    if args.target not in profiles:
        raise UserError(f"unknown --target {args.target!r}; known: {', '.join(profiles)}")
    target = profiles[args.target]
    profile = BatchProfile.parse(args.batch or target["batch"])
    workspace = parse_size(args.workspace or target["workspace"])
    check_output(args.output, args.force, inputs=(args.onnx, args.timing_cache))
    check_output(manifest_path(args.output), args.force, inputs=(args.onnx, args.timing_cache))
    check_engine_graph(args.onnx, graph_metadata(load_graph(args.onnx)), args.precision)
    problem = tensorrt_problem()
    if problem:
        raise UserError(f"cannot build an engine here: {problem}; build on the GPU machine the engine will run on")
    console = Console("dgla-export")
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
        progress=console.log,
    )
    print(json.dumps({"engine": str(args.output), "layer_dtypes": dict(manifest.layer_dtypes)}))
    return 0


def _cmd_triton(args: argparse.Namespace) -> int:
    from dgla_export.triton.repository import TritonOptions, write_repository

    options = TritonOptions(
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        ort_tensorrt_fp16=args.ort_tensorrt_fp16,
        preprocess=args.preprocess,
        max_pixels=args.max_pixels,
    )
    texts = write_repository(args.onnx, args.output, engine=args.engine, options=options, force=args.force)
    print(f"wrote {args.output}: {', '.join(sorted(texts))} (configs parsed with Triton's schema)")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from dgla_export.data import load_images
    from dgla_export.export.graph import check_graph_model, graph_metadata, load_graph
    from dgla_export.io import check_output
    from dgla_export.models.registry import get_config

    console = Console("dgla-export")
    metadata = graph_metadata(load_graph(args.onnx))  # inputs first, then the slow model load
    check_graph_model(args.onnx, metadata, get_config(args.model))
    if args.report:
        check_output(args.report, args.force, inputs=(args.onnx,))
    images = load_images(args.images, preprocessing=_preprocessing(args))
    with console.status("loading the model"):
        model = _load_model(args)
    return 0 if _validate(args, model, args.onnx, metadata, images, console).passed else EXIT_MISMATCH


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "info": _cmd_info,
    "onnx": _cmd_onnx,
    "trt": _cmd_trt,
    "triton": _cmd_triton,
    "validate": _cmd_validate,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    return run_command(f"dgla-export {args.command}", lambda: COMMANDS[args.command](args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
