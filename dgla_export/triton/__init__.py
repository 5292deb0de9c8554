"""Triton Inference Server: model repository writer (tritonclient is imported lazily)."""
