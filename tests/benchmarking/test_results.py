"""The bench's recommendation: the fastest runner per device and goal among those that passed
parity, beside ONNX Runtime FP32 at the same batch; a faster runner that failed is never named."""

from __future__ import annotations

import numpy as np
import pytest

from dgla_export.benchmarking.results import BackendResult, BenchResult
from dgla_export.benchmarking.timing import Timing, Visit
from dgla_export.compare import compare_logits
from dgla_export.models.config import DEFAULT_TOLERANCES

REFERENCE = np.array([[2.0, 0.0, -1.0], [0.0, 1.5, 0.2]])


def _backend(name: str, precision: str, p50: dict[int, float], logits: np.ndarray = REFERENCE) -> BackendResult:
    record = BackendResult(name, precision, "cpu")
    record.parity = compare_logits(
        REFERENCE, logits, tolerance=DEFAULT_TOLERANCES[precision], image_names=["a", "b"], class_names=["x", "y", "z"]
    )
    visits = {batch: Visit(batch, (ms, ms, ms), 0.0, None, None, None) for batch, ms in p50.items()}
    record.timing = [Timing.pool([visit], 10**9, None, 1.0) for visit in visits.values()]
    return record


def _result(*backends: BackendResult) -> BenchResult:
    return BenchResult("m", ("x", "y", "z"), ("a", "b"), 1, {}, [], list(backends))


def test_the_fastest_that_passed_is_recommended_for_each_goal() -> None:
    ort = _backend("onnxruntime-cpu-fp32", "fp32", {1: 400.0, 8: 2800.0})
    latency = _backend("openvino-cpu-int8", "int8", {1: 200.0, 8: 2000.0}, REFERENCE + 0.01)
    throughput = _backend("openvino-cpu-int8-throughput", "int8", {1: 250.0, 8: 1600.0}, REFERENCE + 0.01)
    wrong = _backend("fast-but-wrong", "fp32", {1: 10.0, 8: 80.0}, REFERENCE[:, ::-1].copy())
    assert not wrong.passed
    found = {r.goal: r for r in _result(ort, latency, throughput, wrong).recommendations()}
    assert (found["latency"].backend, found["latency"].batch) == ("openvino-cpu-int8", 1)
    assert found["latency"].speedup_vs_onnxruntime_fp32 == pytest.approx(2.0)
    assert (found["throughput"].backend, found["throughput"].batch) == ("openvino-cpu-int8-throughput", 8)
    assert found["throughput"].speedup_vs_onnxruntime_fp32 == pytest.approx(2800 / 1600)
    assert "2.00x ONNX Runtime FP32" in found["latency"].describe()
    written = _result(ort, latency, throughput, wrong).to_dict()["recommendation"]
    assert {r["backend"] for r in written} == {"openvino-cpu-int8", "openvino-cpu-int8-throughput"}


def test_no_recommendation_without_a_runner_that_passed() -> None:
    wrong = _backend("fast-but-wrong", "fp32", {1: 10.0}, REFERENCE[:, ::-1].copy())
    assert _result(wrong).recommendations() == []
    alone = _backend("openvino-cpu-fp32", "fp32", {1: 10.0})
    (latency, _) = _result(alone).recommendations()
    assert latency.speedup_vs_onnxruntime_fp32 is None, "no ONNX Runtime FP32 in the run: no ratio invented"
