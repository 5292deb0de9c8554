"""A real KServe-v2-protocol server on loopback for the client tests (KServe's ModelServer).

Serves the exported ONNX with ONNX Runtime as ``dgla_onnx`` (tensors in) and ``dgla`` (encoded
image bytes in, preprocessed with the package's module, as Triton's ensemble does), plus
``dgla_slow`` (answers after 5 s) and ``dgla_bad_shape`` (answers a flat 3-class vector).
Run: python v2_server.py MODEL.onnx HTTP_PORT GRPC_PORT
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import onnx
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import decode_image, preprocess_batch
from dgla_export.runtimes.onnxruntime import create_session


class OnnxModel(Model):
    def __init__(self, name: str, path: str, takes_bytes: bool, delay: float = 0.0, classes: int | None = None) -> None:
        super().__init__(name)
        self.delay, self.classes = delay, classes  # a slow model, a model answering the wrong shape
        self.session = create_session(path, "cpu")
        metadata = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        self.config = ModelConfig.from_dict(json.loads(metadata["config"]))
        self.takes_bytes = takes_bytes
        self.ready = True

    def get_input_types(self) -> list[dict]:
        if self.takes_bytes:
            return [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}]
        return [
            {"name": name, "datatype": "FP32", "shape": [-1, 3, size, size]}
            for name, size in self.config.input_sizes.items()
        ]

    def get_output_types(self) -> list[dict]:
        return [{"name": n, "datatype": "FP32", "shape": [-1, self.config.num_classes]} for n in ("logits", "probs")]

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        tensors = {i.name: i.as_numpy() for i in payload.inputs}
        if self.takes_bytes:
            images = [decode_image(bytes(b)) for b in tensors["image"].reshape(-1)]
            tensors = {
                n: t.numpy()
                for n, t in zip(self.config.input_names, preprocess_batch(images, self.config), strict=True)
            }
        logits, probs = self.session.run(["logits", "probs"], tensors)
        time.sleep(self.delay)
        if self.classes is not None:
            logits, probs = logits[:, : self.classes], probs[:, : self.classes].reshape(-1)
        outputs = []
        for name, value in (("logits", logits), ("probs", probs)):
            output = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            output.set_data_from_numpy(np.ascontiguousarray(value, dtype=np.float32), binary_data=True)
            outputs.append(output)
        # raw_output_contents, as Triton answers gRPC (tritonclient reads only those)
        return InferResponse(
            response_id=payload.id or "0", model_name=self.name, infer_outputs=outputs, use_binary_outputs=True
        )


if __name__ == "__main__":
    path, http_port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    models = [
        OnnxModel("dgla_onnx", path, takes_bytes=False),
        OnnxModel("dgla", path, takes_bytes=True),
        OnnxModel("dgla_slow", path, takes_bytes=True, delay=5.0),
        OnnxModel("dgla_bad_shape", path, takes_bytes=True, classes=3),
    ]
    ModelServer(http_port=http_port, grpc_port=grpc_port, enable_latency_logging=False).start(models)
