"""Helpers for the benchmark scripts: a timer and a results writer (machine info comes from
dgla_export.bench.environment, shared with dgla-bench)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.bench.environment import commit, machine

__all__ = ["RESULTS", "commit", "machine", "time_call", "write_json"]

RESULTS = Path(__file__).parent / "results"


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    min_runs: int = 5,
    min_seconds: float = 1.0,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Latency statistics (ms) after ``warmup`` calls; runs until both minimums are met."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    started = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    array = np.array(samples)
    return {
        "runs": len(samples),
        "mean_ms": float(array.mean()),
        "p50_ms": float(np.percentile(array, 50)),
        "p90_ms": float(np.percentile(array, 90)),
        "p99_ms": float(np.percentile(array, 99)),
    }


def write_json(name: str, record: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
