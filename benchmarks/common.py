"""Helpers for the benchmark scripts: a timer, a runner and a results writer. Sampling and machine info
come from the package, so benchmarks and dgla-bench time and record the same way."""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.benchmarking.timing import sample_seconds
from dgla_export.machine import commit, machine
from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner

__all__ = ["RESULTS", "commit", "loaded", "machine", "time_call", "write_json"]

RESULTS = Path(__file__).parent / "results"


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    min_runs: int = 5,
    min_seconds: float = 1.0,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Latency statistics (ms) of dgla-bench's sampling loop (warm-up, then both minimums)."""
    samples = sample_seconds(fn, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, sync=sync)
    array = np.array(samples) * 1e3
    return {
        "runs": len(samples),
        "mean_ms": float(array.mean()),
        "p50_ms": float(np.percentile(array, 50)),
        "p90_ms": float(np.percentile(array, 90)),
        "p99_ms": float(np.percentile(array, 99)),
    }


def loaded(path: Path) -> OnnxRuntimeRunner:
    """A loaded ONNX Runtime CPU runner of the graph at ``path``."""
    runner = OnnxRuntimeRunner(path)
    runner.load()
    return runner


def write_json(name: str, record: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line; and from now on SIGTERM (what ``timeout`` sends) exits as Ctrl-C does,
    so the run's temporary folders and servers are removed by their ``with`` blocks instead of left behind."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    return parser.parse_args()
