"""Triton Python-backend model that runs a TensorRT engine with this package's runner.

``dgla-serve`` uses it on a GPU machine with TensorRT, in place of the ``tensorrt_plan``
platform that the pip-installed Triton lacks. The engine is checked against its manifest
(``model.plan.json``, written beside it by ``dgla-export triton``) before it is deserialised.
Batching is the ONNX Runtime model's: requests handed over together run as one engine call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dgla_export.runtimes.tensorrt import TensorRTRunner
from dgla_export.triton.onnxruntime_model import TritonPythonModel as _BatchedModel


class TritonPythonModel(_BatchedModel):
    def initialize(self, args: dict) -> None:
        torch.cuda.set_device(int(args["model_instance_device_id"]))
        self.runner = TensorRTRunner(Path(args["model_repository"]) / args["model_version"] / "model.plan")
        self.inputs, self.outputs = self.runner.input_names, self.runner.output_names

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self.runner.infer({name: torch.from_numpy(array).cuda() for name, array in feed.items()})
        return [outputs[name].cpu().numpy() for name in self.outputs]
