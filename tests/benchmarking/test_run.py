"""run_bench: each runner in a fresh process, so one that dies is reported and the run goes on."""

from __future__ import annotations

import os

import pytest

from dgla_export.benchmarking.catalogue import Backend
from dgla_export.benchmarking.run import BenchOptions, run_bench
from dgla_export.runtimes.base import Runner
from dgla_export.runtimes.torch import TorchRunner

pytestmark = pytest.mark.slow  # run by make test, not by make test-fast


class _DiesOnLoad(Runner):
    """Stands for a native library that takes its process down (a segfaulting runtime)."""

    name, precision, device = "dies-on-load", "fp32", "cpu"

    def load(self) -> None:
        os._exit(11)

    def run(self, staged):
        raise AssertionError("never loaded")


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
