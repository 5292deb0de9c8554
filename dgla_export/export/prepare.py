"""Make a model export-ready: BatchNorm folded, optional FP16 with FP32 islands, named outputs."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dgla_export.models.resnet import ResNet

__all__ = ["ChannelAffine", "ExportModule", "fold_batchnorm", "to_fp16"]


class ChannelAffine(nn.Module):
    """A frozen eval-mode BatchNorm as ``x * scale + shift`` (for a BN that follows no conv)."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias.detach() - bn.running_mean * scale
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.register_buffer("shift", shift.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def _conv_partner(parent: nn.Module, name: str) -> str | None:
    """The conv whose output feeds BN ``name``: ``convK`` for ``bnK``, or the previous entry of
    a Sequential (``downsample.0`` -> ``.1``, ``la.convs.0`` -> ``.1``)."""
    if isinstance(parent, nn.Sequential):
        previous = str(int(name) - 1)
        return previous if int(name) > 0 and isinstance(parent[int(previous)], nn.Conv2d) else None
    candidate = name.replace("bn", "conv", 1)
    return candidate if name.startswith("bn") and isinstance(getattr(parent, candidate, None), nn.Conv2d) else None


def fold_batchnorm(model: ResNet) -> ResNet:
    """Copy of ``model`` with every BN folded into its conv (or turned into a channel affine).

    The graph then has no BatchNormalization node, and TensorRT fuses the rest.
    """
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.BatchNorm2d):
                continue
            partner = _conv_partner(parent, name)
            if partner is None:
                replacement: nn.Module = ChannelAffine(child)
            else:
                conv = parent.get_submodule(partner)
                parent.register_module(partner, fuse_conv_bn_eval(conv, child))
                replacement = nn.Identity()
            parent.register_module(name, replacement)
    return model


def to_fp16(model: ResNet) -> ResNet:
    """Copy of ``model`` in FP16 except the architecture's FP32 parameters (the classifier, whose
    head pools in FP32, and each block's attention scalars and energy projections); the attention
    code widens its energies, softmaxes and reductions to FP32 itself, so the graph carries Casts."""
    model = copy.deepcopy(model)
    # kept aside before .half(): a round trip through FP16 would round the islands' weights to FP16
    # precision and turn any beyond 65504 into Inf (found by `dgla-export debug`)
    islands = {
        name: param.data.clone()
        for name, param in model.named_parameters()
        if model.config.architecture.keeps_fp32(name)
    }
    model.half()
    for name, param in model.named_parameters():
        if name in islands:
            param.data = islands[name]
    return model


class ExportModule(nn.Module):
    """The graph's contract: the model's inputs -> ``logits`` and ``probs`` (softmax), FP32; with
    ``explain``, also ``cam``: every class's activation map of the architecture's ``cam_layer``
    (Grad-CAM up to a positive scale), and ``cam_top1``: the map of the graph's own top-1 class."""

    def __init__(self, model: ResNet, *, explain: bool = False) -> None:
        super().__init__()
        self.model, self.explain = model, explain
        if explain:
            self.register_buffer("classes", torch.arange(model.config.num_classes)[:, None, None], persistent=False)

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.features(*images)
        logits = self.model.head(features).float()
        outputs = (logits, logits.softmax(dim=-1))
        if not self.explain:
            return outputs
        cam = self.model.class_activation_maps(features)
        # A one-hot mask, not a gather: an exact copy of one map (the others times 0, maps >= 0)
        # without the Expand and Gather nodes the graph contract forbids.
        chosen = (logits.argmax(dim=-1).reshape(-1, 1, 1, 1) == self.classes).to(cam.dtype)  # (B, classes, 1, 1)
        return (*outputs, cam, (cam * chosen).sum(dim=1))
