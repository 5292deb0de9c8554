"""Test-only Triton Python model: answers like dgla, but only after 3 s (a slow server)."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        time.sleep(3.0)
        responses = []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().shape[0]
            probs = np.full((batch, 7), 1 / 7, dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probs", probs)]))
        return responses
