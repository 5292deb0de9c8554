"""run_bench: each runner in a fresh process, so one that dies is reported and the run goes on;
its estimate of the time the runs take, measured on this host, against the time they took."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from dgla_export.benchmarking.catalogue import Backend
from dgla_export.benchmarking.run import QUICK, BenchOptions, Estimate, VisitCost, run_bench
from dgla_export.runtimes.base import Runner
from dgla_export.runtimes.torch import TorchRunner


class _DiesOnLoad(Runner):
    """Stands for a native library that takes its process down (a segfaulting runtime)."""

    name, precision, device = "dies-on-load", "fp32", "cpu"

    def load(self) -> None:
        os._exit(11)

    def run(self, staged):
        raise AssertionError("never loaded")


@pytest.mark.slow  # run by make test, not by make test-fast
def test_a_runner_that_kills_its_process_is_reported(tiny, images) -> None:
    result = run_bench(
        tiny,
        [
            (Backend("dies-on-load", "fp32", "cpu", "model", True), _DiesOnLoad()),
            (Backend("torch-eager-cpu", "fp32", "cpu", "model", True, "eager"), TorchRunner(tiny)),
        ],
        images[:2],
        options=BenchOptions(batches=(1,), warmup=1, min_runs=2, min_seconds=0.0, rounds=2),
        macs_per_pair=1,
        progress=lambda message: None,
    )
    dead, eager = result.backends
    assert "BrokenProcessPool" in dead.failed, dead
    assert eager.parity.passed and eager.timing[0].speedup_vs_torch_eager == 1.0
    # Two visits of one run each (min_runs split between rounds), pooled.
    assert eager.timing[0].rounds == 2 and eager.timing[0].runs == 2
    assert result.cpu_fp32_gemm_tflops > 0
    assert result.to_dict()["backends"][0]["failed"] == dead.failed  # the results.json layout


def test_the_estimate_adds_what_was_measured() -> None:
    """Every visit pays its process's start, its load and its timing; a runner's first, parity too.
    Timing goes on until both of a round's minimums are met. A runner not visited yet costs what
    the reference and the probe measured, then the mean of the runners visited so far."""
    options = BenchOptions(batches=(1, 4), warmup=2, min_runs=5, min_seconds=3.0, rounds=3)
    estimate = Estimate(options, 6, reference_s=1.5, seconds_per_pair=0.1, start_s=4.0, parity_import_s=2.0)
    # parity: the parity module's import and the reference's 1.5 s (its warm-up and 6 images), not
    # 6 warm pairs (0.6 s). A round: 2 runs of min_runs, 1 s of min_seconds. Batch 1: 2 warm-up
    # runs of 0.1 s and 1 s of 10 runs; batch 4: 2 warm-up runs of 0.4 s and 3 runs (1.2 s) to pass 1 s.
    assert dataclasses.astuple(estimate.guess()) == pytest.approx((4.0, 0.0, 3.5, 0.2 + 1.0 + 0.8 + 1.2))
    assert estimate.seconds_left({"a": 3, "b": 3, "c": 3}) == pytest.approx(3 * (3 * (4.0 + 3.2) + 3.5))
    estimate.measured["a"] = VisitCost(start_s=2.0, load_s=0.5, parity_s=0.6, timing_s=4.0)
    estimate.measured["b"] = VisitCost(start_s=3.0, load_s=1.5, parity_s=1.0, timing_s=6.0)
    # a: one more visit as measured, without parity; b: two; c: three as the mean of a and b
    left = estimate.seconds_left({"a": 1, "b": 2, "c": 3})
    assert left == pytest.approx(6.5 + 2 * 10.5 + 3 * (2.5 + 1.0 + 5.0) + 0.8)
    # a slow pair: 6 of them outlast the reference's batch; a round's 2 runs outlast its second
    slow = Estimate(options, 6, reference_s=5.0, seconds_per_pair=1.0, start_s=0.0, parity_import_s=0.0)
    assert slow.guess().parity_s == 6.0 and slow.guess().timing_s == pytest.approx(2 + 2 + 8 + 8)


@pytest.mark.slow
def test_a_bench_says_its_estimate_before_the_runs_and_revises_it_after_each_first_visit(tiny_onnx) -> None:
    """The plan (--quick, every runner in a fresh process) comes once, before the runs, with seconds
    measured here, and every runner's first visit but the last revises what is left. Whether the
    estimate is within 25% of the time the runs take is a benchmark's question (a timed unit test
    beside other tests measures their load): `benchmarks/bench_estimate.py`, its record in
    `benchmarks/results/bench-estimate/`. The error is printed here for the curious."""
    import dgla_export as dx

    planned: list[tuple[float, float]] = []
    steps: list[str] = []
    dx.bench(
        tiny_onnx["fp32"],
        model="dgla_tiny",
        backends=["torch-eager-cpu", "torch-channels_last-cpu", "onnxruntime-cpu-fp32"],
        options=BenchOptions(isolate=True, **QUICK),
        progress=steps.append,
        plan=lambda names, seconds: planned.append((time.perf_counter(), seconds)),
    )
    ((planned_at, estimate),) = planned
    took = time.perf_counter() - planned_at
    print(f"estimate {estimate:.1f} s, took {took:.1f} s, error {estimate / took - 1:+.0%}")
    assert estimate > 3.0  # three fresh processes' starts at least: the old estimate said under one
    revised = [step for step in steps if "left (revised with" in step]
    assert len(revised) == 2, steps
