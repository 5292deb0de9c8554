"""Triton Python-backend model ``dgla_guard``: refuses image bombs before the DALI step decodes them.

In a repository written with ``--preprocess dali``, the ensemble runs this first: it reads each
image's header (with the package's ``preprocess.py``, copied beside this file) and answers an
image announcing more pixels than the model parameter ``max_pixels`` with an error naming its
size and the limit, so that the request fails alone, at once, and nothing decodes it. Admitted
images get ``admitted`` = 1.0, which the DALI pipeline consumes (so it waits for this step). An
image whose header cannot be read is admitted: the decoder then says what is wrong with it.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend
from preprocess import DEFAULT_MAX_PIXELS, ImageError, image_size  # copied beside this file


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        self.max_pixels = int(parameters.get("max_pixels", {}).get("string_value", DEFAULT_MAX_PIXELS))

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
        for index, blob in enumerate(blobs):
            try:
                width, height = image_size(blob.tobytes())
            except ImageError:
                continue
            if width * height > self.max_pixels:
                where = f"image {index} of {len(blobs)}: " if len(blobs) > 1 else ""
                message = (
                    f"{where}image of {width}x{height} pixels ({width * height / 1e6:.1f} MP) exceeds the limit of "
                    f"{self.max_pixels / 1e6:g} MP (model parameter max_pixels)"
                )
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        admitted = np.ones((len(blobs), 1), dtype=np.float32)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("admitted", admitted)])
