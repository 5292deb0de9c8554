"""Runtimes behind one protocol (:class:`dgla_export.runtimes.base.Runner`): ONNX Runtime, TensorRT
engines and PyTorch itself, each imported lazily by the module that runs it."""
