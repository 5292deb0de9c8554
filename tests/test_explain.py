"""Explanations: the graph's class activation maps are Grad-CAM at layer4 (the identity, in float64),
they match an independent Grad-CAM (captum) in every precision, and overlays show them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from dgla_export.artefacts.graph import graph_metadata, inspect_graph
from dgla_export.compare import normalise_maps
from dgla_export.preprocess import preprocess_batch
from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner
from dgla_export.validation import validate_runner


def _autograd_gradcam(model, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Grad-CAM at layer4 by hand: weights = each channel's gradient averaged over positions."""
    captured = {}
    hook = model.layer4.register_forward_hook(lambda _m, _i, output: captured.__setitem__("a", output))
    try:
        logits = model(*inputs)
        maps = []
        for c in range(logits.shape[1]):
            (grad,) = torch.autograd.grad(logits[:, c].sum(), captured["a"], retain_graph=True)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            maps.append(torch.relu((weights * captured["a"]).sum(dim=1)))
    finally:
        hook.remove()
    return torch.stack(maps, dim=1)


def test_the_graphs_maps_are_gradcam_at_layer4_in_float64(tiny, images) -> None:
    """The identity behind the export: relu(fc.weight . layer4) = (h*w) x Grad-CAM, exactly."""
    import copy

    model = copy.deepcopy(tiny).double()
    inputs = tuple(torch.from_numpy(a).double() for a in preprocess_batch([im for _, im in images], tiny.config))
    gradcam = _autograd_gradcam(model, inputs).detach()
    with torch.no_grad():
        features = model.features(*inputs)
        cams = model.class_activation_maps(features).double()
    h, w = features.shape[-2:]
    err = float((cams - gradcam * (h * w)).abs().max() / cams.abs().max())
    assert err < 1e-12, f"graph maps vs autograd Grad-CAM x (h*w): relative {err:.2e}"


def test_without_explain_the_graph_is_unchanged(tiny_onnx, tiny_explained) -> None:
    plain = inspect_graph(onnx.load(str(tiny_onnx["fp32"])))
    explained = inspect_graph(onnx.load(str(tiny_explained["fp32"])))
    assert [o.name for o in plain.outputs] == ["logits", "probs"] and "explain" not in plain.metadata
    assert [o.name for o in explained.outputs] == ["logits", "probs", "cam", "cam_top1"]
    assert explained.outputs[2].shape == ("batch", 7, 3, 3)  # the tiny model's layer4 is 3x3
    assert explained.outputs[3].shape == ("batch", 3, 3)
    added = {op: explained.op_counts.get(op, 0) - plain.op_counts.get(op, 0) for op in explained.op_counts}
    added = {op: n for op, n in added.items() if n}
    # the maps' 1x1 convolution and ReLU; then the top-1 class's map picked out by a one-hot mask
    computing = ("Conv", "Relu", "ArgMax", "Equal", "Mul", "ReduceSum")
    assert {op: added.pop(op, 0) for op in computing} == dict.fromkeys(computing, 1), added
    assert set(added) <= {"Unsqueeze", "Reshape", "Cast"}, added
    assert all(n > 0 for n in added.values()), f"explain removed nodes from the graph: {added}"
    record = json.loads(graph_metadata(onnx.load(str(tiny_explained["fp32"])))["explain"])
    assert record["outputs"] == {"cam": ["batch", 7, 3, 3], "cam_top1": ["batch", 3, 3]}
    assert record["layer"] == "layer4"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_precision_matches_captums_gradcam(tiny, tiny_explained, images, precision) -> None:
    """Measured here: FP32 within 1.1e-6 (normalised maps), FP16 within 1.8e-3; the config's
    tolerances (1e-4, 5e-2) and the hottest cell of every image's top-1 map."""
    with OnnxRuntimeRunner(tiny_explained[precision], "cpu", precision) as runner:
        report = validate_runner(runner, tiny, images, batches=(1, 4))
    for check in report.checks:
        assert check.maps is not None and check.maps.passed, check.maps
        assert check.maps.hottest_agreement == 1.0
    limit = {"fp32": 1e-5, "fp16": 1e-2}[precision]  # a margin over the measured error, far below a wrong map
    assert report.checks[0].maps.top1_max_abs < limit, report.checks[0].maps


