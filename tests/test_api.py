"""The Python API: every stage callable alone, validated by default, typed results, typed errors."""

from __future__ import annotations

import json

import pytest

import dgla_export as dx


def test_the_api_is_importable_from_the_package_root_without_loading_torch() -> None:
    import subprocess
    import sys

    code = "import sys, dgla_export as dx; dx.export_onnx; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    for name in ("export_onnx", "validate", "build_engine", "bench", "write_triton_repository", "serve"):
        assert callable(getattr(dx, name)) and getattr(dx, name).__doc__, name


def test_the_package_root_offers_exactly_the_apis_names() -> None:
    """dgla_export re-exports the API lazily from its own list (importing dgla_export.api would load
    the stages): the two lists must not drift apart."""
    from dgla_export import _EXPORTS, api

    assert sorted(_EXPORTS["dgla_export.api"]) == sorted(api.__all__)


def test_the_api_says_nothing_on_the_console(tmp_path) -> None:
    """From Python, an export and its validation print nothing: no third-party lines (torch.onnx
    warned four times about torchvision where the command line hid it), no progress unless asked."""
    import subprocess
    import sys

    code = (
        "import dgla_export as dx\n"
        f"result = dx.export_onnx({str(tmp_path / 'g.onnx')!r}, 'dgla_tiny', batch=(1, 2), batches=[1])\n"
        "assert result.passed\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == "", run.stderr[-2000:]


@pytest.mark.slow
def test_export_validates_by_default_and_returns_a_typed_result(tiny, tmp_path) -> None:
    output = tmp_path / "build" / "tiny.onnx"  # a folder that does not exist yet, as on a fresh clone (make demo)
    result = dx.export_onnx(output, tiny, batch=(1, 3))
    assert result.path == output and result.path.is_file()
    assert result.passed and result.validation is not None and result.validation.precision == "fp32"
    assert [c.batch for c in result.validation.checks] == [1, 3]
    record = json.loads(result.to_json())
    assert record["graph"]["opset"] == 18 and record["validation"]["passed"] is True
    again = dx.validate(result.path, tiny, batches=[2])  # the graph's own model is the default
    assert again.passed and again.checks[0].batch == 2


@pytest.mark.slow
def test_a_graph_failing_validation_raises_with_its_report(tiny, tmp_path, monkeypatch) -> None:
    from dgla_export.models import config

    monkeypatch.setitem(tiny.config.tolerances, "fp32", config.Tolerance(logits_rel=0.0, probs_abs=0.0))
    with pytest.raises(dx.ValidationFailedError, match=r"kept as .*tiny\.failed\.onnx") as info:
        dx.export_onnx(tmp_path / "tiny.onnx", tiny, batch=(1, 2))
    assert not info.value.result.passed and info.value.result.path.name == "tiny.failed.onnx"
    assert not (tmp_path / "tiny.onnx").exists()


def test_repository_and_bench_results(tiny_onnx, tmp_path) -> None:
    from dgla_export.benchmarking.run import QUICK, BenchOptions

    repo = dx.write_triton_repository(tiny_onnx["fp32"], tmp_path / "repo")
    assert (
        repo.models == ["dgla", "dgla_normalise", "dgla_onnx", "dgla_pixels", "dgla_preprocess"]
        and "max_batch_size" in repo.configs["dgla_onnx"]
    )
    options = BenchOptions(isolate=False, **QUICK)
    planned = []
    result = dx.bench(
        tiny_onnx["fp32"],
        model="dgla_tiny",
        backends=["onnxruntime-cpu-fp32"],
        options=options,
        plan=lambda names, seconds: planned.append((names, seconds)),
    )
    assert planned and planned[0][0] == ["onnxruntime-cpu-fp32"] and planned[0][1] > 0
    (backend,) = result.backends
    assert backend.parity.passed and backend.timing[0].p50_ms > 0 and not result.failed
    assert result.to_dict()["backends"][0]["timing"][0]["batch"] == 1
    assert result.provenance["package_version"] == dx.__version__


def test_an_engine_build_says_why_it_cannot_run_here(tiny_onnx, tmp_path) -> None:
    from dgla_export.runtimes.availability import tensorrt_problem

    if tensorrt_problem() is None:
        pytest.skip("TensorRT and a GPU are here")
    with pytest.raises(dx.UserError, match="cannot build an engine here"):
        dx.build_engine(tiny_onnx["fp16"], tmp_path / "e.plan", model="dgla_tiny")
    assert not (tmp_path / "e.plan").exists()
