"""Cost figures: parameters and multiply-accumulates (MACs) per stage, counted by PyTorch.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products and
linear layers; element-wise ops, softmax and pooling are not counted), halved: 1 MAC = 2 FLOPs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from dgla_export.models.resnet import ResNet

__all__ = ["CostReport", "StageCost", "measure_cost"]


@dataclasses.dataclass(frozen=True)
class StageCost:
    name: str
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class CostReport:
    """Parameters and MACs for one forward pass of ``batch`` image pairs."""

    stages: tuple[StageCost, ...]
    batch: int = 1

    @property
    def params(self) -> int:
        return sum(s.params for s in self.stages)

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.stages)

    def to_dict(self) -> dict[str, object]:
        return {
            "batch": self.batch,
            "macs_note": "multiply-accumulates of conv/matmul/linear; 1 MAC = 2 FLOPs",
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "total": {"params": self.params, "macs": self.macs, "flops": 2 * self.macs},
        }


def _stage_of(name: str) -> str:
    top = name.split(".")[0]
    if top.startswith("layer") or top in ("fuse", "fc"):
        return top
    return "stem"


def measure_cost(model: ResNet, batch: int = 1) -> CostReport:
    """Count parameters and MACs per stage with one forward pass on zeros."""
    params: dict[str, int] = {}
    for name, p in model.named_parameters():
        params[_stage_of(name)] = params.get(_stage_of(name), 0) + p.numel()
    inputs = [torch.zeros(shape, dtype=torch.float32) for shape in model.config.input_shapes(batch).values()]
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        model(*inputs)
    # Per stage, sum the shallowest modules seen ("Global.layer1", or "Global.fuse.0" and
    # "Global.fuse.1" where the container itself is never called), so nothing counts twice.
    counts = {
        tuple(name.split(".")[1:]): int(sum(per_op.values()))
        for name, per_op in counter.get_flop_counts().items()
        if "." in name
    }
    flops: dict[str, int] = {}
    for stage in {_stage_of(path[0]) for path in counts}:
        paths = [p for p in counts if _stage_of(p[0]) == stage]
        depth = min(len(p) for p in paths)
        flops[stage] = sum(counts[p] for p in paths if len(p) == depth)
    order = ["stem", "layer1", "layer2", "layer3", "layer4", "fuse", "fc"]
    stages = tuple(
        StageCost(name, params.get(name, 0), flops.get(name, 0) // 2)
        for name in order
        if name in params or name in flops
    )
    return CostReport(stages, batch)
