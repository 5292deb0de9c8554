"""dgla-bench on the tiny model: parity fields, speed fields, files, and mismatch exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import onnx
import pytest

from dgla_export.benchmarking.report import throughput_figure
from dgla_export.errors import EXIT_MISMATCH
from dgla_export.models import get_config
from dgla_export.overlay import colour_bar
from dgla_export.tools.bench import main

pytestmark = pytest.mark.slow  # run by make test, not by make test-fast


@pytest.fixture(scope="module")
def bench_run(tiny_onnx, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    code = main(
        [
            "--model",
            "dgla_tiny",
            "--onnx",
            str(tiny_onnx["fp32"]),
            "--onnx-fp16",
            str(tiny_onnx["fp16"]),
            "--backends",
            "torch-eager-cpu,torch-channels_last-cpu,onnxruntime-cpu-fp32",
            "--batches",
            "1,3",
            "--min-seconds",
            "0.2",
            "--min-runs",
            "3",
            "--rounds",
            "2",
            "--output",
            str(folder),
            "--fail-on-mismatch",
        ]
    )
    return code, folder


def test_bench_writes_every_format(bench_run) -> None:
    code, folder = bench_run
    assert code == 0
    for name in ("results.json", "results.csv", "results.md", "throughput.png"):
        assert (folder / name).stat().st_size > 0, name
    results = json.loads((folder / "results.json").read_text())
    assert results["machine"]["cpu"] and results["commit"]
    by_name = {b["backend"]: b for b in results["backends"]}
    ort = by_name["onnxruntime-cpu-fp32"]
    assert ort["parity"]["passed"] and ort["parity"]["top1_agreement"] == 1.0
    for field in ("max_abs", "mean_abs", "p99_abs", "max_rel", "nan", "inf"):
        assert field in ort["parity"]["logits"] and field in ort["parity"]["probs"]
    assert [t["batch"] for t in ort["timing"]] == [1, 3]
    for timing in ort["timing"]:
        assert 0 < timing["p50_ms"] <= timing["p99_ms"]
        assert timing["throughput_pairs_s"] > 0 and timing["runs"] >= 3
        assert timing["rounds"] == len(timing["round_p50_ms"]) == 2
    # The reference backend matches the reference up to batch-size-dependent summation order.
    eager = by_name["torch-eager-cpu"]
    assert eager["parity"]["logits"]["max_rel"] < 1e-5
    # Speed-ups are read from this run's eager timings; CPU rows are held to the GEMM ceiling.
    assert 0 < results["cpu_fp32_gemm_tflops"] < 100
    for backend in (eager, ort):
        for timing in backend["timing"]:
            eager_p50 = next(t["p50_ms"] for t in eager["timing"] if t["batch"] == timing["batch"])
            assert timing["speedup_vs_torch_eager"] == pytest.approx(eager_p50 / timing["p50_ms"])
            assert timing["mfu"] is timing["gpu_torch_peak_mb"] is timing["gpu_device_used_mb"] is None
            assert timing["h2d_ms"] == 0.0
            assert timing["gemm_fraction"] == pytest.approx(timing["achieved_tflops"] / results["cpu_fp32_gemm_tflops"])
            assert timing["process_peak_rss_mb"] > 50


def _quick_run(onnx_file, output) -> list[str]:
    """One backend, batch 1, minimal timing, in this process: for tests about parity and reports."""
    return [
        "--model", "dgla_tiny", "--onnx", str(onnx_file), "--backends", "onnxruntime-cpu-fp32",
        "--batches", "1", "--min-seconds", "0.1", "--min-runs", "2", "--output", str(output), "--in-process",
    ]  # fmt: skip


def test_tampered_onnx_fails_parity_and_exit_code(tiny_onnx, tmp_path) -> None:
    model = onnx.load(str(tiny_onnx["fp32"]))
    fc = next(init for init in model.graph.initializer if list(init.dims) == [7, 64])
    array = onnx.numpy_helper.to_array(fc)
    fc.CopyFrom(onnx.numpy_helper.from_array(array[[1, 0, 3, 2, 5, 4, 6]].copy(), fc.name))
    onnx.save(model, str(tmp_path / "tampered.onnx"))
    argv = _quick_run(tmp_path / "tampered.onnx", tmp_path / "out")
    argv[argv.index("onnxruntime-cpu-fp32")] = "onnxruntime-cpu-fp32,torch-eager-cpu"
    assert main(argv) == EXIT_MISMATCH  # by default, not only with --fail-on-mismatch
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    by_name = {b["backend"]: b for b in results["backends"]}
    failed, eager = by_name["onnxruntime-cpu-fp32"], by_name["torch-eager-cpu"]
    flips = failed["parity"]["flips"]
    assert flips and {"image", "reference_class", "actual_class", "reference_margin", "actual_margin"} <= set(flips[0])
    assert failed["verdict"] == "failed" and "timing" not in failed, "a runtime that failed parity was timed"
    assert eager["verdict"] == "passed" and eager["timing"]
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        assert {row["backend"] for row in csv.DictReader(handle)} == {"torch-eager-cpu"}
    summary = (tmp_path / "out" / "results.md").read_text()
    assert "parity FAILED onnxruntime-cpu-fp32 (not timed, not ranked)" in summary, summary
    assert "recommended (fastest that passed parity), cpu latency: torch-eager-cpu" in summary, summary
    # --time-failed times it, marked, and never ranks it
    assert main([*argv, "--time-failed", "--output", str(tmp_path / "timed")]) == EXIT_MISMATCH
    timed = {b["backend"]: b for b in json.loads((tmp_path / "timed" / "results.json").read_text())["backends"]}
    assert timed["onnxruntime-cpu-fp32"]["timing"] and timed["onnxruntime-cpu-fp32"]["verdict"] == "failed"
    summary = (tmp_path / "timed" / "results.md").read_text()
    assert (
        "(timed anyway, marked)" in summary
        and "recommended (fastest that passed parity), cpu latency: torch-eager-cpu" in summary
    ), summary
    table = [{"backend": "x", "batch": 1, "throughput_pairs_s": 9.0, "parity_passed": False}]
    labels = [line.get_label() for line in throughput_figure(table, "t").axes[0].get_lines()]
    assert labels == ["x (parity FAILED)"], labels


def test_int8_backend_is_judged_by_the_int8_tolerance(tiny_int8, held_out, tmp_path, capsys) -> None:
    argv = _quick_run(tiny_int8["cpu"][0], tmp_path / "out")
    argv[argv.index("--onnx")] = "--onnx-int8"
    argv[argv.index("onnxruntime-cpu-fp32")] = "onnxruntime-cpu-int8"
    assert main(argv) == 2  # its own calibration images (the bundled ones) are refused
    assert "are also calibration images" in " ".join(capsys.readouterr().err.split())
    assert main([*argv, "--images", str(held_out)]) == 0
    backend = json.loads((tmp_path / "out" / "results.json").read_text())["backends"][0]
    assert backend["backend"] == "onnxruntime-cpu-int8"
    parity = backend["parity"]
    assert parity["tolerance"]["min_flip_margin"] == 0.05 and parity["passed"]
    assert 0 < parity["probs"]["max_abs"] <= 0.05, parity["probs"]  # INT8 is not FP32: an error exists
    # an INT8 graph given as the FP32 one is refused, naming the right option
    assert main(_quick_run(tiny_int8["cpu"][0], tmp_path / "bad")) == 2


def test_explained_graphs_have_their_maps_judged_and_drawn(tiny_explained, tiny_onnx, tmp_path, capsys) -> None:
    from PIL import Image

    argv = _quick_run(tiny_explained["fp32"], tmp_path / "out")
    argv[argv.index("onnxruntime-cpu-fp32")] = "torch-eager-cpu,onnxruntime-cpu-fp32,onnxruntime-cpu-fp16"
    argv += ["--onnx-fp16", str(tiny_explained["fp16"]), "--heatmaps", "--fail-on-mismatch"]
    assert main(argv) == 0
    console = capsys.readouterr()
    table = console.out
    assert "…" not in table and "onnxruntime-cpu-fp16 " in table, f"the table cut a figure short:\n{table}"
    raw = [line for line in (console.out + console.err).splitlines() if line.lstrip().startswith("{")]
    assert not raw, f"raw JSON on the console (results.json is for machines): {raw}"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for backend in results["backends"]:
        if backend["backend"] == "torch-eager-cpu":  # runs the model, not the graph: no maps, an empty CSV cell
            assert "maps" not in backend, backend
            continue
        maps = backend["maps"]
        limit = {"fp32": 1e-5, "fp16": 1e-2}[backend["precision"]]  # measured 1.1e-6 and 1.8e-3
        assert maps["passed"] and maps["hottest_agreement"] == 1.0 and maps["top1_max_abs"] < limit, maps
    assert "| maps top-1 max abs | hottest cell |" in (tmp_path / "out" / "results.md").read_text()
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        maps_cells = {row["backend"]: row["maps_top1_max_abs"] for row in csv.DictReader(handle)}
    assert maps_cells["torch-eager-cpu"] == "" and float(maps_cells["onnxruntime-cpu-fp32"]) < 1e-5, maps_cells
    sheets = sorted((tmp_path / "out" / "heatmaps").glob("*.png"))
    assert len(sheets) == len(results["images"]), sheets
    size = get_config("dgla_tiny").architecture.display_size  # the model's finest input: 192 px
    with Image.open(sheets[0]) as sheet:  # the reference, then each runtime, then the colour bar
        assert sheet.size == (3 * size + colour_bar(size).width, size + 22) and sheet.mode == "RGB", sheet.size
    capsys.readouterr()
    # heatmaps need maps: a plain graph is refused before any work, in one line
    assert main([*_quick_run(tiny_onnx["fp32"], tmp_path / "plain"), "--heatmaps"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "exported with explain (--explain)" in errors[0], errors


def test_maps_that_point_elsewhere_fail_parity(tiny_explained, tmp_path) -> None:
    """The maps' own weights permuted: the logits still pass, the maps must not."""
    model = onnx.load(str(tiny_explained["fp32"]))
    weights = next(init for init in model.graph.initializer if list(init.dims) == [7, 64, 1, 1])
    array = onnx.numpy_helper.to_array(weights)
    weights.CopyFrom(onnx.numpy_helper.from_array(array[:, ::-1].copy(), weights.name))
    onnx.save(model, str(tmp_path / "tampered.onnx"))
    assert main([*_quick_run(tmp_path / "tampered.onnx", tmp_path / "out"), "--fail-on-mismatch"]) == EXIT_MISMATCH
    backend = json.loads((tmp_path / "out" / "results.json").read_text())["backends"][0]
    assert backend["parity"]["passed"] and not backend["maps"]["passed"], backend["maps"]
    assert any("top-1 maps differ" in f for f in backend["maps"]["failures"]), backend["maps"]


