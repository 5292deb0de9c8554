"""Triton Python-backend model ``dgla_guard``: what the DALI step must not decode is refused first.

In a repository written with ``--preprocess dali``, the ensemble runs this first: it reads each
image's header (with the package's ``decode.py``, copied beside this file) and answers with an
error naming the image and the fix an image over the limits (model parameters ``max_bytes`` and
``max_pixels``), and one the DALI pipeline would read differently from the package's decoder (an
ICC profile other than sRGB, an EXIF orientation, alpha, CMYK, more than 8 bits, HEIC, AVIF,
DICOM): never a silently different answer. That request fails alone, at once. Admitted images get
``admitted`` = 1.0, which the DALI pipeline consumes (so it waits for this step). An image whose
header cannot be read is admitted: the decoder then says what is wrong with it.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend
from decode import ImageError, Limits, dali_problem  # copied beside this file


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = {k: int(v["string_value"]) for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.limits = Limits(**{k: v for k, v in parameters.items() if k in ("max_pixels", "max_bytes")})

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
        for index, blob in enumerate(blobs):
            where = f"image {index} of {len(blobs)}: " if len(blobs) > 1 else ""
            data = blob.tobytes()
            try:
                self.limits.check_bytes(len(data))
                problem = dali_problem(data, self.limits)
            except ImageError as err:
                problem = f"{err} (model parameters max_pixels, max_bytes)"
            if problem:
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{where}{problem}"))
        admitted = np.ones((len(blobs), 1), dtype=np.float32)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("admitted", admitted)])
