"""The architecture contract: what every stage needs to know of a network, declared in one place.

Optimum resolves one export config per model type; here :func:`architecture` resolves one
:class:`Architecture` per config. Its residual block (:data:`BLOCKS`) declares the parts that differ
between the family's members (FP32 islands for FP16, INT8 units, spec version, the checkpoint keys
beyond torchvision's ResNet50); the config declares the inputs. Export, validation, INT8,
TensorRT, the Triton repository, the client and the overlay read the contract, never the block
or the number of inputs. No torch here: a Triton client reads it too.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgla_export.models.config import ModelConfig

__all__ = ["BLOCKS", "Architecture", "BlockSpec", "InputSpec", "architecture"]

# What every member shares: Grad-CAM at the last stage, and the FP32 classifier of the head.
CAM_LAYER = "layer4"
OUTPUTS = ("logits", "probs")
COMMON_FP32 = ("fc.",)
# INT8 units: (pattern on a Conv/Gemm weight's state-dict name, unit name; \1 is the first group).
STEM_UNIT = (r"^(?:conv1|bn1)\.", "stem")
FC_UNIT = (r"^fc\.", "fc")
BLOCK_UNIT = (r"^(layer\d+\.\d+)\.", r"\1.conv")
FUSION_UNIT = (r"^fuse\.", "fusion")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One kind of residual block and what it adds to the torchvision bottleneck."""

    name: str
    module: str  # "package.module:Class", imported when a network is built
    spec_version: str  # the spec page that defines it (docs/architectures.md)
    fp32_parameters: tuple[str, ...] = ()  # name prefixes or suffixes kept FP32 in an FP16 graph
    units: tuple[tuple[str, str], ...] = ()  # INT8 units of the block's own layers, tried first
    extra_keys: tuple[str, ...] = ()  # its state-dict keys beyond torchvision's, as patterns


BLOCKS: dict[str, BlockSpec] = {
    spec.name: spec
    for spec in (
        BlockSpec("bottleneck", "dgla_export.models.resnet:Bottleneck", "dgla-spec/1"),
        BlockSpec(
            "gla",
            "dgla_export.models.resnet:GLABottleneck",
            "dgla-spec/1",
            # the attention scalars multiply FP32 attention outputs; query and key form the energies
            fp32_parameters=(".alpha", ".beta", ".gamma", ".query.weight", ".key.weight"),
            units=((r"^(layer\d+\.\d+)\.gla\.", r"\1.attention"),),
            extra_keys=(
                "layerN.M.gla.{ha,va}.{query,key,value}.weight",
                "layerN.M.gla.{ha.alpha,va.beta,gamma}",
                "layerN.M.gla.la.convs.{0,3,6}.weight (+ BN 1,4,7)",
            ),
        ),
        BlockSpec(
            "arl",
            "dgla_export.models.arl:ARLBottleneck",
            "arl-spec/1",
            fp32_parameters=(".alpha",),  # scales an FP32 spatial softmax
            extra_keys=("layerN.M.alpha",),
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    size: int  # side of the square the image is resized to


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything a stage needs to know of one configured network."""

    model: str
    block: BlockSpec
    inputs: tuple[InputSpec, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    outputs: tuple[str, ...] = OUTPUTS
    cam_layer: str = CAM_LAYER  # the stage whose output Grad-CAM explains (stride 32)
    cam_stride: int = 32

    @property
    def spec_version(self) -> str:
        return self.block.spec_version

    @property
    def fp32_parameters(self) -> tuple[str, ...]:
        return COMMON_FP32 + self.block.fp32_parameters

    def keeps_fp32(self, parameter: str) -> bool:
        """Whether a parameter stays FP32 in an FP16 graph."""
        return any(parameter.startswith(p) or parameter.endswith(p) for p in self.fp32_parameters)

    @property
    def units(self) -> tuple[tuple[str, str], ...]:
        fusion = (FUSION_UNIT,) if len(self.inputs) > 1 else ()
        return (*self.block.units, BLOCK_UNIT, *fusion, FC_UNIT, STEM_UNIT)

    def unit_of(self, parameter: str) -> str:
        """The INT8 unit a Conv/Gemm weight belongs to (a state-dict name, without the export
        wrapper's ``model.`` prefix): the stem, a block's convolutions or attention, the fusion, fc."""
        for pattern, unit in self.units:
            match = re.match(pattern, parameter)
            if match:
                return match.expand(unit)
        return "stem"  # what precedes the stages

    @property
    def checkpoint_layout(self) -> str:
        extra = list(self.block.extra_keys) + (["fuse.{0,1,2}.weight"] if len(self.inputs) > 1 else [])
        base = "torchvision ResNet50 names (conv1, bn1, layerN.M.convK/bnK/downsample, fc)"
        return base + (f" plus {', '.join(extra)}" if extra else "")

    @property
    def input_sizes(self) -> dict[str, int]:
        return {spec.name: spec.size for spec in self.inputs}

    @property
    def display_size(self) -> int:
        """The finest input side: what the model saw at its sharpest (heatmaps are drawn at it)."""
        return max(spec.size for spec in self.inputs)

    def cam_shape(self) -> tuple[int, int]:
        """(h, w) of the maps: the main input's side over the network's stride."""
        side = self.inputs[0].size // self.cam_stride
        return side, side


def architecture(config: ModelConfig) -> Architecture:
    """The contract of a configured network."""
    return Architecture(
        model=config.name,
        block=BLOCKS[config.block],
        inputs=tuple(InputSpec(name, size) for name, size in config.input_sizes.items()),
        mean=config.mean,
        std=config.std,
        class_names=config.class_names,
    )
