"""run_bench: each backend in a fresh process, so one that dies is reported and the run goes on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dgla_export.bench.backends import Backend, TorchBackend
from dgla_export.bench.run import BenchOptions, run_bench
from dgla_export.models.resnet import ResNet


class _DiesOnLoad(Backend):
    """Stands for a native library that takes its process down (a segfaulting runtime)."""

    name, precision, device = "dies-on-load", "fp32", "cpu"

    def load(self, model: ResNet | None, onnx_files: dict[str, Path]) -> None:
        os._exit(11)

    def infer(self, staged: tuple) -> np.ndarray:
        raise AssertionError("never loaded")

    def _drop(self) -> None:
        pass


def test_a_backend_that_kills_its_process_is_reported(tiny, images) -> None:
    results = run_bench(
        tiny,
        [_DiesOnLoad(), TorchBackend("eager", "cpu")],
        images[:2],
        {},
        options=BenchOptions(batches=(1,), warmup=1, min_runs=2, min_seconds=0.0, rounds=2),
        macs_per_pair=1,
        progress=lambda message: None,
    )
    dead, eager = results["backends"]
    assert "BrokenProcessPool" in dead["failed"], dead
    assert eager["parity"]["passed"] and eager["timing"][0]["speedup_vs_torch_eager"] == 1.0
    # Two visits of one run each (min_runs split between rounds), pooled.
    assert eager["timing"][0]["rounds"] == 2 and eager["timing"][0]["runs"] == 2
    assert results["cpu_fp32_gemm_tflops"] > 0
