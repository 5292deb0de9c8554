"""Write a Triton Inference Server repository: NAME_onnx (ONNX Runtime; NAME_openvino, Triton's
OpenVINO backend on the CPU, with --runtime openvino), NAME_trt (with --engine,
checked against its manifest first), NAME_preprocess (image bytes -> tensors: numpy + Pillow, or
DALI with --preprocess dali) and NAME (the ensemble: image bytes in, probabilities out); NAME is
--name (default dgla; auto: from the graph's metadata). With --add, the models of other names
already in --output stay: one repository serves several models; and a graph for a NAME already
there becomes its next version (numbered folders, a manifest with every file's SHA-256 and the
graph's validation report), served from now on; `dgla-export versions` rolls back. Serve it with
`dgla-serve` or the official container.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgla_export.tools.args import add_preprocess_args, batch_sizes, positive_float, positive_int

HELP = "write a Triton model repository (ONNX, engine, preprocessing, ensemble)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="graph from `dgla-export onnx`")
    parser.add_argument("--engine", type=Path, metavar="FILE", help="engine from `dgla-export trt` (adds NAME_trt)")
    parser.add_argument("--output", type=Path, required=True, metavar="FOLDER", help="repository folder to write")
    parser.add_argument(
        "--name",
        default="dgla",
        metavar="NAME",
        help="the ensemble's name, and its models' prefix (default dgla; lower-case letters, digits, _); auto: "
        "the graph's model and precision (dgla_resnet50, dgla_resnet50_fp16)",
    )
    parser.add_argument(
        "--add",
        action="store_true",
        help="keep the models of other names in --output (an earlier repository of this command) beside these; "
        "when NAME is there, write the graph as its next version, served from now on (`dgla-export versions` "
        "rolls back)",
    )
    parser.add_argument(
        "--validation",
        type=Path,
        metavar="REPORT",
        help="the graph's validation report (default: the one `dgla-export onnx` or `validate` wrote beside the "
        "graph, NAME.validation.json): checked (this graph, passed) and kept in the version's manifest with its "
        "golden answers, which every start of dgla-serve checks the server against",
    )
    parser.add_argument(
        "--unvalidated",
        action="store_true",
        help="serve a graph that has no passing report of its own: recorded in the version's manifest and "
        "printed at every start of dgla-serve, whose self-check then has no golden answers to hold it to",
    )
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
    queue = parser.add_argument_group(
        "overload",
        "what waits, and for how long, before Triton rejects a request with a status the client reports: "
        "give the measured capacity and the clients' deadline (sizes batch, queue and timeout), or the queue itself",
    )
    queue.add_argument(
        "--capacity",
        type=positive_float,
        metavar="PAIRS_PER_S",
        help="answered pairs per second one server sustains (benchmarks/triton_flood.py measures it); with --deadline",
    )
    queue.add_argument(
        "--deadline",
        type=positive_float,
        metavar="S",
        help="the clients' deadline in seconds: every request is answered or rejected within it, at --capacity",
    )
    queue.add_argument(
        "--max-queue-size",
        type=positive_int,
        metavar="N",
        help="requests a runtime model (and the ensemble's first step) queue before rejecting more (default 16)",
    )
    queue.add_argument(
        "--queue-timeout",
        type=positive_float,
        metavar="S",
        help="seconds a request may wait in the queue before it is rejected (default 10)",
    )
    parser.add_argument(
        "--instances",
        type=positive_int,
        default=1,
        metavar="N",
        help="instances of each runtime model per GPU (default 1)",
    )
    parser.add_argument(
        "--runtime",
        choices=["onnxruntime", "openvino"],
        default="onnxruntime",
        help="what serves the graph: ONNX Runtime (NAME_onnx, default) or Triton's OpenVINO backend on the CPU "
        "(NAME_openvino; the FP32 or INT8 graph)",
    )
    parser.add_argument(
        "--openvino-hint",
        choices=["latency", "throughput"],
        default="latency",
        help="OpenVINO's performance hint for NAME_openvino (default latency)",
    )
    parser.add_argument(
        "--openvino-bf16",
        action="store_true",
        help="NAME_openvino computes in BF16 (HINT_BF16): for a server CPU with native BF16 (AVX512_BF16, AMX)",
    )
    parser.add_argument(
        "--ort-tensorrt-fp16",
        action="store_true",
        help="let ONNX Runtime use its TensorRT accelerator for dgla_onnx: FP16, or INT8 for an INT8 graph",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --output if it is an earlier repository of this command holding nothing else "
        "(with --add: replace only the models named NAME*)",
    )
    add_preprocess_args(parser, dali=True)


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import write_triton_repository
    from dgla_export.errors import UserError
    from dgla_export.triton.repository import TritonOptions

    queue = {"max_queue_size": args.max_queue_size, "queue_timeout_s": args.queue_timeout}
    queue = {key: value for key, value in queue.items() if value is not None}
    if queue and args.capacity is not None:
        raise UserError("--capacity and --deadline size the queue: drop --max-queue-size and --queue-timeout")
    options = TritonOptions(
        name=args.name,
        runtime=args.runtime,
        openvino_hint=args.openvino_hint,
        openvino_bf16=args.openvino_bf16,
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.max_queue_delay_us,
        capacity_pairs_s=args.capacity,
        deadline_s=args.deadline,
        **queue,
        instances=args.instances,
        ort_tensorrt_fp16=args.ort_tensorrt_fp16,
        preprocess=args.preprocess,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
    )
    result = write_triton_repository(
        args.onnx,
        args.output,
        engine=args.engine,
        options=options,
        validation=args.validation,
        unvalidated=args.unvalidated,
        force=args.force,
        add=args.add,
    )
    models = ", ".join(result.models)
    print(f"wrote {result.path}: version {result.version} of {models} (configs parsed with Triton's schema)")
    if result.unvalidated:
        print("UNVALIDATED: nothing checked that this graph answers what PyTorch answers (recorded in its manifest)")
    return 0
