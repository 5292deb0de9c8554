"""Triton Python-backend model that runs an ONNX graph through this package's ONNX Runtime runner.

``dgla-serve`` uses it in its own serving copy of a repository, in place of the
``onnxruntime_onnx`` platform that the pip-installed Triton lacks: same model name, inputs,
outputs, dynamic batching and instance groups, same runtime. The repository that
``dgla-export triton`` writes (and the official container serves) is not changed.

Requests that the dynamic batcher hands over together run as one call (:class:`BatchedModel`,
which the TensorRT stand-in shares). Loads numpy, onnxruntime and the package's runtime modules:
no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

from dgla_export.runtimes.base import Runner
from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner


class BatchedModel:
    """Merges the requests of one ``execute`` into one batch for ``self.runner`` and splits the answers."""

    runner: Runner
    inputs: list[str]
    outputs: list[str]

    def execute(self, requests: list) -> list:
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs} for r in requests
        ]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        merged = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
        try:
            results = self.runner.infer(merged)
        except Exception as err:  # one bad batch must not take the instance down
            error = pb_utils.TritonError(f"{self.runner.name} failed: {err}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, results[name][start : start + size]) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses


def _provider(config: dict, kind: str) -> tuple[str, dict[str, Any]]:
    """The provider and its options: the CPU, or CUDA, or the TensorRT accelerator the original
    config asked for (moved into a parameter by dgla-serve)."""
    if kind != "GPU":
        return "cpu", {}
    listed = config.get("parameters", {}).get("gpu_execution_accelerator", {}).get("string_value", "[]")
    for accelerator in json.loads(listed):
        if accelerator.get("name") == "tensorrt":
            mode = accelerator.get("parameters", {}).get("precision_mode")
            return "tensorrt", {"trt_fp16_enable": mode in ("FP16", "INT8"), "trt_int8_enable": mode == "INT8"}
    return "cuda", {}


class TritonPythonModel(BatchedModel):
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        kind = args["model_instance_kind"]
        provider, options = _provider(config, kind)
        # On a CPU the cores are shared with the preprocessing instances: threads that spin while
        # they wait take cycles from them, and under load throughput collapsed (measured). Spinning
        # can lower a lone request's latency on dedicated cores; the model parameter chooses.
        default = "0" if kind == "CPU" else "1"
        spinning = config.get("parameters", {}).get("intra_op_allow_spinning", {}).get("string_value", default)
        self.runner = OnnxRuntimeRunner(
            Path(args["model_repository"]) / args["model_version"] / "model.onnx",
            provider,  # type: ignore[arg-type]
            spinning=spinning == "1",
            device_id=int(args["model_instance_device_id"]),
            options=options,
        )
        self.runner.load()
        self.inputs, self.outputs = self.runner.inputs, self.runner.outputs
