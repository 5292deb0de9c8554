"""Export DGLA-ResNet50 (or another registered model) from a PyTorch checkpoint to a two-input ONNX
graph, check it against the PyTorch model on real images, build TensorRT engines from it, and
write a Triton model repository.

Exit codes: 0 success, 2 bad input (one line says what and how to fix it), 3 a validation or
tolerance failure, 1 a bug (with a traceback; please report it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dgla_export.errors import run_command
from dgla_export.tools.args import add_common

__all__ = ["COMMANDS", "build_parser", "main"]

# subcommand -> module (dgla_export.tools.export_<name>): HELP, configure(parser), run(args)
COMMANDS = ("info", "onnx", "validate", "debug", "trt", "triton", "versions", "kubernetes")
EPILOG = """\
examples:
  dgla-export info
  dgla-export onnx --output dgla.onnx                       demo weights, FP32, validated
  dgla-export onnx --weights ckpt.pt --precision fp16 --output dgla_fp16.onnx
  dgla-export onnx --weights ckpt.pt --precision int8 --calibration-images calib/ --output dgla_int8.onnx
  dgla-export validate dgla.onnx --images my_dermoscopy/             weights: those the graph records
  dgla-export debug dgla_fp16.onnx --reference dgla.onnx --output fp16-debug   where FP16 departs from FP32
  dgla-export trt --onnx dgla_fp16.onnx --output dgla_fp16.plan       (GPU + TensorRT)
  dgla-export triton --onnx dgla_fp16.onnx --output triton-repo
  dgla-export triton --onnx dgla_v2.onnx --output triton-repo --add     version 2 of dgla, served from now on
  dgla-export versions triton-repo --rollback                           serve version 1 again
  dgla-export kubernetes --storage s3://models/dgla --output k8s        N replicas, HPA, KServe
"""


def _module(name: str):
    return importlib.import_module(f"dgla_export.tools.export_{name}")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="dgla-export", description=__doc__, epilog=EPILOG, formatter_class=formatter)
    add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _module(name)
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__, formatter_class=formatter)
        module.configure(command)
        add_common(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dgla_export.console import quiet_libraries

    quiet_libraries(args.verbose)
    return run_command(f"dgla-export {args.command}", lambda: _module(args.command).run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
