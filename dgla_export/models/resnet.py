"""The ResNet50 family of the paper's ablation table, built by one builder from a config.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so torchvision's
ImageNet ResNet50 state dict initialises every tensor the variants share with it.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn

from dgla_export.models.architecture import BLOCKS
from dgla_export.models.attention import GlobalLocalAttention, widen
from dgla_export.models.config import ModelConfig

__all__ = ["Bottleneck", "DualResNet", "GLABottleneck", "ResNet", "block_class", "build_network"]

EXPANSION = 4


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes))


class Bottleneck(nn.Module):
    """torchvision's ResNet50 bottleneck: the 3x3 ``conv2`` carries the stride."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, reduction: int = 4) -> None:
        super().__init__()
        del reduction  # the plain bottleneck has no attention
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * EXPANSION, stride)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        return self.bn3(self.conv3(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual_branch(x) + shortcut)


class GLABottleneck(Bottleneck):
    """Bottleneck whose 3x3 conv is replaced by GLA, run at the stage's output resolution.

    A strided block average-pools (2x2) after ``conv1`` so the main path and the strided
    shortcut meet at the same size (the article's code kept the input size and crashed).
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, reduction: int = 4) -> None:
        super().__init__(inplanes, planes, stride)
        del self.conv2
        self.pool = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
        self.gla = GlobalLocalAttention(planes, reduction)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu(self.bn1(self.conv1(x))))
        h = self.relu(self.bn2(self.gla(h)))
        return self.bn3(self.conv3(h))


def block_class(name: str) -> type[Bottleneck]:
    """The residual block a config names, as the architecture contract declares it."""
    module, _, attribute = BLOCKS[name].module.partition(":")
    return getattr(importlib.import_module(module), attribute)


class ResNet(nn.Module):
    """Single-input network: stem, four stages, global average pool, ``fc``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        block = block_class(config.block)
        stem = config.stem_width
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = stem
        for index, (planes, depth) in enumerate(zip(config.widths, config.depths, strict=True)):
            blocks = []
            for i in range(depth):
                stride = 2 if (i == 0 and index > 0) else 1
                blocks.append(block(inplanes, planes, stride, config.reduction))
                inplanes = planes * EXPANSION
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, config.num_classes)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        image = image.to(self.conv1.weight.dtype)
        return self.maxpool(self.relu(self.bn1(self.conv1(image))))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        # Pool and classify in FP32 whatever the body's precision (fc is kept FP32).
        return self.fc(widen(features).mean(dim=(2, 3)))

    def class_activation_maps(self, features: torch.Tensor) -> torch.Tensor:
        """(B, classes, h, w) maps of layer4's ``features``: ``relu(sum_k fc.weight[c, k] * features[k])``.

        The logits are ``fc(mean over positions of features)``, so the gradient of class c's logit
        with respect to layer4 is ``fc.weight[c] / (h * w)`` at every position, and Grad-CAM at
        layer4 equals this map up to a positive scale: a 1x1 convolution, in FP32 whatever the
        body's precision, on a tensor the forward pass computes anyway."""
        features = widen(features)
        return F.relu(F.conv2d(features, self.fc.weight.to(features.dtype)[:, :, None, None]))

    def features(self, image_224: torch.Tensor) -> torch.Tensor:
        """layer4's output, before pooling (what Grad-CAM looks at)."""
        features = self.stem(image_224)
        for stage in self.stages:
            features = stage(features)
        return features

    def forward(self, image_224: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image_224))


class DualResNet(ResNet):
    """Dual-branch input (DBI): both resolutions share every weight; the auxiliary branch is
    average-pooled to the main branch's size and fused after stages 1 to 3."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.fuse = nn.ModuleList(
            nn.Conv2d(2 * planes * EXPANSION, planes * EXPANSION, 1, bias=False) for planes in config.widths[:-1]
        )

    def features(self, image_224: torch.Tensor, image_448: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        main = self.stem(image_224)
        aux = self.stem(image_448)
        for stage, fuse in zip(self.stages[:-1], self.fuse, strict=True):
            main = stage(main)
            aux = stage(aux)
            ratio = aux.shape[-1] // main.shape[-1]
            main = main + fuse(torch.cat([main, F.avg_pool2d(aux, ratio)], dim=1))
        return self.layer4(main)

    def forward(self, image_224: torch.Tensor, image_448: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.head(self.features(image_224, image_448))


def build_network(config: ModelConfig) -> ResNet:
    """Instantiate the network a config describes (random init, eval mode)."""
    network = DualResNet(config) if config.dual_input else ResNet(config)
    return network.eval()
