"""Full-size dgla_resnet50: the exported FP32 graph equals the independent reference.

Bounded for CI on 2 cores: ~20 s demo calibration, ~60 s export, ~10 s of inference.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reference
from inputs import torch_inputs

from dgla_export import create_model
from dgla_export.artefacts.graph import inspect_graph
from dgla_export.export.onnx_export import ExportOptions, export_onnx
from dgla_export.models.weights import state_dict_sha256
from dgla_export.runtimes.onnxruntime import create_session

pytestmark = pytest.mark.slow  # run by make test, not by make test-fast


@pytest.mark.full
def test_full_size_fp32_export_matches_reference(tmp_path, images) -> None:
    model = create_model("dgla_resnet50", weights="demo")
    path = tmp_path / "dgla_resnet50.onnx"
    report = export_onnx(model, path, options=ExportOptions(max_batch=8), checkpoint_sha256=state_dict_sha256(model))
    print(f"full-size graph: {report.node_count} nodes, {report.op_counts}")
    assert not inspect_graph(onnx.load(str(path))).problems
    inputs = torch_inputs(images[:3], model.config)
    session = create_session(path, "cpu")
    actual = session.run(["logits"], {"image_224": inputs[0].numpy(), "image_448": inputs[1].numpy()})[0]
    expected = reference.forward(model.state_dict(), *inputs).numpy()
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    print(f"ONNX Runtime vs spec reference, full size: max rel error {err:.2e}")
    assert err < 1e-4
    assert (actual.argmax(1) == expected.argmax(1)).all()