@pytest.mark.slow
def test_an_int8_export_keeps_its_maps_near_gradcam(tmp_path, held_out) -> None:
    """The product path (the unit search, then validation with the maps, on images it was not
    calibrated on): the maps' own convolution stays FP32, outside Q/DQ."""
    from dgla_export.api import export_onnx
    from dgla_export.quantize import explanation_nodes

    with pytest.warns(UserWarning, match="calibrating INT8 on scikit-image's bundled photos"):
        result = export_onnx(
            tmp_path / "int8.onnx", model="dgla_tiny", precision="int8", explain=True, batch=(1, 8), images=held_out
        )
    assert result.validation is not None and result.validation.passed, result.validation
    maps = result.validation.checks[0].maps
    assert maps is not None and 1e-4 < maps.top1_max_abs < 0.1, maps  # INT8 moves the maps, within the tolerance
    graph = onnx.load(str(result.path))
    producers = {output: node for node in graph.graph.node for output in node.output}
    nodes = {node.name: node for node in graph.graph.node}
    explanation = [nodes[name] for name in explanation_nodes(graph)]
    assert sorted(node.op_type for node in explanation) == ["Conv", "Relu"]
    for node in explanation:
        fed = [producers[i].op_type for i in node.input if i in producers]
        assert "DequantizeLinear" not in fed[1:], f"{node.name} is quantized: inputs from {fed}"


def test_normalised_maps_are_per_image_and_class() -> None:
    maps = np.zeros((2, 3, 2, 2))
    maps[0, 1] = [[1.0, 3.0], [2.0, 5.0]]
    out = normalise_maps(maps)
    np.testing.assert_allclose(out[0, 1], [[0.0, 0.5], [0.25, 1.0]])
    assert not out[1].any()  # flat maps (no evidence for the class) become 0, not NaN


def test_an_overlay_shows_the_hot_cell_and_leaves_cold_skin_clear(images) -> None:
    from dgla_export.overlay import colour_bar, overlay, side_by_side

    grey = np.full((300, 400, 3), 128, np.uint8)
    cam = np.zeros((3, 3))
    cam[0, 2] = 1.0  # hottest: top right
    picture = overlay(grey, cam, "MEL 0.83")
    assert picture.size == (448, 448) and picture.mode == "RGB"
    pixels = np.asarray(picture, dtype=float)
    hot, cold = pixels[60:100, 360:400].mean(), pixels[360:400, 40:80]
    assert hot > 128 + 30, hot  # inferno: the hot cell is bright (measured 165 on grey 128)
    assert (cold == 128).all(), np.unique(cold)  # where the map is coldest, the photo shows unchanged
    # the label: white text on a black box, a 22 px font on a 448 px panel (1/20 of the side): its
    # capitals measured 15 px high (Pillow's bitmap font, before: about 7)
    rows = np.flatnonzero((pixels[:60, :200] == 255).all(axis=2).any(axis=1))
    assert 13 <= rows.max() - rows.min() + 1 <= 22, rows
    bar = colour_bar(448)
    sheet = side_by_side([("reference", picture), ("onnxruntime-cpu-fp16", overlay(images[0][1], cam, "NV 0.5")),
                          ("scale", bar)])  # fmt: skip
    assert sheet.size == (896 + bar.width, 448 + 22)
    strip = np.asarray(bar, dtype=float)[:, 6:20]  # the colour bar: hottest on top, clear (white) at 0
    top, middle, bottom = strip[8].mean(axis=0), strip[224].mean(axis=0), strip[-8].mean(axis=0)
    assert (bottom > 250).all() and top[2] < 210 < top[0] and middle.mean() < 225, (top, middle, bottom)
