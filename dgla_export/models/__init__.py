"""The DGLA-ResNet50 family: config records, builders, weights."""

from dgla_export.models.config import SPEC_VERSION, ModelConfig, Tolerance
from dgla_export.models.registry import (
    UnknownModelError,
    create_model,
    get_config,
    list_models,
    register_model,
)
from dgla_export.models.resnet import ResNet

__all__ = [
    "SPEC_VERSION",
    "ModelConfig",
    "ResNet",
    "Tolerance",
    "UnknownModelError",
    "create_model",
    "get_config",
    "list_models",
    "register_model",
]
