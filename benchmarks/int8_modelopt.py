"""NVIDIA ModelOpt's ONNX INT8 quantizer on the same FP32 graph, images and scores as
`int8_curve.py`: the measurement behind choosing ONNX Runtime's quantizer for `dgla-export`.

ModelOpt cannot live in the package's environment (0.47 pins onnx ~= 1.21 and
onnxruntime-gpu ~= 1.24 and pulls cupy), so this script runs in a venv of its own:

    python -m venv /tmp/modelopt && /tmp/modelopt/bin/pip install torch==2.13.0 \
        nvidia-modelopt[onnx]==0.47.0 pillow scikit-image rich safetensors polygraphy
    /tmp/modelopt/bin/python benchmarks/int8_modelopt.py --onnx build/dgla_resnet50.onnx

It calibrates on the CPU (calibration_eps=["cpu"]) with max calibration, keeps every
non-quantized layer in FP32, and scores the result against the FP32 graph on the 6 calibration
and 18 held-out images; both graphs are timed on ONNX Runtime CPU, interleaved, batch 1 and 4.
Writes benchmarks/results/int8-cpu/modelopt.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import commit, loaded, machine, parse_args, write_json
from benchmarks.int8_curve import image_sets, score, speed_against_fp32
from dgla_export.artefacts.graph import load_graph
from dgla_export.quantize import runner_logits


def main() -> int:
    import modelopt
    import onnx
    from modelopt.onnx.quantization import quantize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="FP32 graph from `dgla-export onnx`")
    parser.add_argument("--method", default="max", help="ModelOpt calibration method (default max)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timing per batch size and graph")
    args = parse_args(parser)
    _, sets = image_sets(load_graph(args.onnx))
    fp32 = loaded(args.onnx)
    with tempfile.TemporaryDirectory(prefix="dgla-modelopt.") as tmp:
        output = Path(tmp) / "modelopt_int8.onnx"
        started = time.perf_counter()
        quantize(
            str(args.onnx),
            quantize_mode="int8",
            calibration_data=sets["calibration"],
            calibration_method=args.method,
            calibration_eps=["cpu"],
            high_precision_dtype="fp32",
            output_path=str(output),
            log_level="WARNING",
        )
        quantize_s = time.perf_counter() - started
        ops = collections.Counter(node.op_type for node in onnx.load(str(output), load_external_data=False).graph.node)
        session = loaded(output)
        scores = {
            name: score(runner_logits(fp32, inputs), runner_logits(session, inputs)) for name, inputs in sets.items()
        }
        timing = {}
        for batch in (1, 4):
            feed = {k: v[:batch] for k, v in sets["heldout"].items()}
            timing[f"batch{batch}"] = speed_against_fp32(fp32, session, feed, args.min_seconds)
    record = {
        "machine": machine(),
        "commit": commit(),
        "tool": f"nvidia-modelopt {modelopt.__version__} modelopt.onnx.quantization.quantize",
        "settings": {
            "quantize_mode": "int8",
            "calibration_method": args.method,
            "calibration_eps": ["cpu"],
            "high_precision_dtype": "fp32",
        },
        "onnx": str(args.onnx),
        "reference": "ONNX Runtime CPU FP32 (the FP32 graph)",
        "quantize_s": quantize_s,
        "op_counts": {k: ops[k] for k in ("QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm")},
        **scores,
        **timing,
    }
    path = write_json("int8-cpu/modelopt.json", record)
    print(json.dumps({k: record[k] for k in ("quantize_s", "calibration", "heldout", "batch1", "batch4")}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
