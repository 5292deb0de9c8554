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


def test_variants_combine_and_say_what_they_compute(tiny, feed) -> None:
    from dgla_export.runtimes.torch import variant_precision

    assert [variant_precision(v) for v in ("eager", "tf32", "autocast-fp16+channels_last+cuda-graph")] == [
        "fp32",
        "tf32",
        "fp16",
    ]
    for bad, why in (
        ("autocast-fp16+tf32", "at most one"),
        ("compile+cuda-graph", "do not combine"),
        ("eager+channels_last", "one of"),
        ("channels_last+channels_last", "one of"),
    ):
        with pytest.raises(ValueError, match=why):
            TorchRunner(tiny, bad)
    # a combination runs as its parts: BF16 arithmetic in channels_last, within BF16's tolerance
    with TorchRunner(tiny, "autocast-bf16+channels_last") as runner, TorchRunner(tiny) as eager:
        assert runner.precision == "bf16"
        got, want = runner.infer(feed)["logits"], eager.infer(feed)["logits"]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert 1e-6 < err < tiny.config.tolerances["bf16"].logits_rel, f"BF16 channels_last vs FP32: {err:.2e}"


def test_gpu_only_variants_say_why_on_a_cpu(tiny) -> None:
    assert "tensor cores" in (TorchRunner(tiny, "tf32").unavailable() or "")
    assert "need a GPU" in (TorchRunner(tiny, "autocast-fp16+channels_last+cuda-graph").unavailable() or "")


def test_fp32_math_restores_what_it_found() -> None:
    import torch

    from dgla_export.runtimes.torch import fp32_math

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with fp32_math(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with fp32_math(False):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
