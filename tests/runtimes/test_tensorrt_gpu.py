"""End to end on a machine with TensorRT and a GPU: build the tiny model's engine, run, compare.

Skipped (with the reason) wherever TensorRT or a CUDA GPU is missing, as on CI.
"""

from __future__ import annotations

import pytest
import torch

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tiny_engine_matches_pytorch(tiny, tiny_onnx, images, tmp_path, precision) -> None:
    from inputs import torch_inputs

    from dgla_export.artefacts.manifest import BatchProfile
    from dgla_export.compare import compare_logits
    from dgla_export.export.tensorrt_build import build_engine
    from dgla_export.runtimes.tensorrt import TensorRTRunner

    engine = tmp_path / f"tiny_{precision}.plan"
    manifest = build_engine(
        tiny_onnx[precision], engine, precision=precision, profile=BatchProfile(1, 4, 8), progress=print
    )
    if precision == "fp16":
        assert manifest.layer_dtypes.get("Half", 0) > 0
    runner = TensorRTRunner(engine)
    inputs = torch_inputs(images, tiny.config)
    with torch.no_grad():
        reference = tiny(*inputs).numpy()
    feed = {name: x.cuda() for name, x in zip(runner.input_names, inputs, strict=True)}
    for _ in range(2):  # second call replays the CUDA graph
        logits = runner.infer(feed)["logits"].cpu().numpy()
    comparison = compare_logits(
        reference,
        logits,
        tolerance=tiny.config.tolerances[precision],
        image_names=[n for n, _ in images],
        class_names=tiny.config.class_names,
    )
    assert comparison.passed, comparison.failures
    with pytest.raises(ValueError, match="outside"):
        runner.infer({name: x.repeat(2, 1, 1, 1) for name, x in feed.items()})  # 12 > max 8
