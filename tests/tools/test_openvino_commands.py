"""`--runtime openvino` as a user types it: an explained graph validated by OpenVINO (logits and
maps against the PyTorch model and captum's Grad-CAM), and the refusals, each one line and exit 2."""

from __future__ import annotations

import json

import pytest

from dgla_export.errors import EXIT_USAGE
from dgla_export.tools.export import main

pytest.importorskip("openvino")


def test_openvino_validates_an_explained_graph(tiny_explained, tmp_path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = [
        "validate",
        str(tiny_explained["fp32"]),
        "--runtime",
        "openvino",
        "--batches",
        "1,3",
        "--report",
        str(report),
    ]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    found = json.loads(report.read_text())
    assert found["runtime"] == "openvino-cpu-fp32" and found["precision"] == "fp32", found["runtime"]
    assert found["verdict"] == "passed"
    checks = found["checks"]
    assert [c["batch"] for c in checks] == [1, 3]
    worst = max(c["comparison"]["logits"]["max_rel"] for c in checks)
    assert worst < 1e-4, f"OpenVINO FP32 vs PyTorch: {worst:.2e}"
    assert all(c["maps"] is not None and not c["maps"]["failures"] for c in checks), "the maps were not compared"


def test_refusals_are_one_line(tiny_onnx, capsys) -> None:
    from dgla_export.machine import native_bf16

    cases = [
        (["--runtime", "openvino", "--device", "cuda"], "runs on the CPU"),
        (["--runtime", "openvino-bf16", "--model", "dgla_tiny"], None if native_bf16() else "no native BF16"),
    ]
    for extra, message in cases:
        if message is None:
            continue  # BF16 runs on this CPU: not a refusal
        code = main(["validate", str(tiny_onnx["fp32"]), *extra])
        err = capsys.readouterr().err
        assert code == EXIT_USAGE, err
        assert message in err and "Traceback" not in err, err
        assert len([line for line in err.splitlines() if "error" in line]) == 1, err
    code = main(["validate", str(tiny_onnx["fp16"]), "--runtime", "openvino"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "not an fp16 graph" in err, err
