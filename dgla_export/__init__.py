"""dgla-export: DGLA-ResNet50 from a PyTorch checkpoint to verified ONNX, TensorRT and Triton.

Importing this package loads torch only; ONNX Runtime, TensorRT and tritonclient are imported
by the commands that need them.
"""

from dgla_export.models import (
    SPEC_VERSION,
    ModelConfig,
    create_model,
    get_config,
    list_models,
)

__version__ = "0.1.0"
__all__ = ["SPEC_VERSION", "ModelConfig", "__version__", "create_model", "get_config", "list_models"]
