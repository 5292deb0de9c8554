"""OpenVINO through the runner protocol: the same graphs as ONNX Runtime, the same answers, BF16
refused where the CPU would only pretend, and the throughput hint splitting a batch over requests."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dgla_export.preprocess import preprocess_batch
from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner

pytest.importorskip("openvino")

from dgla_export.runtimes.openvino import OpenVINORunner, cpu_capabilities, openvino_problem


@pytest.fixture(scope="module")
def feed(tiny, images):
    return dict(zip(tiny.config.input_names, preprocess_batch([im for _, im in images[:5]], tiny.config), strict=True))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("hint", ["latency", "throughput"])
def test_openvino_fp32_equals_onnxruntime(tiny_onnx, feed, hint) -> None:
    with OpenVINORunner(tiny_onnx["fp32"], "fp32", hint) as ov, OnnxRuntimeRunner(tiny_onnx["fp32"]) as ort:
        got, want = ov.infer(feed), ort.infer(feed)
        assert set(got) == set(want) == {"logits", "probs"}
        assert got["logits"].shape == want["logits"].shape == (5, want["probs"].shape[1])
        err = _rel(got["logits"], want["logits"])
        assert err < 1e-4, f"OpenVINO {hint} vs ONNX Runtime, FP32 logits: relative error {err:.2e}"
        details = ov.details()
    # FP32 means FP32: never the plugin's BF16 default on a CPU that has BF16
    assert details["inference_precision"] == "f32", details
    assert details["performance_hint"] == hint
    if hint == "throughput":
        assert details["infer_requests"] >= 1
    else:
        assert details["infer_requests"] == 1


def test_throughput_splits_a_batch_and_keeps_the_order(tiny_onnx, feed) -> None:
    """Each image's answer lands at its own row whatever request computed it."""
    with OpenVINORunner(tiny_onnx["fp32"], "fp32", "throughput") as runner:
        runner.requests = runner.requests + [runner.compiled.create_infer_request() for _ in range(2)]
        together = runner.infer(feed)["logits"]
        one_by_one = np.concatenate(
            [runner.infer({k: v[i : i + 1] for k, v in feed.items()})["logits"] for i in range(5)]
        )
    err = _rel(together, one_by_one)
    assert err < 1e-5, f"batch of 5 over 3 requests vs one at a time: {err:.2e}"


def test_openvino_runs_the_int8_graph(tiny_int8, tiny_onnx, feed) -> None:
    path, _ = tiny_int8["cpu"]
    with OpenVINORunner(path, "int8") as ov, OnnxRuntimeRunner(tiny_onnx["fp32"]) as ort:
        got, want = ov.infer(feed)["probs"], ort.infer(feed)["probs"]
    err = float(np.abs(got - want).max())
    assert err < 0.05, f"OpenVINO INT8 vs FP32 probabilities: {err:.3f} (the int8 tolerance is 0.05)"
    assert err > 0, "the INT8 graph ran without quantisation"


def test_bf16_only_where_the_cpu_computes_it() -> None:
    problem = openvino_problem("bf16")
    if "BF16" in cpu_capabilities():
        assert problem is None
    else:
        assert problem is not None and "no native BF16" in problem and "\n" not in problem, problem
        with pytest.raises(RuntimeError, match="no native BF16"):
            OpenVINORunner("unused.onnx", "bf16").load()
    assert openvino_problem("fp16") is not None


def test_openvino_is_imported_without_its_usage_telemetry(tmp_path) -> None:
    """Importing openvino imports its model converter, which sends a usage event and writes a client
    ID under ~/intel. In processes of their own, with homes of their own and no CI switches: the
    premise (a plain import writes the ID and sends, here to a recorder put in its sender's place,
    so the test sends nothing), then the package's import, which hides the telemetry package."""
    recorder = (
        "import openvino_telemetry; "
        "openvino_telemetry.Telemetry.send_event = lambda self, *a, **k: print('EVENT', *a[:3]); "
    )
    scripts = {
        "plain": recorder + "import openvino",
        "ours": "import sys; from dgla_export.runtimes.openvino import import_openvino; import_openvino(); "
        "import openvino.tools.ovc; print('hidden' if sys.modules['openvino_telemetry'] is None else 'present')",
    }
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV", "TF_BUILD", "JENKINS_URL")}
    runs = {}
    for name, script in scripts.items():
        home = tmp_path / name
        home.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env={**env, "HOME": str(home)}
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = (done.stdout.split(), sorted(p.name for p in (home / "intel").glob("*")))
    print(runs)
    assert "EVENT" in runs["plain"][0] and runs["plain"][1], runs  # the premise: it sends, and writes an ID
    assert runs["ours"] == (["hidden"], []), runs
