"""--runtime openvino on a real Triton server (dgla-serve's Python-backend stand-in for Triton's
OpenVINO backend): an FP32 and an INT8 model in one repository, each answering what OpenVINO
answers locally on the same tensors, through the ensemble's own preprocessing."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from PIL import Image

from dgla_export.triton.client import classify
from triton_repository.conftest import models_of

pytestmark = pytest.mark.slow

if importlib.util.find_spec("pytriton") is None or importlib.util.find_spec("openvino") is None:
    pytest.skip("needs Triton and OpenVINO (pip install 'dgla-export[serve,openvino]')", allow_module_level=True)

TOLERANCE = 1e-5  # served probabilities vs local OpenVINO's on the same tensors


def test_openvino_models_are_served_as_openvino_runs_them(
    triton_server, tiny, tiny_onnx, tiny_int8, images, tmp_path
) -> None:
    """ov_fp32 and ov_int8 of the shared server (tests/triton_repository/conftest.py)."""
    from dgla_export.preprocess import Preprocessing
    from dgla_export.runtimes.openvino import OpenVINORunner, cpu_capabilities

    graphs = {"fp32": tiny_onnx["fp32"], "int8": tiny_int8["cpu"][0]}
    paths = []
    for name, image in images[:4]:
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    recipe = Preprocessing.of(tiny.config, "fast")
    feed = dict(zip(tiny.config.input_names, recipe.batch([recipe.load(p) for p in paths]), strict=True))
    output = triton_server.output
    states = dict(re.findall(r"^model\s+(\S+) v1: (\S+)", output, flags=re.M))
    mine = {model for p in graphs for model in models_of(f"ov_{p}", "openvino")}
    assert {name: states.get(name) for name in mine} == dict.fromkeys(mine, "READY"), states
    for precision in graphs:  # each wrote its five models, no more
        name = f"ov_{precision}"
        assert triton_server.written[name] == models_of(name, "openvino")
    assert re.search(r"^model\s+ov_fp32_openvino v1: READY \(OpenVINO, CPU \(Python backend\)", output, re.M), output
    for precision, graph in graphs.items():
        # what Triton's OpenVINO backend does: BF16 where OpenVINO says the CPU has it (its default
        # there), as the stand-in decides it; the INT8 graph as INT8
        local_precision = "bf16" if precision == "fp32" and "BF16" in cpu_capabilities() else precision
        with OpenVINORunner(graph, local_precision) as runner:  # type: ignore[arg-type]
            local = runner.infer(feed)["probs"]
        served = classify(paths, url=triton_server.grpc_url, model=f"ov_{precision}", send="image")
        got = np.stack([p.probs for p in served])
        err = float(np.abs(got - local).max())
        assert err < TOLERANCE, f"ov_{precision}: served vs local OpenVINO probabilities differ by {err:.2e}"
