"""Triton Python-backend model ``dgla_preprocess``: encoded image bytes -> the model's inputs.

``dgla-export triton`` copies this file to ``dgla_preprocess/1/model.py`` and the package's
``preprocess.py`` and ``decode.py`` beside it (the Python backend puts that folder on the import
path), so the server runs the very same decoder and preprocessing with numpy and Pillow (and
pillow-heif, pydicom where installed): no torch, no dgla-export. A request whose image cannot be
decoded, or is over the model parameters ``max_bytes`` or ``max_pixels`` (refused before
decoding), gets an error naming the image; the next request is answered normally. Nothing of the
image (metadata, bytes) is logged. The parameter ``method`` (fast or exact) picks the path.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend
from preprocess import ImageError, Preprocessing  # copied beside this file


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        self.recipe = Preprocessing.from_parameters({k: v["string_value"] for k, v in parameters.items()})

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
        images = []
        for index, blob in enumerate(blobs):
            try:
                images.append(self.recipe.decode(bytes(blob)))
            except ImageError as err:
                where = f"image {index} of {len(blobs)}: " if len(blobs) > 1 else ""
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{where}{err}"))
        try:
            batch = self.recipe.batch(images)
        except ImageError as err:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err)))
        outputs = [
            pb_utils.Tensor(name, np.ascontiguousarray(array, dtype=np.float32))
            for name, array in zip(self.recipe.input_sizes, batch, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)
