"""The DGLA-ResNet50 family: config records, builders, weights.

Config records and the registry need no torch; what builds a network loads it on first use, so
`import dgla_export.models.config` stays cheap (a Triton client or server process never pays torch's
start-up).
"""

from __future__ import annotations

import importlib
from typing import Any

from dgla_export.models.config import SPEC_VERSION, ModelConfig, Tolerance
from dgla_export.models.registry import UnknownModelError, create_model, get_config, list_models, register_model

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


def __getattr__(name: str) -> Any:
    if name == "ResNet":
        return importlib.import_module("dgla_export.models.resnet").ResNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
