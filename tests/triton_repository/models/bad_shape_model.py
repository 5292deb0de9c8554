"""Test-only Triton Python model: answers a flat vector of 3 probabilities (the wrong shape)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        probs = np.full((3,), 1 / 3, dtype=np.float32)
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probs", probs)]) for _ in requests]
