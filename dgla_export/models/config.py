"""Config records: everything a deployment needs to know next to the weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from dgla_export.errors import OptionError
from dgla_export.models.architecture import BLOCKS, Architecture, architecture

SPEC_VERSION = "dgla-spec/1"  # DGLA's; each architecture's is config.architecture.spec_version
ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Largest acceptable error of a runtime against the FP32 PyTorch reference.

    ``logits_rel`` bounds max |a - b| / max |reference logit| over the batch; ``probs_abs``
    bounds max |p_a - p_b|; ``max_top1_flips`` is the number of images allowed to change class,
    counting only images whose reference top-1 margin (top1 - top2 probability) is at least
    ``min_flip_margin``: below it the reference itself is undecided (the flips are still listed).
    """

    logits_rel: float
    probs_abs: float
    max_top1_flips: int = 0
    min_flip_margin: float = 0.0
    # Class activation maps (a graph exported with explain), each normalised to [0, 1]: the largest
    # difference allowed for the top-1 class, and the share of images whose hottest cell must agree,
    # counting only maps whose hottest cell leads the next by at least ``cam_hottest_margin`` (a tie
    # the reference itself barely breaks is no place the model points at; those are listed).
    cam_abs: float = 1e-3
    cam_hottest: float = 1.0
    cam_hottest_margin: float = 0.0


# Per precision: FP32 runtimes differ from eager PyTorch by summation order only; FP16 is
# judged on decisions (no flip) and probabilities (the 1e-2). INT8 moves every
# activation by up to half a quantization step: judged on decisions the reference is sure of
# (no flip where its margin is >= 0.05) and on probabilities within 0.05. It is also the
# accuracy target `dgla-export onnx --precision int8` searches for. BF16 keeps 8 significant bits
# (FP16 11): judged like INT8, on decisions the reference is sure of and probabilities within 0.05,
# above the largest measured on a CPU with native BF16 (0.030 torch autocast, bench-cpu-explain;
# 0.039 OpenVINO, the CPU-runtimes issue's run), which the former 0.03 bound failed for no fault.
# TF32 (a GPU's FP32 products on tensor cores) rounds their inputs to FP16's 11 significant bits
# and accumulates in FP32: held to FP16's bounds.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = {
    "fp32": Tolerance(logits_rel=1e-4, probs_abs=1e-5, cam_abs=1e-4),
    "tf32": Tolerance(logits_rel=5e-2, probs_abs=1e-2, cam_abs=5e-2),
    "fp16": Tolerance(logits_rel=5e-2, probs_abs=1e-2, cam_abs=5e-2),
    "bf16": Tolerance(logits_rel=1e-1, probs_abs=5e-2, min_flip_margin=5e-2, cam_abs=1e-1, cam_hottest_margin=5e-2),
    "int8": Tolerance(logits_rel=2e-1, probs_abs=5e-2, min_flip_margin=5e-2, cam_abs=1e-1, cam_hottest_margin=5e-2),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture, input contract and class names of one registered model."""

    name: str
    block: Literal["bottleneck", "gla", "arl"]  # a key of models.architecture.BLOCKS
    dual_input: bool
    num_classes: int = 7
    depths: tuple[int, int, int, int] = (3, 4, 6, 3)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64
    reduction: int = 4
    input_size: int = 224
    aux_input_size: int = 448
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = ISIC2018_CLASSES
    tolerances: Mapping[str, Tolerance] = dataclasses.field(default_factory=lambda: dict(DEFAULT_TOLERANCES))

    def __post_init__(self) -> None:
        problems = []
        if self.block not in BLOCKS:
            problems.append(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if len(self.depths) != 4 or len(self.widths) != 4:
            problems.append("depths and widths need four stages each")
        if self.input_size % 32:
            problems.append(f"input_size {self.input_size} must be a multiple of 32")
        if self.dual_input and (self.aux_input_size % self.input_size):
            problems.append(
                f"aux_input_size {self.aux_input_size} must be a multiple of "
                f"input_size {self.input_size} (the DBI fusion pools by their ratio)"
            )
        if len(self.class_names) != self.num_classes:
            if self.class_names == ISIC2018_CLASSES:
                object.__setattr__(self, "class_names", tuple(f"class_{i}" for i in range(self.num_classes)))
            else:
                problems.append(f"{len(self.class_names)} class names for num_classes={self.num_classes}")
        if problems:
            raise OptionError(f"invalid config for {self.name!r}: " + "; ".join(problems))

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("image_224", "image_448") if self.dual_input else ("image_224",)

    @property
    def input_sizes(self) -> dict[str, int]:
        """Side length of each input, in input order."""
        sizes = (self.input_size, self.aux_input_size)
        return dict(zip(self.input_names, sizes[: len(self.input_names)], strict=True))

    def input_shapes(self, batch: int | str = "B") -> dict[str, tuple[int | str, ...]]:
        return {name: (batch, 3, size, size) for name, size in self.input_sizes.items()}

    @property
    def architecture(self) -> Architecture:
        """The contract every stage reads (:mod:`dgla_export.models.architecture`)."""
        return architecture(self)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict` (JSON turns tuples into lists). A precision added since the
        record was written gets its default tolerance."""
        data = dict(record)
        data["tolerances"] = {**DEFAULT_TOLERANCES, **{k: Tolerance(**v) for k, v in data["tolerances"].items()}}
        for key in ("depths", "widths", "mean", "std", "class_names"):
            data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["tolerances"] = {k: dataclasses.asdict(v) for k, v in self.tolerances.items()}
        return record
