"""How close dgla-bench's first estimate comes to the time its runs take, on this host.

Runs the bench API as `dgla-bench --onnx GRAPH [--quick]` does (every default CPU backend, each visit
in a fresh process) and records the estimate printed before the runs, the time from then to the
end of the runs, their ratio, and every revision with the time then actually left.

    python benchmarks/bench_estimate.py --onnx build/dgla_resnet50.onnx --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import commit, machine, parse_args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="an FP32 graph from `dgla-export onnx`")
    parser.add_argument("--quick", action="store_true", help="as dgla-bench --quick")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/bench-estimate"))
    args = parse_args(parser)
    import dgla_export as dx
    from dgla_export.benchmarking.run import QUICK, BenchOptions

    options = BenchOptions(**QUICK) if args.quick else BenchOptions()
    planned: list[tuple[float, float]] = []
    steps: list[tuple[float, str]] = []
    result = dx.bench(
        args.onnx,
        options=options,
        progress=lambda line: steps.append((time.perf_counter(), line)),
        plan=lambda names, seconds: planned.append((time.perf_counter(), seconds)),
    )
    ended = time.perf_counter()
    ((planned_at, estimate),) = planned
    took = ended - planned_at
    revisions = [
        {"after_s": at - planned_at, "said": line, "left_s": ended - at}
        for at, line in steps
        if "left (revised with" in line
    ]
    record = {
        "commit": commit(),
        "machine": machine(),
        "onnx": str(args.onnx),
        "options": dataclasses.asdict(options),
        "backends": [b.backend for b in result.backends if b.measured or b.parity is not None],
        "estimate_s": estimate,
        "took_s": took,
        "error": estimate / took - 1,
        "revisions": revisions,
    }
    name = "quick" if args.quick else "default"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: estimate {estimate:.0f} s, took {took:.0f} s, error {record['error']:+.0%}")
    return 0 if abs(record["error"]) <= 0.25 else 3


if __name__ == "__main__":
    sys.exit(main())
