"""dgla-export debug: a failing graph bisected to the layer where it departs from the FP32 graph."""

from __future__ import annotations

import subprocess

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import dgla_export as dx
from dgla_export.errors import EXIT_MISMATCH, EXIT_OK, EXIT_USAGE
from dgla_export.tools.export import main as export_main

ISLAND = "layer1.0.gla.ha.query.weight"  # a query projection: an FP32 island of every FP16 graph


def remove_island(source, destination, weight: str) -> str:
    """The FP16 graph with the FP32 island of ``weight``'s convolution removed, as a careless FP16
    conversion would: the conv runs in FP16 on the FP16 activations, then its output is widened for
    the FP32 attention that follows. Returns the conv's node name."""
    model = onnx.load(str(source))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    conv = next(n for n in graph.node if n.op_type == "Conv" and n.input[1] == f"model.{weight}")
    widening = producers[conv.input[0]]
    assert widening.op_type == "Cast", "the island's input is not a Cast to FP32"
    with np.errstate(over="ignore"):  # weights beyond FP16's range become Inf, as such a conversion makes them
        half = numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float16)
    graph.initializer.append(numpy_helper.from_array(half, f"{conv.input[1]}_fp16"))
    conv.input[0], conv.input[1] = widening.input[0], f"{conv.input[1]}_fp16"
    widened = f"{conv.output[0]}_fp32"
    for node in graph.node:
        if node is not conv:
            node.input[:] = [widened if x == conv.output[0] else x for x in node.input]
    position = list(graph.node).index(conv) + 1
    graph.node.insert(position, helper.make_node("Cast", [conv.output[0]], [widened], to=TensorProto.FLOAT))
    for info in [v for v in graph.value_info if v.name == conv.output[0]]:
        graph.value_info.remove(info)
    onnx.save(model, str(destination))
    return conv.name


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory):
    """(model, FP32 graph, FP16 graph): a tiny model whose query projection outputs exceed FP16's
    range, which is exactly what the FP32 islands exist for."""
    from dgla_export.export.onnx_export import ExportOptions, export_onnx
    from dgla_export.models.identity import identify

    model = dx.create_model("dgla_tiny", weights="demo")
    with torch.no_grad():
        model.get_parameter(ISLAND).mul_(1e6)
    folder = tmp_path_factory.mktemp("localise")
    graphs = {}
    for precision in ("fp32", "fp16"):
        graphs[precision] = folder / f"{precision}.onnx"
        options = ExportOptions(precision=precision, max_batch=2)
        export_onnx(model, graphs[precision], options=options, checkpoint=identify(None, model))
    return model, graphs["fp32"], graphs["fp16"]


@pytest.mark.slow
def test_an_fp16_graph_without_one_island_is_bisected_to_it(overflowing, tmp_path, capsys) -> None:
    model, fp32, fp16 = overflowing
    kept = dx.validate(fp16, model, batches=[1])
    assert kept.passed, f"with its islands the FP16 graph must pass: {kept.failures}"
    broken = tmp_path / "broken_fp16.onnx"
    island = remove_island(fp16, broken, ISLAND)
    failing = dx.validate(broken, model, batches=[1])
    assert not failing.passed and any("non-finite" in f for f in failing.failures), failing.failures
    capsys.readouterr()
    argv = ["debug", str(broken), "--reference", str(fp32), "--output", str(tmp_path / "where")]
    assert export_main(argv) == EXIT_MISMATCH
    printed = capsys.readouterr()
    out = " ".join((printed.out + printed.err).split())  # as read, whatever the console's wrapping
    assert f"(Conv node {island}): 2304 NaN" in out, out
    report = dx.debug(broken, fp32)
    first = report.first_failure
    assert first is not None and first.node == island and first.op == "Conv" and first.non_finite, report
    assert report.failing_images, "the images that fail were not found"
    folder = tmp_path / "where"
    assert {p.name for p in folder.iterdir()} >= {"inputs.json", "golden.json", "report.json", "reproduce.sh"}
    # the one-line script reproduces the failure alone: Polygraphy compares the tensor with the golden one
    done = subprocess.run(["sh", str(folder / "reproduce.sh")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and first.name in done.stdout + done.stderr, done.stdout[-2000:]


@pytest.mark.slow
def test_a_graph_within_tolerance_names_no_layer(tiny_onnx, capsys) -> None:
    report = dx.debug(tiny_onnx["fp16"], tiny_onnx["fp32"])
    assert report.first_failure is None and report.compared > 100, report.summary()
    worst = report.worst[0]
    assert 0 < worst.max_rel < report.bound, worst  # FP16 is not FP32: an error exists, within the bound
    assert export_main(["debug", str(tiny_onnx["fp16"]), "--reference", str(tiny_onnx["fp32"])]) == EXIT_OK


def test_debug_needs_a_reference_or_another_provider(tiny_onnx, capsys) -> None:
    assert export_main(["debug", str(tiny_onnx["fp16"])]) == EXIT_USAGE
    assert "give the FP32 graph to compare with (--reference" in capsys.readouterr().err
    assert export_main(["debug", str(tiny_onnx["fp32"]), "--reference", str(tiny_onnx["fp16"])]) == EXIT_USAGE
    assert "is an fp16 graph; give the FP32 graph" in capsys.readouterr().err


def test_a_tensor_name_with_a_line_break_stays_inside_the_comment(tmp_path) -> None:
    """reproduce.sh's first lines name the failing tensors; a name is the graph author's text, and a
    line break in it must not end the comment: the script below runs no command it names."""
    from dgla_export.localise import shell_comment

    marker = tmp_path / "ran"
    summary = f"first bad tensor: /layer1/conv\ntouch {marker}\nnext: /fc\r\ny"
    comment = shell_comment(summary)
    assert all(line.startswith("# ") for line in comment.split("\n")), comment
    script = tmp_path / "reproduce.sh"
    script.write_text(f"#!/bin/sh\n{comment}\ntrue\n")
    subprocess.run(["sh", str(script)], check=True)
    assert not marker.exists(), "a line of the comment ran as a command"
    premise = tmp_path / "premise.sh"  # the same text written as one comment line, as before, does run
    premise.write_text(f"#!/bin/sh\n# {summary}\ntrue\n")
    subprocess.run(["sh", str(premise)], check=True)
    assert marker.exists(), "the test's premise: a raw line break ends a shell comment"
