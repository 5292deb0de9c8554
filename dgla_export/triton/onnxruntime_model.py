"""Triton Python-backend model that runs an ONNX graph with ONNX Runtime.

``dgla-serve`` uses it in its own serving copy of a repository, in place of the
``onnxruntime_onnx`` platform that the pip-installed Triton lacks: same model name, inputs,
outputs, dynamic batching and instance groups, same runtime. The repository that
``dgla-export triton`` writes (and the official container serves) is not changed.

Requests that the dynamic batcher hands over together run as one call (``tensorrt_model.py``
reuses that). Imports numpy and onnxruntime only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


def _providers(config: dict, kind: str, device_id: int) -> list:
    if kind != "GPU":
        return ["CPUExecutionProvider"]
    providers: list = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    listed = config.get("parameters", {}).get("gpu_execution_accelerator", {}).get("string_value", "[]")
    for accelerator in json.loads(listed):  # the original config's, moved here by dgla-serve
        if accelerator.get("name") == "tensorrt":
            mode = accelerator.get("parameters", {}).get("precision_mode")
            options = {
                "device_id": device_id,
                "trt_fp16_enable": mode in ("FP16", "INT8"),
                "trt_int8_enable": mode == "INT8",
            }
            providers.insert(0, ("TensorrtExecutionProvider", options))
    return providers


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # On a CPU the cores are shared with the preprocessing instances: threads that spin while
        # they wait take cycles from them, and under load throughput collapsed (README, measured).
        # Spinning can lower a lone request's latency on dedicated cores; the model parameter chooses.
        default = "0" if args["model_instance_kind"] == "CPU" else "1"
        spinning = config.get("parameters", {}).get("intra_op_allow_spinning", {}).get("string_value", default)
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        providers = _providers(config, args["model_instance_kind"], int(args["model_instance_device_id"]))
        self.session = ort.InferenceSession(str(folder / "model.onnx"), sess_options=options, providers=providers)
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if self.session.get_providers()[0] != wanted:
            raise RuntimeError(f"ONNX Runtime could not load {wanted} (loaded {self.session.get_providers()})")
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list) -> list:
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs} for r in requests
        ]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        merged = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
        try:
            results = self._run(merged)
        except Exception as err:  # one bad batch must not take the instance down
            error = pb_utils.TritonError(f"{type(self).__name__} failed: {err}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(n, r[start : start + size]) for n, r in zip(self.outputs, results, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, feed)
