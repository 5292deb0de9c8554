"""Triton Python-backend model that runs the DALI preprocessing pipeline.

``dgla-serve`` uses it in its serving copy of a repository written with ``--preprocess dali``,
in place of the ``dali`` backend that the pip-installed Triton lacks: same name, inputs and
outputs. It builds the pipeline from ``dali_pipeline.py`` (written beside ``model.dali`` by
``dgla-export triton``) and the recipe in the model's parameters: on a GPU instance with the
mixed decoder, on a CPU instance with DALI's CPU operators. Requests that the batcher hands over
together run as one pipeline call.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend
from dali_pipeline import INPUT, build, run  # copied beside this file


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        recipe = json.loads(config["parameters"]["preprocessing"]["string_value"])
        gpu = args["model_instance_kind"] == "GPU"
        self.outputs = [output["name"] for output in config["output"]]
        self.pipeline = build(
            recipe["input_sizes"],
            recipe["mean"],
            recipe["std"],
            batch_size=max(1, int(config["max_batch_size"])),
            device="gpu" if gpu else "cpu",
            device_id=int(args["model_instance_device_id"]) if gpu else None,
        )
        self.pipeline.build()

    def execute(self, requests: list) -> list:
        # ``admitted`` is 1.0 for every image that reaches this step (the guard refused the others)
        batches = [pb_utils.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        blobs = [blob.tobytes() for batch in batches for blob in batch]
        try:
            results = run(self.pipeline, blobs)
        except Exception as err:  # an undecodable image fails its batch, not the instance
            error = pb_utils.TritonError(f"DALI preprocessing failed: {err}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            pairs = zip(self.outputs, results, strict=True)
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(result[start:stop])) for name, result in pairs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
