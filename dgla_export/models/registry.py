"""Model registry: thin typed builders behind ``create_model(name, ...)``, as in timm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dgla_export.errors import UserError
from dgla_export.models.config import ModelConfig

if TYPE_CHECKING:
    from dgla_export.models.resnet import ResNet

__all__ = ["UnknownModelError", "create_model", "get_config", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., ModelConfig]] = {}


class UnknownModelError(UserError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_model(fn: Callable[..., ModelConfig]) -> Callable[..., ModelConfig]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The config a registered name builds, with builder arguments overridden."""
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name](**overrides)


def create_model(
    name: str,
    *,
    num_classes: int = 7,
    weights: str | Path | None = None,
    **cfg: Any,
) -> ResNet:
    """Build a registered model in eval mode.

    ``weights``: ``"random"`` or None (random init), ``"demo"`` (deterministic untrained demo weights,
    see :mod:`dgla_export.models.weights`) or a checkpoint path (.pt/.pth/.safetensors): the
    spellings of ``--weights`` and ``export_onnx(weights=)``.
    ``cfg`` overrides config fields: widths, depths, stem_width, input sizes, ...
    """
    from dgla_export.models import weights as weights_module
    from dgla_export.models.resnet import build_network

    config = get_config(name, num_classes=num_classes, **cfg)
    model = build_network(config)
    if weights is None or str(weights) == "random":
        return model
    if str(weights) == "demo":
        return weights_module.apply_demo_weights(model)
    weights_module.load_weights(model, weights_module.read_checkpoint(weights))
    return model


@register_model
def resnet50(**cfg: Any) -> ModelConfig:
    """Baseline ResNet50 (torchvision bottleneck), one 224 input."""
    return ModelConfig(name="resnet50", block="bottleneck", dual_input=False, **cfg)


@register_model
def dbi_resnet50(**cfg: Any) -> ModelConfig:
    """ResNet50 with the dual-branch 224 + 448 input."""
    return ModelConfig(name="dbi_resnet50", block="bottleneck", dual_input=True, **cfg)


@register_model
def gla_resnet50(**cfg: Any) -> ModelConfig:
    """ResNet50 with GLA bottlenecks, one 224 input."""
    return ModelConfig(name="gla_resnet50", block="gla", dual_input=False, **cfg)


@register_model
def dgla_resnet50(**cfg: Any) -> ModelConfig:
    """DGLA-ResNet50: GLA bottlenecks and the dual-branch input (the paper's model)."""
    return ModelConfig(name="dgla_resnet50", block="gla", dual_input=True, **cfg)


@register_model
def arl_cnn50(**cfg: Any) -> ModelConfig:
    """ARL-CNN50 (Zhang et al., IEEE TMI 2019): ResNet50 with attention residual learning blocks, one 224 input."""
    return ModelConfig(name="arl_cnn50", block="arl", dual_input=False, **cfg)


TINY = {
    "depths": (1, 2, 2, 1),
    "widths": (8, 16, 16, 16),
    "stem_width": 16,
    "input_size": 96,
    "aux_input_size": 192,
}


@register_model
def dgla_tiny(**cfg: Any) -> ModelConfig:
    """DGLA with tiny widths and 96 + 192 inputs (layer4 runs at an odd 3x3): for tests."""
    return ModelConfig(name="dgla_tiny", block="gla", dual_input=True, **{**TINY, **cfg})


@register_model
def gla_tiny(**cfg: Any) -> ModelConfig:
    """Single-input GLA network of the tiny size: for tests."""
    return ModelConfig(name="gla_tiny", block="gla", dual_input=False, **{**TINY, **cfg})


@register_model
def arl_tiny(**cfg: Any) -> ModelConfig:
    """ARL-CNN of the tiny size, one 96 input: for tests."""
    return ModelConfig(name="arl_tiny", block="arl", dual_input=False, **{**TINY, **cfg})