def test_labels_give_clinical_metrics(tiny_onnx, tmp_path, images, capsys) -> None:
    rows = ["image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"]
    for i, (name, _) in enumerate(images):
        onehot = ["0"] * 7
        onehot[i % 7] = "1"
        rows.append(",".join([f"{name}.jpg" if i % 2 else name, *onehot]))  # with and without extensions
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")  # as Excel writes it
    code = main([*_quick_run(tiny_onnx["fp32"], tmp_path / "out"), "--labels", str(tmp_path / "labels.csv")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    reference, backend = results["reference_metrics"], results["backends"][0]
    metrics, delta = backend["metrics"], backend["metrics_delta"]
    assert metrics["images"] == reference["images"] == len(images)
    assert next(iter(metrics["sensitivity"])) == "MEL"
    for key in ("accuracy", "weighted_f1", "balanced_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
        assert delta[key] == pytest.approx(metrics[key] - reference[key])
    assert delta["sensitivity"]["MEL"] == pytest.approx(metrics["sensitivity"]["MEL"] - reference["sensitivity"]["MEL"])
    # 6 images over 7 classes: VASC has no ground-truth image, so its sensitivity is undefined, not 0
    assert metrics["sensitivity"]["VASC"] is None and metrics["classes_absent_from_ground_truth"] == ["VASC"]
    assert delta["sensitivity"]["VASC"] is None
    # the scores reach the terminal, results.md and the CSV, not only results.json
    terminal = capsys.readouterr().out
    assert "scores against" in terminal and "balanced acc." in terminal
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert f"| onnxruntime-cpu-fp32 | {metrics['accuracy']:.3f} | {metrics['balanced_accuracy']:.3f} |" in markdown
    with open(tmp_path / "out" / "results.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["accuracy"]) == pytest.approx(metrics["accuracy"]) and row["sensitivity_VASC"] == ""
    # per-image probabilities in the ISIC submission layout, for the reference and the backend
    for name in ("reference-torch-fp32", "onnxruntime-cpu-fp32"):
        lines = (tmp_path / "out" / "predictions" / f"{name}.csv").read_text().splitlines()
        assert lines[0] == "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC" and len(lines) == 1 + len(images)
        assert abs(sum(float(v) for v in lines[1].split(",")[1:]) - 1) < 1e-5


def test_unavailable_backends_say_why() -> None:
    import torch

    from dgla_export.benchmarking.catalogue import catalogue

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    # This machine: no NVIDIA driver, no TensorRT; torch a CPU build (CI's wheel) or a CUDA build
    # (what pip takes on Python 3.12 and 3.13 here).
    known = {b.name: b for b in catalogue(["cpu", "cuda"], Path("e.plan"))}
    graphs = dict.fromkeys(("fp32", "fp16", "int8"), Path("g.onnx"))
    expected = "CPU build" if torch.version.cuda is None else "no NVIDIA driver"
    assert expected in (known["torch-eager-cuda"].unavailable(graphs, None) or "")
    for provider in ("cuda", "tensorrt"):
        assert "no NVIDIA driver" in (known[f"onnxruntime-{provider}-fp32"].unavailable(graphs, None) or "")
    assert "TensorRT is not installed" in (known["tensorrt-engine"].unavailable(graphs, Path("e.plan")) or "")
    assert "no --onnx-fp16 given" in (known["onnxruntime-cpu-fp16"].unavailable({}, None) or "")


def test_openvino_on_the_cpu_beside_onnxruntime_and_a_recommendation(tiny_onnx, tiny_int8, held_out, tmp_path) -> None:
    """By default every CPU runtime runs on the graphs given; BF16 only where the CPU has it (else
    the record says why, and no BF16 ceiling is invented); the run names the fastest that passed."""
    from dgla_export.benchmarking.ceilings import emulated

    pytest.importorskip("openvino")
    from dgla_export.machine import native_bf16

    argv = [
        "--model", "dgla_tiny", "--onnx", str(tiny_onnx["fp32"]), "--onnx-int8", str(tiny_int8["cpu"][0]),
        "--batches", "1,4", "--min-seconds", "0.2", "--min-runs", "3", "--rounds", "1", "--output", str(tmp_path),
        "--images", str(held_out),
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    by_name = {b["backend"]: b for b in results["backends"]}
    for name in (
        "openvino-cpu-fp32",
        "openvino-cpu-fp32-throughput",
        "openvino-cpu-int8",
        "openvino-cpu-int8-throughput",
    ):
        record = by_name[name]
        assert record["verdict"] == "passed", record
        assert record["inference_precision"] == "f32" and record["openvino"], record
        assert [t["batch"] for t in record["timing"]] == [1, 4]
    assert by_name["openvino-cpu-fp32"]["parity"]["logits"]["max_rel"] < 1e-4
    bf16 = by_name["openvino-cpu-bf16"]
    if native_bf16():
        assert bf16["inference_precision"] == "bf16" and results["cpu_bf16_gemm_tflops"] > 0
    else:
        assert "no native BF16" in bf16["skipped"] and "timing" not in bf16
        assert "no native BF16" in results["cpu_bf16_gemm_skipped"] and "cpu_bf16_gemm_tflops" not in results
        assert "torch-autocast-bf16-cpu" not in by_name, "emulated BF16 ran by default"
    # INT8 rows are held to the INT8 ceiling where the CPU computes INT8 natively (VNNI, AMX), else to
    # none (an emulated rate is none); FP32 rows to the FP32 one, the fastest of every library's kernel
    int8 = [t["gemm_fraction"] for t in by_name["openvino-cpu-int8"]["timing"]]
    if emulated("int8"):
        assert all(f is None for f in int8) and "no native INT8" in results["cpu_ceilings_skipped"]["int8"]
    else:
        ceiling = results["cpu_ceilings"]["int8"]
        assert ceiling["kernel"] == "onnxruntime" and all(f > 0 for f in int8), (ceiling, int8)
    assert all(t["gemm_fraction"] > 0 for t in by_name["openvino-cpu-fp32"]["timing"])
    fp32 = results["cpu_ceilings"]["fp32"]
    assert fp32["tflops"] == max(fp32["rates"].values()) == results["cpu_fp32_gemm_tflops"], fp32
    assert {"numpy", "torch", "onnxruntime", "openvino"} == set(fp32["rates"]), fp32
    recommended = {r["goal"]: r for r in results["recommendation"]}
    passed = [b for b in results["backends"] if b["verdict"] == "passed" and b.get("timing")]
    best = min(passed, key=lambda b: b["timing"][0]["p50_ms"])
    assert recommended["latency"]["backend"] == best["backend"]
    ort = by_name["onnxruntime-cpu-fp32"]["timing"][0]["p50_ms"]
    assert recommended["latency"]["speedup_vs_onnxruntime_fp32"] == pytest.approx(ort / best["timing"][0]["p50_ms"])
    assert f"cpu latency: {best['backend']}" in (tmp_path / "results.md").read_text()
