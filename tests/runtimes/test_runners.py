"""One runner protocol: ONNX Runtime and PyTorch agree through it, and infer = fetch(run(stage))."""

from __future__ import annotations

import numpy as np
import pytest

from dgla_export.preprocess import preprocess_batch
from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner
from dgla_export.runtimes.torch import TorchRunner


@pytest.fixture(scope="module")
def feed(tiny, images):
    return dict(zip(tiny.config.input_names, preprocess_batch([im for _, im in images[:3]], tiny.config), strict=True))


def test_onnxruntime_and_torch_agree_through_the_protocol(tiny, tiny_onnx, feed) -> None:
    with OnnxRuntimeRunner(tiny_onnx["fp32"]) as ort, TorchRunner(tiny) as eager:
        assert (ort.name, ort.precision, ort.device) == ("onnxruntime-cpu-fp32", "fp32", "cpu")
        assert eager.name == "torch-eager-cpu"
        graph, reference = ort.infer(feed), eager.infer(feed)
        assert set(graph) == {"logits", "probs"} and set(reference) == {"logits"}
        err = float(np.abs(graph["logits"] - reference["logits"]).max() / np.abs(reference["logits"]).max())
        assert err < 1e-5, f"ONNX Runtime vs PyTorch through the runners: {err:.2e}"
        # the bench times run() between one stage() and the fetch(): the same numbers as infer()
        np.testing.assert_array_equal(ort.fetch(ort.run(ort.stage(feed)))["logits"], graph["logits"])


def test_channels_last_matches_eager(tiny, feed) -> None:
    with TorchRunner(tiny, "channels_last") as runner:
        logits = runner.infer(feed)["logits"]
    with TorchRunner(tiny) as eager:
        np.testing.assert_allclose(logits, eager.infer(feed)["logits"], rtol=1e-4, atol=1e-4)


def test_a_runner_says_why_it_cannot_run_before_it_is_tried(tiny, tiny_onnx) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert "no NVIDIA driver" in (OnnxRuntimeRunner(tiny_onnx["fp32"], "cuda").unavailable() or "")
    assert "emulated" in (TorchRunner(tiny, "autocast-fp16").unavailable() or "")
    with pytest.raises(ValueError, match="torch variant"):
        TorchRunner(tiny, "jit")
