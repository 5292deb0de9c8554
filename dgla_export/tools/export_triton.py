"""Write a Triton Inference Server repository: dgla_onnx (ONNX Runtime), dgla_trt (with --engine,
checked against its manifest first), dgla_preprocess (image bytes -> tensors: numpy + Pillow, or
DALI with --preprocess dali) and dgla (the ensemble: image bytes in, probabilities out). Serve it
with `dgla-serve` or the official container.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgla_export.tools.args import add_preprocess_args, batch_sizes, positive_int

HELP = "write a Triton model repository (ONNX, engine, preprocessing, ensemble)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="graph from `dgla-export onnx`")
    parser.add_argument("--engine", type=Path, metavar="FILE", help="engine from `dgla-export trt` (adds dgla_trt)")
    parser.add_argument("--output", type=Path, required=True, metavar="FOLDER", help="repository folder to write")
    parser.add_argument(
        "--max-batch-size",
        type=positive_int,
        metavar="N",
        help="largest batch Triton forms (default: the graph's, or the engine's, maximum)",
    )
    parser.add_argument(
        "--preferred-batch-sizes",
        type=batch_sizes,
        default=(8, 16),
        metavar="B,B,...",
        help="batch sizes the dynamic batcher aims for (default 8,16)",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=positive_int,
        default=200,
        metavar="US",
        help="longest wait for a fuller batch, in microseconds (default 200)",
    )
    parser.add_argument(
        "--instances",
        type=positive_int,
        default=1,
        metavar="N",
        help="instances of each runtime model per GPU (default 1)",
    )
    parser.add_argument(
        "--ort-tensorrt-fp16",
        action="store_true",
        help="let ONNX Runtime use its TensorRT accelerator for dgla_onnx: FP16, or INT8 for an INT8 graph",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --output if it is an earlier repository of this command holding nothing else",
    )
    add_preprocess_args(parser, dali=True)


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import write_triton_repository
    from dgla_export.triton.repository import TritonOptions

    options = TritonOptions(
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        ort_tensorrt_fp16=args.ort_tensorrt_fp16,
        preprocess=args.preprocess,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
    )
    result = write_triton_repository(args.onnx, args.output, engine=args.engine, options=options, force=args.force)
    print(f"wrote {result.path}: {', '.join(result.models)} (configs parsed with Triton's schema)")
    return 0
