"""Runtimes that execute an exported model: ONNX Runtime and TensorRT (both imported lazily)."""
