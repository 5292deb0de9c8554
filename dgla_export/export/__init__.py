"""Writing artefacts: export-ready PyTorch modules, the ONNX graph, the TensorRT engine.

Writers only: checking an artefact against the PyTorch model runs it, which is the runtimes'
and validation's business (``dgla_export.validation``; the API composes them).
"""
