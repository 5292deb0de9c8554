"""Runtimes behind one protocol (:class:`dgla_export.runtimes.base.Runner`): ONNX Runtime, OpenVINO,
TensorRT engines and PyTorch itself, each imported lazily by the module that runs it."""

# What can validate an exported graph: ONNX Runtime (on a provider), or OpenVINO on the CPU (in BF16
# where the CPU computes it natively)
GRAPH_RUNTIMES = ("onnxruntime", "openvino", "openvino-bf16")
