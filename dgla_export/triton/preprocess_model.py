"""Triton Python-backend model ``dgla_preprocess``: encoded image bytes -> the two inputs.

Copied into ``dgla_preprocess/1/model.py`` by ``dgla-export triton``. It runs the package's own
preprocessing (dgla_export.preprocess), so the server's Python environment needs dgla-export
installed (see scripts/triton_server.sh).
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import decode_image, preprocess_batch


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        self.config = ModelConfig.from_dict(json.loads(parameters["dgla_config"]["string_value"]))

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            blobs = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            batch = preprocess_batch([decode_image(bytes(blob)) for blob in blobs], self.config)
            outputs = [
                pb_utils.Tensor(name, tensor.numpy().astype(np.float32))
                for name, tensor in zip(self.config.input_names, batch, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
