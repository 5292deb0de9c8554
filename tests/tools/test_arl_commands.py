"""ARL-CNN through every command, as a user types them (its tiny configuration): onnx FP32 with
--explain, FP16 and INT8, validate, dgla-bench with heatmaps, and trt up to the TensorRT build,
which this machine cannot run (the graph is checked as for DGLA first).

INT8 of the untrained demo ARL meets the accuracy target on its calibration images but not on
held-out ones (measured: probabilities within 0.02 on the three calibration images, 0.45 off on the
three others): the command must then end in its validation refusal, the graph kept beside."""

from __future__ import annotations

import json

import pytest

from dgla_export.errors import EXIT_MISMATCH, EXIT_USAGE
from dgla_export.tools.bench import main as bench_main
from dgla_export.tools.export import main as export_main

pytestmark = pytest.mark.slow  # minutes: three exports, an INT8 search, a bench


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("arl")
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = folder / f"arl_{precision}.onnx"
        extra = ["--explain"] if precision == "fp32" else []
        argv = ["onnx", "--model", "arl_tiny", "--precision", precision, "--batch", "1:4", *extra]
        assert export_main([*argv, "--output", str(paths[precision])]) == 0, precision
    return paths


def test_int8_is_searched_and_judged_on_held_out_images(tmp_path, capsys) -> None:
    output = tmp_path / "arl_int8.onnx"
    argv = ["onnx", "--model", "arl_tiny", "--precision", "int8", "--batch", "1:4", "--output", str(output)]
    code = export_main(argv)
    err = capsys.readouterr().err
    assert "INT8 sensitivity" in err and "units kept in FP32" in err, err[-3000:]  # the search ran
    if code == 0:
        assert output.is_file() and "validation passed" in err
    else:
        assert code == EXIT_MISMATCH and "validation FAILED" in err and "Traceback" not in err, err[-3000:]
        assert not output.exists() and output.with_name("arl_int8.failed.onnx").is_file()


def test_every_precision_exports_validated(graphs, capsys) -> None:
    for precision, path in graphs.items():
        assert path.is_file(), precision
        assert export_main(["validate", str(path), "--report", str(path.with_suffix(".json"))]) == 0, precision
        report = json.loads(path.with_suffix(".json").read_text())
        assert report["verdict"] == "passed" and report["precision"] == precision, report["verdict"]
    capsys.readouterr()


def test_bench_checks_and_draws_every_runtime(graphs, tmp_path, capsys) -> None:
    argv = [
        "--model", "arl_tiny", "--onnx", str(graphs["fp32"]), "--backends", "onnxruntime-cpu-fp32,torch-eager-cpu",
        "--batches", "1", "--min-seconds", "0.1", "--min-runs", "2", "--in-process", "--heatmaps",
        "--output", str(tmp_path / "bench"),
    ]  # fmt: skip
    assert bench_main(argv) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert result["model"] == "arl_tiny"
    assert [b["verdict"] for b in result["backends"]] == ["passed", "passed"], result["backends"]
    assert list((tmp_path / "bench" / "heatmaps").glob("*.png"))


def test_trt_checks_the_graph_then_says_it_cannot_build_here(graphs, tmp_path, capsys) -> None:
    from dgla_export.runtimes.availability import tensorrt_problem

    if tensorrt_problem() is None:
        pytest.skip("TensorRT and a GPU are here: tests/runtimes builds engines")
    argv = ["trt", "--onnx", str(graphs["fp16"]), "--output", str(tmp_path / "arl.plan")]
    assert export_main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot build an engine here" in err and "Traceback" not in err, err
    assert not (tmp_path / "arl.plan").exists()
