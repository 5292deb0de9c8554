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


def test_the_recommendation_prints_the_command_that_serves_it(tmp_path) -> None:
    """Each recommendation names the `dgla-export triton` command of what it ran (the graph, the
    runtime, its settings); where PyTorch is fastest, the fastest served runner that passed."""
    from dgla_export.benchmarking.catalogue import catalogue

    files = {"fp32": tmp_path / "my model.onnx", "int8": tmp_path / "int8.onnx"}
    known = {b.name: b for b in catalogue(["cpu", "cuda"])}
    commands = {name: known[name].serving_command(files, None) for name in known}
    assert commands["onnxruntime-tensorrt-fp32"] is None  # a repository's TensorRT provider computes FP16
    assert commands["onnxruntime-tensorrt-int8"].endswith("--ort-tensorrt-fp16 --output triton-repo")
    assert commands["openvino-cpu-bf16-throughput"] == (
        f"dgla-export triton --onnx '{files['fp32']}' --runtime openvino --openvino-bf16 --openvino-hint throughput "
        "--output triton-repo"
    )
    assert commands["onnxruntime-cpu-int8"] == f"dgla-export triton --onnx {files['int8']} --output triton-repo"
    assert commands["torch-eager-cpu"] is None and commands["onnxruntime-cpu-fp16"] is None  # not served; not given
    ort = _backend("onnxruntime-cpu-fp32", "fp32", {1: 400.0})
    ov = _backend("openvino-cpu-bf16", "bf16", {1: 150.0}, REFERENCE + 0.01)
    torch_fastest = _backend("torch-channels_last-cpu", "fp32", {1: 100.0})
    ort.serving_command, ov.serving_command = commands["onnxruntime-cpu-fp32"], commands["openvino-cpu-bf16"]
    (latency, _) = _result(ort, ov, torch_fastest).recommendations()
    assert latency.backend == "torch-channels_last-cpu" and latency.served_instead == "openvino-cpu-bf16"
    line = latency.describe()
    print(line)
    assert line.endswith(f"serve it: {commands['openvino-cpu-bf16']}"), line
    assert "not served as measured, the fastest runner that is and passed: openvino-cpu-bf16" in line, line


def test_a_row_above_its_ceiling_prints_no_share_and_is_named() -> None:
    from dgla_export.benchmarking.ceilings import Ceiling
    from dgla_export.benchmarking.report import ceiling_lines, format_utilisation

    assert format_utilisation({"gemm_fraction": 0.42}) == "42% of GEMM"
    assert format_utilisation({"gemm_fraction": 2.1}) == "above its ceiling"
    assert format_utilisation({"mfu": 0.1, "gemm_fraction": 1.5}) == "10.0% (above its ceiling)"
    above = _backend("openvino-cpu-fp32", "fp32", {1: 100.0})
    above.timing = [Timing.pool([Visit(1, (1.0, 1.0), 0.0, None, None, None)], 10**9, None, 0.5)]  # 1 TFLOP/s, 0.5
    result = _result(above)
    result.cpu_ceilings["fp32"] = Ceiling("fp32", {"numpy": 0.5, "torch": 1.0}, {"openvino": "not installed"})
    lines = ceiling_lines(result)
    print("\n".join(lines))
    assert "1000 GFLOP/s (torch's; numpy 500)" in lines[0], lines
    assert any("Above their ceiling: openvino-cpu-fp32 at batch 1 (200%)" in line for line in lines), lines
