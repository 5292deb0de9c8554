"""dgla-export: DGLA-ResNet50 from a PyTorch checkpoint to verified ONNX, TensorRT and Triton.

The pipeline as functions (each validates what it makes and returns a typed result)::

    import dgla_export as dx

    model = dx.create_model("dgla_resnet50", weights="demo")
    result = dx.export_onnx("dgla.onnx", model, precision="fp16")
    report = dx.validate("dgla.onnx", images="lesions/")
    dx.write_triton_repository("dgla.onnx", "triton-repo")
    with dx.serve("triton-repo") as server:
        ...

``import dgla_export`` loads nothing heavy: torch, ONNX Runtime, TensorRT and tritonclient are
imported by the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

from dgla_export._version import __version__

_EXPORTS = {
    "dgla_export.models": ("SPEC_VERSION", "ModelConfig", "Tolerance", "create_model", "get_config", "list_models"),
    "dgla_export.api": (
        "Acceptance",
        "DeploymentResult",
        "EngineOptions",
        "EngineResult",
        "ExportResult",
        "ImageOptions",
        "Int8Options",
        "RepositoryResult",
        "ServerEndpoints",
        "ValidationFailedError",
        "WeightOptions",
        "activate_version",
        "bench",
        "build_engine",
        "debug",
        "export_onnx",
        "load_model",
        "serve",
        "validate",
        "write_kubernetes",
        "write_triton_repository",
    ),
    "dgla_export.errors": ("MismatchError", "UserError"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
