"""Triton Python-backend model that runs an ONNX graph through this package's OpenVINO runner.

``dgla-serve`` uses it in place of Triton's ``openvino`` backend, which the pip-installed Triton
lacks: same model name, inputs, outputs, batching and instances, same runtime, the same parameters
read as that backend reads them (PERFORMANCE_HINT, HINT_BF16). That backend has no parameter that
asks for FP32, so where the CPU has native BF16 OpenVINO's CPU plugin computes in BF16 by default;
the stand-in does what the backend would, and HINT_BF16 on a CPU without BF16 is refused at load
(the backend would run FP32 without a word). Batching is the ONNX Runtime stand-in's.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from dgla_export.runtimes.openvino import OpenVINORunner, cpu_capabilities, openvino_problem
from dgla_export.triton.models.onnxruntime_model import BatchedModel


def _setting(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default).lower()


class TritonPythonModel(BatchedModel):
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        graph_precision = props.get("precision", "fp32")
        asked = _setting(config, "HINT_BF16", "no") == "yes"
        if asked:
            problem = openvino_problem("bf16")
            if problem:
                raise RuntimeError(f"{config['name']}: HINT_BF16 is set, but {problem}")
        bf16 = asked or "BF16" in cpu_capabilities()  # OpenVINO's own default on such a CPU
        precision = "bf16" if bf16 and graph_precision == "fp32" else graph_precision
        hint = _setting(config, "PERFORMANCE_HINT", "latency")
        self.runner = OpenVINORunner(path, precision, hint)  # type: ignore[arg-type]
        self.runner.load()
        self.inputs, self.outputs = self.runner.inputs, self.runner.outputs
