"""Full-size dgla_resnet50: the exported FP32 graph equals the independent reference, and its
class activation maps equal captum's Grad-CAM of the PyTorch model.

Bounded for CI on 2 cores: ~20 s demo calibration, ~60 s export, ~10 s of inference, ~30 s of Grad-CAM.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reference
from inputs import torch_inputs

from dgla_export import create_model
from dgla_export.artefacts.graph import inspect_graph
from dgla_export.compare import compare_maps
from dgla_export.export.onnx_export import ExportOptions, export_onnx
from dgla_export.models.identity import identify
from dgla_export.runtimes.onnxruntime import create_session
from dgla_export.validation import reference_maps

pytestmark = pytest.mark.slow  # run by make test, not by make test-fast


@pytest.mark.full
def test_full_size_fp32_export_matches_reference_and_gradcam(tmp_path, images) -> None:
    model = create_model("dgla_resnet50", weights="demo")
    path = tmp_path / "dgla_resnet50.onnx"
    options = ExportOptions(max_batch=8, explain=True)
    report = export_onnx(model, path, options=options, checkpoint=identify("demo", model))
    print(f"full-size graph: {report.node_count} nodes, {report.op_counts}")
    assert not inspect_graph(onnx.load(str(path))).problems
    inputs = torch_inputs(images[:3], model.config)
    session = create_session(path, "cpu")
    feed = {"image_224": inputs[0].numpy(), "image_448": inputs[1].numpy()}
    actual, cams = session.run(["logits", "cam"], feed)
    expected = reference.forward(model.state_dict(), *inputs).numpy()
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    print(f"ONNX Runtime vs spec reference, full size: max rel error {err:.2e}")
    assert err < 1e-4
    assert (actual.argmax(1) == expected.argmax(1)).all()
    # every class's map against captum's Grad-CAM on two real images: measured 9.5e-6 (top-1) and
    # 3.8e-5 (all classes) on six; the FP32 tolerance is 1e-4
    gradcam = reference_maps(model, [x[:2] for x in inputs])
    top1 = expected[:2].argmax(1)
    maps = compare_maps(gradcam, cams[:2], top1, max_abs=model.config.tolerances["fp32"].cam_abs)
    print(f"full-size maps vs captum Grad-CAM: {maps}")
    assert maps.passed and maps.all_max_abs < 1e-4, maps


@pytest.mark.full
def test_full_size_arl_cnn50_exported_and_validated(tmp_path, images) -> None:
    """ARL-CNN50 at full size through the API: FP32 and FP16, each validated on the bundled photos,
    the FP32 graph also against the independent reference of its spec (docs/architectures.md)."""
    import dgla_export as dx

    model = create_model("arl_cnn50", weights="demo")
    for precision in ("fp32", "fp16"):
        path = tmp_path / f"arl_cnn50_{precision}.onnx"
        result = dx.export_onnx(path, model, precision=precision, batch=(1, 4))
        worst = max(check.comparison.probs.max_abs for check in result.validation.checks)
        print(f"arl_cnn50 {precision}: {result.graph.node_count} nodes, max prob error {worst:.2e}")
        assert result.passed, result.validation.failures
        assert result.graph.metadata["spec_version"] == "arl-spec/1"
    (x,) = torch_inputs(images[:3], model.config)
    actual = create_session(tmp_path / "arl_cnn50_fp32.onnx", "cpu").run(["logits"], {"image_224": x.numpy()})[0]
    expected = reference.forward(model.state_dict(), x).numpy()
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    print(f"ONNX Runtime vs the ARL reference, full size: max rel error {err:.2e}")
    assert err < 1e-4
