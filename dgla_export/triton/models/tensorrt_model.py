"""Triton Python-backend model that runs a TensorRT engine through this package's runner.

``dgla-serve`` uses it on a GPU machine with TensorRT, in place of the ``tensorrt_plan``
platform that the pip-installed Triton lacks. The runner checks the engine against its manifest
(``model.plan.json``, written beside it by ``dgla-export triton``) before it is deserialised;
batching is the ONNX Runtime stand-in's (requests handed over together run as one engine call).
"""

from __future__ import annotations

from pathlib import Path

from dgla_export.runtimes.tensorrt import TensorRTRunner
from dgla_export.triton.models.onnxruntime_model import BatchedModel


class TritonPythonModel(BatchedModel):
    def initialize(self, args: dict) -> None:
        import torch

        torch.cuda.set_device(int(args["model_instance_device_id"]))
        self.runner = TensorRTRunner(Path(args["model_repository"]) / args["model_version"] / "model.plan")
        self.runner.load()
        self.inputs, self.outputs = self.runner.input_names, self.runner.output_names
