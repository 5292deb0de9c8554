"""ARL-CNN's attention residual learning block (Zhang et al., IEEE TMI 2019), as docs/architectures.md defines it.

The block's own residual output, through a softmax over its spatial positions per channel, weighs
the shortcut: ``y = relu(F(x) + s + alpha * softmax_hw(F(x)) * s)`` with ``s`` the shortcut and
``alpha`` one learnable scalar per block, initialised at 0 (the block starts as torchvision's).
No other parameter is added, so torchvision's ResNet50 loads into every other tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from dgla_export.models.attention import widen
from dgla_export.models.resnet import Bottleneck

__all__ = ["ARLBottleneck", "spatial_softmax"]


def spatial_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the H*W positions of each channel, in FP32 (a softmax over 3,136 positions
    underflows in FP16)."""
    channels, height, width = x.shape[1:]
    # -1 keeps the batch symbolic without a computed shape in the exported graph.
    return widen(x).reshape(-1, channels, height * width).softmax(dim=-1).reshape(-1, channels, height, width)


class ARLBottleneck(Bottleneck):
    """torchvision's bottleneck with attention residual learning."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, reduction: int = 4) -> None:
        super().__init__(inplanes, planes, stride, reduction)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = widen(x if self.downsample is None else self.downsample(x))
        residual = self.residual_branch(x)
        out = widen(residual) + shortcut + self.alpha * spatial_softmax(residual) * shortcut
        return self.relu(out.to(x.dtype))
