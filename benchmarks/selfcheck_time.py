"""The self-check's time at start, and its answers, for a graph: what every `dgla-serve` start adds.

Writes a repository of ``--onnx`` (its validation report beside it, as `dgla-export onnx` leaves it)
in a temporary folder, starts dgla-serve's server on loopback ports, and records the time from the
server's start to ready, the self-check's time (the reference photos through the ensemble and back)
and each answer's error against the golden one. Loopback only; the server stops with the run.

    python benchmarks/selfcheck_time.py --onnx build/dgla_resnet50.onnx --output benchmarks/results/selfcheck
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import commit, machine, parse_args
from benchmarks.triton_cpu import free_ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="a graph from `dgla-export onnx` (report beside it)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/selfcheck"))
    parser.add_argument("--preprocess", default="fast", choices=("fast", "exact"))
    args = parse_args(parser)
    import json

    import dgla_export as dx
    from dgla_export.triton.repository import TritonOptions, write_repository

    with tempfile.TemporaryDirectory(prefix="selfcheck-") as folder:
        repository = Path(folder) / "repo"
        write_repository(args.onnx, repository, options=TritonOptions(preprocess=args.preprocess))
        ports = free_ports()
        started = time.monotonic()
        lines: list[str] = []
        with dx.serve(repository, http_port=ports.http, grpc_port=ports.grpc, metrics_port=ports.metrics,
                      progress=lines.append) as s:  # fmt: skip
            ready = time.monotonic() - started
            checked = s.self_check
    record = {
        "commit": commit(),
        "machine": machine(),
        "onnx": str(args.onnx),
        "preprocess": args.preprocess,
        "start_to_ready_s": ready,
        "self_check_s": checked.seconds,
        "passed": checked.passed,
        "answers": [dataclasses.asdict(a) for a in checked.answers],
        "said": lines,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(checked.summary())
    print(f"start to ready {ready:.1f} s, of which the self-check {checked.seconds:.1f} s")
    return 0 if checked.passed else 3


if __name__ == "__main__":
    sys.exit(main())
