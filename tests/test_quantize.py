"""INT8 Q/DQ export on the tiny model: MAC accounting, calibration record, sensitivity-guided
mixed precision, the Q/DQ flavour of each target, and accuracy against PyTorch FP32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dgla_export.artefacts.graph import graph_macs, graph_metadata, inspect_graph
from dgla_export.export.onnx_export import check_contract
from dgla_export.models.cost import measure_cost
from dgla_export.quantize import calibration_digest, quantization_units, search_mixed_precision
from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner
from dgla_export.validation import validate_runner

pytestmark = pytest.mark.slow  # run by make test, not by make test-fast


def test_graph_macs_match_the_model_cost(tiny, tiny_onnx) -> None:
    """The INT8 share's denominator, counted on the graph, equals the module-level count."""
    macs = graph_macs(onnx.load(str(tiny_onnx["fp32"])))
    expected = measure_cost(tiny).macs
    assert abs(sum(macs.values()) - expected) <= 1e-6 * expected, (sum(macs.values()), expected)


def test_units_cover_every_conv_and_gemm(tiny_onnx) -> None:
    graph = onnx.load(str(tiny_onnx["fp32"]))
    units = quantization_units(graph)
    nodes = [n for names in units.values() for n in names]
    assert sorted(nodes) == sorted(n.name for n in graph.graph.node if n.op_type in ("Conv", "Gemm"))
    assert {"stem", "fusion", "fc", "layer1.0.conv", "layer1.0.attention", "layer4.0.attention"} <= set(units)
    # the stem is its convolution (once per branch); the dual-branch fusion convolutions are a unit of their own
    weights = {n.name: n.input[1] for n in graph.graph.node if n.op_type in ("Conv", "Gemm")}
    assert {weights[n] for n in units["stem"]} == {"model.conv1.weight"}, [weights[n] for n in units["stem"]]
    assert sorted(weights[n] for n in units["fusion"]) == [f"model.fuse.{i}.weight" for i in range(3)]


def test_search_bisects_to_the_smallest_passing_count() -> None:
    calls = []

    def passes(kept: int) -> bool:
        calls.append(kept)
        return kept >= 11

    assert search_mixed_precision(passes, 34, lambda _: None) == 11
    assert len(calls) <= 7  # 0, then log2(34) bisection steps
    assert search_mixed_precision(lambda k: True, 34, lambda _: None) == 0
    assert search_mixed_precision(lambda k: False, 34, lambda _: None) == 34


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_int8_graph_records_its_calibration_and_keeps_the_contract(tiny, tiny_int8, images, target) -> None:
    path, report = tiny_int8[target]
    graph = onnx.load(str(path))
    check_contract(graph, tiny.config)  # names, shapes, one symbolic batch, TensorRT-parsable ops
    ops = inspect_graph(graph).op_counts
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    metadata = graph_metadata(graph)
    assert metadata["precision"] == "int8" and metadata["int8_target"] == target
    record = json.loads(metadata["quantization"])
    assert record["calibration_count"] == len(images) == 6
    assert record["calibration_digest"] == calibration_digest(images) == report.calibration_digest
    assert record["calibration_method"] == "minmax"
    assert record["kept_out"] == list(report.kept_out)
    # kept-out units are the most sensitive ones, in order
    order = list(report.sensitivity)
    assert list(report.kept_out) == order[: len(report.kept_out)]
    assert sorted(report.sensitivity.values(), reverse=True) == list(report.sensitivity.values())
    assert 0 < report.int8_mac_share <= 1 and report.quantized_nodes > 0
    # the share is what the graph holds: every quantized conv reads a DequantizeLinear weight
    dq_outputs = {n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
    quantized = [n for n in graph.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in dq_outputs]
    assert len(quantized) == report.quantized_nodes


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_int8_flavour_matches_the_target(tiny_int8, target) -> None:
    graph = onnx.load(str(tiny_int8[target][0]))
    initializers = {t.name: t for t in graph.graph.initializer}
    zero_points = [initializers[n.input[2]] for n in graph.graph.node if n.op_type == "QuantizeLinear"]
    dtypes = {onnx.helper.tensor_dtype_to_np_dtype(z.data_type).name for z in zero_points}
    if target == "tensorrt":  # signed symmetric activations: TensorRT takes no other INT8
        assert dtypes == {"int8"}
        assert all(not numpy_helper.to_array(z).any() for z in zero_points)
    else:
        assert dtypes == {"uint8"}
    weight_zero_points = [
        numpy_helper.to_array(initializers[n.input[2]])
        for n in graph.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in initializers and len(n.input) > 2
    ]
    assert weight_zero_points and all(not z.any() for z in weight_zero_points)  # symmetric weights


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_int8_meets_the_config_tolerance_against_pytorch(tiny, tiny_int8, images, target) -> None:
    path, report = tiny_int8[target]
    with OnnxRuntimeRunner(path, "cpu", "int8") as runner:
        validation = validate_runner(runner, tiny, images, batches=(1, 4))
    for check in validation.checks:
        c = check.comparison
        assert c.passed, (target, c.failures, c.probs.max_abs)
        assert c.probs.max_abs <= tiny.config.tolerances["int8"].probs_abs
    assert validation.position_spread < 1e-4  # batch-independent, as the float graphs
    measured = validation.checks[0].comparison.probs.max_abs  # vs PyTorch; the search compared with ORT FP32
    assert report.calibration_check["probs_max_abs"] == pytest.approx(measured, abs=1e-5)


def test_flips_below_the_margin_are_listed_not_counted() -> None:
    from dgla_export.compare import compare_logits
    from dgla_export.models.config import Tolerance

    reference = np.array([[1.0, 0.98, 0.0], [3.0, 0.0, 0.0]])
    actual = np.array([[0.98, 1.0, 0.0], [3.0, 0.0, 0.0]])  # image a flips; its margin is ~0.004
    kwargs = dict(image_names=["a", "b"], class_names=["x", "y", "z"])
    loose = Tolerance(logits_rel=1.0, probs_abs=1.0, min_flip_margin=0.05)
    result = compare_logits(reference, actual, tolerance=loose, **kwargs)
    assert result.passed and [f.image for f in result.flips] == ["a"]
    strict = Tolerance(logits_rel=1.0, probs_abs=1.0)
    assert "1 top-1 flips" in compare_logits(reference, actual, tolerance=strict, **kwargs).failures[0]


def test_cli_int8_export_reports_what_it_kept_out(tmp_path, held_out, capsys) -> None:
    from dgla_export.tools.export import main

    output, report = tmp_path / "int8.onnx", tmp_path / "int8.json"
    argv = ["onnx", "--model", "dgla_tiny", "--precision", "int8", "--batch", "1:8", "--output", str(output)]
    assert main([*argv, "--report", str(report), "--images", str(held_out)]) == 0
    printed = capsys.readouterr()
    err = " ".join((printed.err + printed.out).split())  # rich wraps lines
    assert "not dermoscopy" in err and "of MACs in INT8" in err and "validation passed" in err
    record = json.loads(report.read_text())
    assert record["passed"] and record["precision"] == "int8"
    quantization = record["quantization"]
    assert len(quantization["calibration_images"]) == 6 and 0 < quantization["int8_mac_share"] <= 1
    assert not set(record["images"]) & set(quantization["calibration_images"]), record["images"]
    recorded = json.loads(graph_metadata(onnx.load(str(output)))["quantization"])
    assert recorded["calibration_count"] == 6 and len(recorded["calibration_pixels"]) == 6
    # validating it again on its own calibration images (the bundled ones) is refused, naming them
    assert main(["validate", str(output)]) == 2
    assert "are also calibration images" in " ".join(capsys.readouterr().err.split())
    # with both sets left at the bundled default the six photos are split in two (seed stated): three
    # calibration images are too few for the untrained tiny model, and its held-out half says so (exit 3)
    split = [
        "onnx",
        "--model",
        "dgla_tiny",
        "--precision",
        "int8",
        "--batch",
        "1:8",
        "--output",
        str(tmp_path / "s.onnx"),
    ]
    assert main([*split, "--report", str(tmp_path / "s.json")]) == 3
    assert "split in two (seed 2018)" in " ".join(capsys.readouterr().err.split())
    halves = json.loads((tmp_path / "s.json").read_text())
    assert len(halves["images"]) == len(halves["quantization"]["calibration_images"]) == 3
    assert not set(halves["images"]) & set(halves["quantization"]["calibration_images"])
    assert (tmp_path / "s.failed.onnx").is_file() and not (tmp_path / "s.onnx").exists()
    # a target no INT8 graph can meet: exit 3, nothing written
    impossible = ["onnx", "--model", "dgla_tiny", "--precision", "int8", "--output", str(tmp_path / "no.onnx")]
    assert main([*impossible, "--accuracy-target", "1e-7"]) == 3
    assert "INT8 FAILED" in " ".join(capsys.readouterr().err.split()) and not (tmp_path / "no.onnx").exists()
    assert not list(tmp_path.glob(".no.onnx*"))  # no staging folder left behind


def test_cli_int8_options_need_int8(tmp_path, capsys) -> None:
    from dgla_export.tools.export import main

    argv = ["onnx", "--model", "dgla_tiny", "--output", str(tmp_path / "x.onnx")]
    assert main([*argv, "--calibration-count", "4"]) == 2
    assert "need --precision int8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--precision", "int8", "--accuracy-target", "0"])
    assert exit_info.value.code == 2 and "probability in (0, 1]" in capsys.readouterr().err
